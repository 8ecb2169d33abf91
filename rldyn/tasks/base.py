"""The verifiable-task interface, token-role ids and the held-out split.

A task generates problems, writes imperfect reference responses (traces) for
pretraining, verifies untrusted responses, and tags every response token with
its ground-truth role (docs/roles.md). A model sees
`[bos] + encode(prompt) + encode(response) + [eos]`; prompts end in a separator
so the two encodings concatenate exactly.

Held-out split: every problem has a stable uid (a hash of its canonical
content). A problem is held out iff a second hash of its uid falls in bucket 0
of `HELDOUT_BUCKETS`; `Task.sample_problem` draws training problems from the
other buckets and eval sets (`evalsets.py`) from bucket 0, so training and
evaluation problems are disjoint whatever the seeds.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
import dataclasses
import hashlib
from typing import Any, ClassVar

import numpy as np

from rldyn.tasks import tokenizer as tokenizer_lib

from rldyn.roles.ids import EXECUTION, OTHER, PLANNING, ROLE_NAMES  # noqa: F401  (the canonical role ids)
HELDOUT_BUCKETS = 16  # 1/16 of each task's problem space is held out.
MAX_REJECTIONS = 10_000  # Bound on rejection-sampling loops.


@dataclasses.dataclass(frozen=True)
class Problem:
  """One task instance. All fields are plain strings (serialisable)."""
  uid: str  # "<task>/<16 hex digits>", a hash of the canonical problem.
  prompt: str  # Canonical synthetic text; the response follows it.
  answer: str  # Canonical reference answer (an expression, a number).
  data: str  # JSON with everything the verifier needs.


def make_uid(task_name: str, canonical: str) -> str:
  digest = hashlib.sha256(canonical.encode()).hexdigest()[:16]
  return f"{task_name}/{digest}"


def is_heldout(problem: Problem) -> bool:
  """Whether `problem` belongs to the held-out (evaluation) split."""
  digest = hashlib.sha256(f"heldout:{problem.uid}".encode()).hexdigest()
  return int(digest[:8], 16) % HELDOUT_BUCKETS == 0


class Task(abc.ABC):
  """A verifiable task with ground-truth token roles.

  Subclasses set `name` and `config_cls` (a frozen dataclass that validates
  itself) and implement the abstract methods.
  """

  name: ClassVar[str]
  config_cls: ClassVar[type[Any]]
  # The config fields that shape problems (the rest shape traces only); eval
  # sets are keyed by these alone, so studies varying trace knobs share them.
  problem_keys: ClassVar[tuple[str, ...]]
  # Whether `token_roles` is ground truth (synthetic traces) or only a text
  # tagger's guess (real data): the `structural` tagger needs ground truth.
  has_role_truth: ClassVar[bool] = True
  # Words whose token judges a move just made (countdown: `goal`, `no`); pretraining may weight their
  # loss (pretrain.decision_weight).
  decision_words: ClassVar[tuple[str, ...]] = ()
  # The word after which a response states its final answer (then the end token), or None when answers
  # are free-form text: VeriFree cuts responses there (rl/verifree.py).
  answer_marker: ClassVar[str | None] = None

  def __init__(self, config: Any = None,
               tokenizer: tokenizer_lib.Tokenizer = tokenizer_lib.TOKENIZER):
    self.config = self.config_cls() if config is None else config
    if not isinstance(self.config, self.config_cls):
      raise TypeError(f"{self.name} needs a {self.config_cls.__name__}, got "
                      f"{type(self.config).__name__}")
    self.tokenizer = tokenizer

  def sample_problem(self, rng: np.random.Generator,
                     heldout: bool = False) -> Problem:
    """A random problem from the training split (or the held-out split)."""
    for _ in range(MAX_REJECTIONS):
      problem = self._generate_problem(rng)
      if is_heldout(problem) == heldout:
        return problem
    raise RuntimeError(f"{self.name}: no problem in the requested split after "
                       f"{MAX_REJECTIONS} draws; widen the config")

  @abc.abstractmethod
  def _generate_problem(self, rng: np.random.Generator) -> Problem:
    """A random problem from either split."""

  @abc.abstractmethod
  def reference_trace(self, problem: Problem,
                      rng: np.random.Generator) -> str:
    """An imperfect reference response (no eos), per the config."""

  @abc.abstractmethod
  def extract_answer(self, response: str) -> str | None:
    """The canonical final answer if the response is well-formed, else None."""

  @abc.abstractmethod
  def verify(self, problem: Problem, response: str) -> bool:
    """Whether `response` solves `problem`; parses, never evaluates, text."""

  @abc.abstractmethod
  def token_roles(self, ids: Sequence[int]) -> np.ndarray:
    """int8 role (OTHER/PLANNING/EXECUTION) of each token of a response.

    Works on any id sequence (malformed model output included); the result
    has the same length as `ids`.
    """

  def prompt_ids(self, problem: Problem) -> list[int]:
    """The token ids a model sees before its response: [bos] + encode(prompt)."""
    return [self.tokenizer.bos_id] + self.tokenizer.encode(problem.prompt)

  def truncate_responses(self, tokens_BN: np.ndarray,
                         mask_BN: np.ndarray) -> np.ndarray:
    """mask_BN of sampled responses cut where the task stops them.

    The sampler stops rows at stop tokens; a task with text stop strings
    clears the mask after the token that completes the first one (that token
    kept). Default: the mask unchanged.
    """
    del tokens_BN
    return mask_BN

  def fixed_heldout(self) -> list[Problem] | None:
    """The held-out problems when they come from a file (None: generated)."""
    return None

  def problem_config(self) -> dict[str, Any]:
    """The config fields in `problem_keys`, as a dict."""
    return {k: getattr(self.config, k) for k in self.problem_keys}

  def problem_to_dict(self, problem: Problem) -> dict[str, str]:
    return dataclasses.asdict(problem)

  def problem_from_dict(self, d: Mapping[str, Any]) -> Problem:
    fields = [f.name for f in dataclasses.fields(Problem)]
    if sorted(d) != sorted(fields):
      raise ValueError(f"a Problem dict has exactly the keys {fields}, "
                       f"got {sorted(d)}")
    return Problem(**{k: str(d[k]) for k in fields})


def normalize_mix(mix: Any, valid: Sequence[str],
                  what: str) -> tuple[tuple[str, float], ...]:
  """Validates a strategy mix (mapping or pairs) into ((name, weight), ...)."""
  pairs = tuple(mix.items()) if hasattr(mix, "items") else tuple(mix)
  out = []
  for pair in pairs:
    name, weight = pair
    if name not in valid:
      raise ValueError(f"unknown {what} {name!r}; valid: {sorted(valid)}")
    if not weight >= 0:
      raise ValueError(f"{what} {name!r} has negative weight {weight}")
    out.append((str(name), float(weight)))
  if not out or sum(w for _, w in out) <= 0:
    raise ValueError(f"{what} mix needs a positive total weight, got {mix}")
  return tuple(out)


def choose(rng: np.random.Generator,
           mix: tuple[tuple[str, float], ...]) -> str:
  """Draws a name from a normalised (name, weight) mix."""
  weights = np.array([w for _, w in mix])
  return mix[rng.choice(len(mix), p=weights / weights.sum())][0]


def render_roles(tokenizer: tokenizer_lib.Tokenizer, ids: Sequence[int],
                 roles: Sequence[int], width: int = 76) -> str:
  """Decoded text with each token's role letter (O/P/E) under its first char.

  Lines wrap before `width` characters; each text line is followed by its
  role line. Special tokens are skipped.
  """
  lines, text, marks = [], "", ""
  prev_digit = False
  for token_id, role in zip(ids, roles):
    token = tokenizer.id_to_token(int(token_id))
    if token in tokenizer_lib.SPECIALS:
      continue
    digit = tokenizer.is_digit(int(token_id))
    sep = "" if (digit and prev_digit) or not text else " "
    if len(text) + len(sep) + len(token) > width and not (digit and prev_digit):
      lines += [text, marks.rstrip()]
      text, marks, sep = "", "", ""
    text += sep + token
    marks += " " * len(sep) + "OPE"[role].ljust(len(token))
    prev_digit = digit
  if text:
    lines += [text, marks.rstrip()]
  return "\n".join(lines)

