"""GSM8K/MATH-style text problems for a Hugging Face checkpoint: the `textmath` task.

    task = make_task("textmath", train_path="gsm8k/train.jsonl", test_path="gsm8k/test.jsonl",
                     tokenizer_dir="/ckpt/Qwen2.5-0.5B-Instruct", prompt="chat")
    ids = task.prompt_ids(problem)        # the checkpoint's chat template (or a plain prompt), rendered
    task.verify(problem, response_text)   # verify_math on the response cut at the first stop string

Problems come from local files (`mathdata.load_problems`: GSM8K/MATH JSONL, verl parquet). The
held-out split is the `test_path` file's problems; without one, the uid-hash bucket of the training
file (`base.is_heldout`, 1/16). Training problems never include a held-out one (a training row whose
question is in the test file is dropped). `sample_problem(rng)` draws training problems uniformly
with replacement from `rng`, so the RL loop's stream, seeded by (seed, step), replays exactly.

Prompts: `prompt="chat"` renders the problem's user message with the checkpoint's chat template (an
instruct model); `prompt="plain"` gives `Question: ...\\nAnswer:` with the tokenizer's BOS handling (a
base model). The policy tokenizer is the checkpoint's (`tokenizer_dir`; the launcher fills it from
the top-level `checkpoint_dir`), its EOS set stops sampling, and `stop_strings` (e.g. `</answer>`,
`\\n\\nQuestion:`) are matched on decoded text: `truncate_responses` cuts each sampled response after
the token that completes the first stop string, and `verify` and `extract_answer` read the text up to
the end of the first stop string, so scoring agrees with the cut.

Token roles: real text has no ground-truth roles (`has_role_truth = False`); use the text taggers
(`roles.tagger = lexicon` with the English strategic-gram lexicon, or `spans`). `token_roles` gives
the default lexicon's tagging, a stand-in for code that asks every task for roles.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import functools
import json
import os
from typing import ClassVar, TYPE_CHECKING

import numpy as np

from rldyn.tasks import base
from rldyn.tasks import mathdata

if TYPE_CHECKING:
  from rldyn.model import hf_tokenizer

PROMPT_MODES = ("chat", "plain")


@dataclasses.dataclass(frozen=True)
class TextMathConfig:
  """Where the problems and the tokenizer come from, and how prompts and responses are cut."""
  train_path: str = ""  # training problems: a .jsonl (GSM8K/MATH layouts) or verl .parquet file
  test_path: str = ""  # held-out problems from this file ("" = the uid-hash 1/16 of train_path)
  prompt: str = "chat"  # chat: the checkpoint's chat template | plain: "Question: ...\nAnswer:"
  instruction: str = "auto"  # appended to GSM8K/MATH questions: auto = verl's for the layout, "" = none
  stop_strings: tuple = ()  # text that ends a response (kept), besides the tokenizer's EOS set
  tokenizer_dir: str = ""  # the checkpoint directory with tokenizer.json (the launcher sets it)

  def __post_init__(self):
    object.__setattr__(self, "stop_strings", tuple(str(s) for s in self.stop_strings))
    if self.prompt not in PROMPT_MODES:
      raise ValueError(f"textmath prompt={self.prompt!r}; valid: {', '.join(PROMPT_MODES)}")
    if not self.train_path:
      raise ValueError("textmath needs task.options.train_path (a GSM8K/MATH .jsonl or verl .parquet)")
    for key in ("train_path", "test_path"):
      path = getattr(self, key)
      if path and not os.path.isfile(path):
        raise ValueError(f"textmath {key}={path!r} is not a file")
    if not self.tokenizer_dir:
      raise ValueError("textmath needs a tokenizer: set checkpoint_dir (the launcher passes its "
                       "tokenizer to the task) or task.options.tokenizer_dir")
    if any(not s for s in self.stop_strings):
      raise ValueError("textmath stop_strings must not contain an empty string")


@functools.lru_cache(maxsize=8)
def _splits(train_path: str, test_path: str, instruction: str
            ) -> tuple[tuple[base.Problem, ...], tuple[base.Problem, ...]]:
  train, heldout = mathdata.load_splits(
      train_path, test_path or None, instruction=None if instruction == "auto" else instruction,
      skip_invalid=True)
  return tuple(train), tuple(heldout)


@functools.lru_cache(maxsize=4)
def _tokenizer(directory: str) -> hf_tokenizer.HFTokenizer:
  from rldyn.model import hf_tokenizer  # pylint: disable=g-import-not-at-top,redefined-outer-name
  return hf_tokenizer.HFTokenizer.from_directory(directory)


def cut_at_stop(text: str, stop_strings: Sequence[str]) -> str:
  """`text` up to the end of its first stop string (the whole text if it has none)."""
  ends = [i + len(s) for s in stop_strings if (i := text.find(s)) >= 0]
  return text[:min(ends)] if ends else text


class TextMathTask(base.Task):
  """GSM8K/MATH problems from files, prompted and tokenized as the checkpoint expects."""

  name = "textmath"
  config_cls = TextMathConfig
  problem_keys = ("train_path", "test_path", "instruction")
  has_role_truth: ClassVar[bool] = False

  def __init__(self, config: TextMathConfig | None = None):
    config = TextMathConfig() if config is None else config  # (raises: train_path is required)
    try:
      tok = _tokenizer(os.path.abspath(config.tokenizer_dir))
    except FileNotFoundError as e:
      raise ValueError(f"textmath tokenizer_dir: {e}") from None
    super().__init__(config, tok)
    if config.prompt == "chat" and tok.chat_template is None:
      raise ValueError(f"{config.tokenizer_dir} has no chat template (a base model?): set "
                       "task.options.prompt=plain")
    train, heldout = _splits(config.train_path, config.test_path, config.instruction)
    if not train or not heldout:
      raise ValueError(f"textmath: {len(train)} training and {len(heldout)} held-out problems from "
                       f"{config.train_path!r} / {config.test_path!r}; both splits need problems")
    self.train, self.heldout = list(train), list(heldout)
    self._prompt_ids: dict[str, list[int]] = {}
    self._lexicon = None

  # ---- problems ----

  def sample_problem(self, rng: np.random.Generator, heldout: bool = False) -> base.Problem:
    pool = self.heldout if heldout else self.train
    return pool[int(rng.integers(len(pool)))]

  def _generate_problem(self, rng: np.random.Generator) -> base.Problem:
    pool = self.train + self.heldout
    return pool[int(rng.integers(len(pool)))]

  def fixed_heldout(self) -> list[base.Problem]:
    return list(self.heldout)

  def prompt_ids(self, problem: base.Problem) -> list[int]:
    ids = self._prompt_ids.get(problem.uid)
    if ids is None:
      if self.config.prompt == "chat":
        ids = self.tokenizer.prompt_ids(mathdata.chat_messages(problem), chat=True)
      else:
        ids = self.tokenizer.prompt_ids(problem.prompt, chat=False)
      self._prompt_ids[problem.uid] = ids
    return list(ids)

  def reference_trace(self, problem: base.Problem, rng: np.random.Generator) -> str:
    """The file's worked solution when it has one, else a one-line boxed answer."""
    del rng
    solution = json.loads(problem.data).get("solution")
    return solution if solution else f"The answer is $\\boxed{{{problem.answer}}}$."

  # ---- responses ----

  def truncate_responses(self, tokens_BN: np.ndarray, mask_BN: np.ndarray) -> np.ndarray:
    if not self.config.stop_strings:
      return np.asarray(mask_BN, bool)
    from rldyn.model import hf_tokenizer  # pylint: disable=g-import-not-at-top,redefined-outer-name
    mask, _, _ = hf_tokenizer.apply_stops(self.tokenizer, tokens_BN, mask_BN, self.config.stop_strings)
    return mask

  def extract_answer(self, response: str) -> str | None:
    return mathdata.extract_answer(cut_at_stop(response, self.config.stop_strings))

  def verify(self, problem: base.Problem, response: str) -> bool:
    return mathdata.verify(problem, cut_at_stop(response, self.config.stop_strings))

  def token_roles(self, ids: Sequence[int]) -> np.ndarray:
    """The default lexicon's tagging (no ground truth exists for real text; see the module doc)."""
    from rldyn.roles import lexicon as lexicon_lib  # pylint: disable=g-import-not-at-top
    from rldyn.roles import taggers  # pylint: disable=g-import-not-at-top
    if self._lexicon is None:
      self._lexicon = taggers.Matcher(lexicon_lib.load_lexicon(lexicon_lib.default_lexicon_name(self)))
    return taggers.lexicon_roles(list(ids), self._lexicon, self.tokenizer.tokenizer)
