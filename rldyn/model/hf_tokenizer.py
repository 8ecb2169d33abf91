"""A Hugging Face checkpoint's tokenizer as the policy tokenizer: tokenizer.json, specials, EOS, chat.

    tok = hf.load_tokenizer("/ckpt/Qwen2.5-0.5B-Instruct")
    ids = tok.prompt_ids("What is 7 * 6?", chat=True)    # the checkpoint's chat template, rendered
    ids = tok.prompt_ids("Question: 7 * 6?\nAnswer:", chat=False)   # base models: plain text (+ BOS)
    keep = tok.stop_cut(generated_ids, ("</answer>", "\n\nQuestion:"))  # tokens to keep, or None

Sources, as transformers reads them: `tokenizer.json` (the `tokenizers` library does the encoding);
special tokens from `tokenizer_config.json` (or `special_tokens_map.json`); the EOS set is the
`eos_token` plus every `eos_token_id` of `generation_config.json` and `config.json` (Llama 3 and
Qwen instruct models end a turn with a token other than `eos_token`); the chat template from
`chat_template.jinja`, `chat_template.json` or `tokenizer_config.json`, rendered with jinja2 in a
sandbox (templates ship with checkpoints: they are data, not trusted code).

Stop strings are matched on decoded text, not token ids: the same string can be tokenized many ways
(`"</answer>"` after a space, or merged with the next newline), so a token-sequence match misses some.
`stop_cut` returns the shortest prefix of the generated ids whose decoded text contains a stop string
(the stop string kept, as the sampler keeps a stop token), or that ends with an EOS token.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["HFTokenizer", "apply_stops"]

_ROLES = ("bos", "eos", "pad", "unk")


def _read_json(path: str) -> dict:
  if not os.path.exists(path):
    return {}
  with open(path) as fh:
    return json.load(fh)


def _content(token: Any) -> str | None:
  """A special token as tokenizer_config.json stores it: a string or an AddedToken dict."""
  if isinstance(token, Mapping):
    return token.get("content")
  return token


def _ids(value: Any) -> list[int]:
  if value is None:
    return []
  return [int(v) for v in (value if isinstance(value, (list, tuple)) else [value])]


def _chat_template(directory: str, tok_cfg: Mapping) -> str | None:
  path = os.path.join(directory, "chat_template.jinja")
  if os.path.exists(path):
    with open(path) as fh:
      return fh.read()
  template = _read_json(os.path.join(directory, "chat_template.json")).get("chat_template")
  template = template or tok_cfg.get("chat_template")
  if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}, ...]
    named = {t["name"]: t["template"] for t in template}
    template = named.get("default")
  return template


def _compile(template: str):
  """The template in a jinja2 sandbox with the helpers transformers gives chat templates."""
  import jinja2  # pylint: disable=g-import-not-at-top
  from jinja2 import ext, nodes  # pylint: disable=g-import-not-at-top
  from jinja2.sandbox import ImmutableSandboxedEnvironment  # pylint: disable=g-import-not-at-top

  class Generation(ext.Extension):
    """`{% generation %}...{% endgeneration %}` (marks assistant text for masks): renders its body."""
    tags = {"generation"}

    def parse(self, parser):
      lineno = next(parser.stream).lineno
      body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
      return nodes.Scope(body, lineno=lineno)

  def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)

  def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)

  env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                      extensions=[Generation, ext.loopcontrols])
  env.filters["tojson"] = tojson
  env.globals["raise_exception"] = raise_exception
  env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
  return env.from_string(template)


class HFTokenizer:
  """A `tokenizers.Tokenizer` with the checkpoint's special tokens, EOS set and chat template.

  The attribute names match the synthetic task tokenizer's (`vocab_size`, `pad_id`, `bos_id`,
  `eos_id`, `encode`, `decode`), so either can be the policy tokenizer.
  """

  def __init__(self, tokenizer: Any, *, special_tokens: Mapping[str, str | None] | None = None,
               extra_eos_ids: Iterable[int] = (), chat_template: str | None = None,
               add_bos_token: bool | None = None, model_vocab_size: int | None = None):
    self.tokenizer = tokenizer
    size = self.tokenizer_size
    if model_vocab_size is not None and model_vocab_size < size:
      raise ValueError(f"the model's vocabulary (config.json vocab_size={model_vocab_size}) is smaller "
                       f"than the tokenizer's ({size} ids in tokenizer.json): they do not belong together")
    self._model_vocab_size = model_vocab_size
    self._vocab = None
    special_tokens = dict(special_tokens or {})
    bad = sorted(set(special_tokens) - set(_ROLES))
    if bad:
      raise ValueError(f"special_tokens roles {bad}; valid: {', '.join(_ROLES)}")
    self.special_tokens = {r: special_tokens.get(r) for r in _ROLES}
    self._special_ids = {}
    for role, token in self.special_tokens.items():
      if token is not None:
        i = tokenizer.token_to_id(token)
        if i is None:
          raise ValueError(f"{role}_token {token!r} is not in the tokenizer's vocabulary")
        self._special_ids[role] = i
    eos = ([self._special_ids["eos"]] if "eos" in self._special_ids else []) + list(extra_eos_ids)
    if not eos:
      raise ValueError("the tokenizer has no EOS token: set eos_token in tokenizer_config.json or "
                       "eos_token_id in generation_config.json")
    if any(not 0 <= i < size for i in eos):
      raise ValueError(f"EOS ids {eos} outside the vocabulary [0, {size})")
    self.eos_ids = tuple(dict.fromkeys(int(i) for i in eos))  # in order, deduplicated
    self.chat_template = chat_template
    self.add_bos_token = add_bos_token
    self._template = None

  @classmethod
  def from_directory(cls, directory: str) -> "HFTokenizer":
    import tokenizers  # pylint: disable=g-import-not-at-top
    path = os.path.join(directory, "tokenizer.json")
    if not os.path.exists(path):
      raise FileNotFoundError(f"{directory}: no tokenizer.json (sentencepiece-only tokenizer.model "
                              "checkpoints need a tokenizer.json; transformers' fast tokenizer "
                              "save_pretrained writes one)")
    tok_cfg = _read_json(os.path.join(directory, "tokenizer_config.json"))
    specials_map = _read_json(os.path.join(directory, "special_tokens_map.json"))
    specials = {r: _content(tok_cfg.get(f"{r}_token", specials_map.get(f"{r}_token"))) for r in _ROLES}
    extra = (_ids(_read_json(os.path.join(directory, "generation_config.json")).get("eos_token_id"))
             + _ids(_read_json(os.path.join(directory, "config.json")).get("eos_token_id")))
    model_vocab = _read_json(os.path.join(directory, "config.json")).get("vocab_size")
    return cls(tokenizers.Tokenizer.from_file(path), special_tokens=specials, extra_eos_ids=extra,
               chat_template=_chat_template(directory, tok_cfg),
               add_bos_token=tok_cfg.get("add_bos_token"),
               model_vocab_size=None if model_vocab is None else int(model_vocab))

  # ---- vocabulary ----

  @property
  def tokenizer_size(self) -> int:
    """Ids the tokenizer can produce."""
    return self.tokenizer.get_vocab_size(with_added_tokens=True)

  @property
  def vocab_size(self) -> int:
    """The policy's vocabulary: the checkpoint's embedding rows (config.json `vocab_size`, often padded
    beyond the tokenizer: Qwen2.5 151936 vs 151665) when the directory has a config.json, else the
    tokenizer's size. A model can sample an id past the tokenizer's; `decode` drops it."""
    if self._model_vocab_size is not None:
      return self._model_vocab_size
    return self.tokenizer_size

  @property
  def eos_id(self) -> int:
    """The primary EOS id (eos_token, else the first generation_config id)."""
    return self.eos_ids[0]

  @property
  def bos_id(self) -> int | None:
    return self._special_ids.get("bos")

  @property
  def pad_id(self) -> int:
    """pad_token's id; checkpoints without one (Llama 3) pad with the primary EOS id."""
    return self._special_ids.get("pad", self.eos_id)

  @property
  def vocab(self) -> tuple[str, ...]:
    """Each id's token string (the tokenizer's pieces, e.g. byte-level "Ġthe"), by id; built once."""
    if self._vocab is None:
      self._vocab = tuple(self.tokenizer.id_to_token(i) or "" for i in range(self.tokenizer_size))
    return self._vocab

  def token_to_id(self, token: str) -> int:
    i = self.tokenizer.token_to_id(token)
    if i is None:
      raise ValueError(f"unknown token {token!r}")
    return i

  def id_to_token(self, token_id: int) -> str:
    token = self.tokenizer.id_to_token(int(token_id))
    if token is None:
      raise ValueError(f"token id {token_id} out of range [0, {self.tokenizer_size})")
    return token

  # ---- text ----

  def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
    """Token ids of `text`; add_special_tokens runs tokenizer.json's post-processor (e.g. BOS)."""
    return list(self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids)

  def encode_with_offsets(self, text: str) -> tuple[list[int], np.ndarray]:
    """Ids and int64 [T, 2] character spans of `text` (no special tokens added)."""
    enc = self.tokenizer.encode(text, add_special_tokens=False)
    return list(enc.ids), np.asarray(enc.offsets, np.int64).reshape(-1, 2)

  def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
    return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

  # ---- prompts ----

  def render_chat(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True,
                  **kwargs) -> str:
    """The chat template rendered as transformers' apply_chat_template(tokenize=False) does.

    kwargs reach the template as variables (e.g. enable_thinking=False for Qwen3, tools=[...]).
    """
    if self.chat_template is None:
      raise ValueError("this tokenizer has no chat template (a base model?): use prompt_ids(text, "
                       "chat=False) for plain prompts")
    if self._template is None:
      self._template = _compile(self.chat_template)
    specials = {f"{r}_token": t for r, t in self.special_tokens.items() if t is not None}
    return self._template.render(messages=[dict(m) for m in messages],
                                 add_generation_prompt=add_generation_prompt, **{**specials, **kwargs})

  def prompt_ids(self, prompt: str | Sequence[Mapping[str, Any]], *, chat: bool, **kwargs) -> list[int]:
    """Prompt token ids. chat=True: a user message (or a message list) through the chat template,
    then encoded without adding specials (the template writes them). chat=False: plain text, with
    what the tokenizer's post-processor adds (BOS for Llama) and BOS if add_bos_token asks for it."""
    if chat:
      messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
      return self.encode(self.render_chat(messages, **kwargs))
    if not isinstance(prompt, str):
      raise TypeError(f"a plain prompt is a string, got {type(prompt).__name__}; use chat=True for "
                      "messages")
    ids = self.encode(prompt, add_special_tokens=True)
    if self.add_bos_token and self.bos_id is not None and ids[:1] != [self.bos_id]:
      ids = [self.bos_id] + ids
    return ids

  # ---- stopping ----

  def stop_cut(self, ids: Sequence[int], stop_strings: Sequence[str] = (), *,
               eos: bool = True) -> int | None:
    """How many leading tokens of generated `ids` to keep, or None if nothing stops them.

    The cut is the shortest prefix that ends with an EOS token (eos=True), or whose decoded text
    (specials kept) contains one of `stop_strings`; the token completing the stop string is kept.
    Found by bisection over prefix decodes, O(log T) decodes.
    """
    ids = [int(i) for i in ids]
    eos_set = set(self.eos_ids) if eos else set()
    eos_cut = next((i + 1 for i, t in enumerate(ids) if t in eos_set), None)
    limit = len(ids) if eos_cut is None else eos_cut
    strings = [s for s in stop_strings if s]
    hit = lambda n: any(s in self.decode(ids[:n], skip_special_tokens=False) for s in strings)
    if not strings or not hit(limit):
      return eos_cut
    lo, hi = 1, limit
    while lo < hi:
      mid = (lo + hi) // 2
      if hit(mid):
        hi = mid
      else:
        lo = mid + 1
    return lo


def apply_stops(tok: HFTokenizer, tokens_BN: np.ndarray, mask_BN: np.ndarray,
                stop_strings: Sequence[str], *, eos: bool = True):
  """Cuts sampled responses at EOS and text stop strings, after generation.

  tokens_BN, mask_BN: the sampler's right-padded responses. Returns (mask_BN, length_B, stopped_B):
  the mask with every token after a row's cut cleared, the kept lengths, and whether a row stopped
  (EOS or a stop string) within its real tokens. Log-probs and entropies of the kept tokens stay
  valid: each was computed from its own prefix only.
  """
  tokens_BN, mask_BN = np.asarray(tokens_BN), np.asarray(mask_BN, bool)
  out = mask_BN.copy()
  stopped = np.zeros(len(tokens_BN), bool)
  for b, (row, m) in enumerate(zip(tokens_BN, mask_BN)):
    n = int(m.sum())
    cut = tok.stop_cut(row[:n], stop_strings, eos=eos)
    if cut is not None:
      out[b, cut:] = False
      stopped[b] = True
  return out, out.sum(axis=1).astype(np.int32), stopped
