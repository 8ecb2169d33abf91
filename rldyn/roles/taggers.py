"""Role taggers: one step's responses -> int8 roles per token (the `roles.tagger` config key).

    tagger = make_tagger("lexicon", task)               # the task's shipped lexicon
    roles = tagger(ids_list, texts, step)               # [int8 [T_i]]: 0 other, 1 planning, 2 execution

Taggers (`TAGGERS`, name -> factory(task, options) -> Tagger):
  structural  the task's ground truth, `task.token_roles(ids)`.
  lexicon     strategic grams from a lexicon JSON (`lexicon_path`; default: the task's shipped one).
  placebo     a random mask with, per batch, exactly as many planning tokens as the `placebo_of`
              tagger gives, placed uniformly among that tagger's non-other tokens; seeded by
              (seed, step).
  spans       planning = the content of regex spans (default `<think>...</think>`, `<planning>...`);
              the markup itself is other.

The text taggers re-derive text and character offsets from the ids (rldyn.roles.tokenizers), so spans
align with the tokens whatever the tokenizer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
import re
from typing import Any, Protocol

import numpy as np

from rldyn.registry import Registry
from rldyn.roles.ids import EXECUTION, OTHER, PLANNING
from rldyn.roles.lexicon import Lexicon, default_lexicon_name, load_lexicon
from rldyn.roles.matcher import Matcher, as_matcher, group_uses
from rldyn.roles.tokenizers import roles_from_char_mask, text_tokenizer

DEFAULT_SPAN_PATTERNS = (r"<think>(.*?)(?:</think>|\Z)", r"<planning>(.*?)(?:</planning>|\Z)")


def lexicon_roles_batch(ids_list: Sequence[Sequence[int]], lexicon: Lexicon | Matcher,
                        tok: Any) -> list[np.ndarray]:
  """int8 roles per id of each response: planning inside a matched strategic gram, other for
  specials, else execution. Text and offsets come from the ids (decode, then offsets)."""
  if not ids_list:
    return []
  tt = text_tokenizer(tok)
  texts, offsets = tt.batch_text_and_offsets(ids_list)
  mask, base = as_matcher(lexicon).char_masks(texts)
  lengths = [len(x) for x in ids_list]
  flat_off = np.concatenate(offsets).reshape(-1, 2) + np.repeat(base, lengths)[:, None]
  special = np.concatenate([tt.special_mask(ids) for ids in ids_list])
  roles = roles_from_char_mask(flat_off, mask, special)
  return np.split(roles, np.cumsum(lengths)[:-1])


def lexicon_roles(ids: Sequence[int], lexicon: Lexicon | Matcher, tok: Any) -> np.ndarray:
  """int8 role per id: planning inside a matched strategic gram, other for specials, else execution."""
  return lexicon_roles_batch([ids], lexicon, tok)[0]


def tag_text(text: str, lexicon: Lexicon | Matcher, tok: Any) -> tuple[list[int], np.ndarray]:
  """(ids, int8 roles) of `text` encoded with `tok`, tagged by the lexicon (no decode round trip)."""
  tt = text_tokenizer(tok)
  ids, offsets = tt.encode_with_offsets(text)
  return ids, roles_from_char_mask(offsets, as_matcher(lexicon).char_mask(text), tt.special_mask(ids))


class Tagger(Protocol):
  """Maps one step's responses to int8 roles per token (0 other, 1 planning, 2 execution)."""

  def __call__(self, ids_list: list[list[int]], texts: list[str], step: int) -> list[np.ndarray]:
    """ids_list[i] are response i's token ids; texts[i] its decoded text (taggers that need text
    re-derive it from the ids so spans align); step seeds the random taggers."""


TAGGERS: Registry[Callable[[Any, Mapping[str, Any]], Tagger]] = Registry("role tagger")


class StructuralTagger:
  """The task's ground-truth roles."""

  def __init__(self, task: Any):
    self.task = task

  def __call__(self, ids_list, texts, step):
    del texts, step
    return [np.asarray(self.task.token_roles(ids), np.int8) for ids in ids_list]


class LexiconTagger:
  """Strategic-gram planning; `.lexicon` and `.group_uses(texts)` feed semantic entropy."""

  def __init__(self, lexicon: Lexicon, tok: Any):
    self.lexicon = lexicon
    self.matcher = Matcher(lexicon)
    self.tok = text_tokenizer(tok)

  def __call__(self, ids_list, texts, step):
    del texts, step
    return lexicon_roles_batch(ids_list, self.matcher, self.tok)

  def group_uses(self, texts: Iterable[str]) -> list[str]:
    return group_uses(texts, self.matcher)


class PlaceboTagger:
  """Per batch: as many planning tokens as `reference` gives, uniformly among its non-other tokens."""

  _STREAM = 0x706C6163  # Separates this stream from other uses of (seed, step).

  def __init__(self, reference: Tagger, seed: int):
    self.reference = reference
    self.seed = seed

  def __call__(self, ids_list, texts, step):
    ref = self.reference(ids_list, texts, step)
    lengths = [len(r) for r in ref]
    flat = np.concatenate(ref) if ref else np.zeros(0, np.int8)
    candidates = np.flatnonzero(flat != OTHER)
    k = int((flat == PLANNING).sum())
    rng = np.random.default_rng([self.seed, self._STREAM, step])
    out = np.where(flat == OTHER, OTHER, EXECUTION).astype(np.int8)
    out[rng.choice(candidates, size=k, replace=False)] = PLANNING
    return np.split(out, np.cumsum(lengths)[:-1]) if ref else []


class SpanTagger:
  """Planning = text inside regex spans (group 1, or the whole match, whitespace-trimmed); the rest
  of a match is other (markup)."""

  def __init__(self, patterns: Sequence[str], tok: Any):
    if not patterns:
      raise ValueError("the spans tagger needs at least one regex")
    self.patterns = tuple(re.compile(p, re.DOTALL) for p in patterns)
    self.tok = text_tokenizer(tok)

  def char_masks(self, text: str) -> tuple[np.ndarray, np.ndarray]:
    plan, markup = np.zeros(len(text), bool), np.zeros(len(text), bool)
    for pat in self.patterns:
      for m in pat.finditer(text):
        markup[m.start():m.end()] = True
        g = 1 if pat.groups else 0
        start, end = m.span(g)
        while start < end and text[start].isspace():  # a token holding the markup and the
          start += 1                                   # space next to it stays markup
        while end > start and text[end - 1].isspace():
          end -= 1
        plan[start:end] = True
    return plan, markup & ~plan

  def __call__(self, ids_list, texts, step):
    del texts, step
    out = []
    for ids in ids_list:
      text, offsets = self.tok.text_and_offsets(ids)
      plan, markup = self.char_masks(text)
      out.append(roles_from_char_mask(offsets, plan, self.tok.special_mask(ids), markup))
    return out


def _tokenizer_of(task: Any, options: Mapping[str, Any]) -> Any:
  tok = options["tokenizer"] if options["tokenizer"] is not None else task.tokenizer
  # A checkpoint's HFTokenizer (rldyn.model.hf_tokenizer): offsets come from its tokenizers.Tokenizer.
  return tok.tokenizer if hasattr(tok, "stop_cut") and hasattr(tok, "tokenizer") else tok


@TAGGERS.register("structural")
def _structural(task, options):
  del options
  return StructuralTagger(task)


@TAGGERS.register("lexicon")
def _lexicon(task, options):
  lexicon = load_lexicon(options["lexicon_path"] or default_lexicon_name(task))
  return LexiconTagger(lexicon, _tokenizer_of(task, options))


@TAGGERS.register("placebo")
def _placebo(task, options):
  if options["placebo_of"] == "placebo":
    raise ValueError("placebo_of must name a non-placebo tagger")
  return PlaceboTagger(TAGGERS.get(options["placebo_of"])(task, options), options["seed"])


@TAGGERS.register("spans")
def _spans(task, options):
  return SpanTagger(options["span_patterns"] or DEFAULT_SPAN_PATTERNS, _tokenizer_of(task, options))


def make_tagger(name: str, task: Any, *, lexicon_path: str = "", placebo_of: str = "structural",
                seed: int = 0, span_patterns: tuple = (), tokenizer: Any = None) -> Tagger:
  """The tagger `name` (see TAGGERS.names()) for `task`.

  lexicon_path: a lexicon JSON path or shipped name ("" = the task's default); placebo_of: the tagger
  whose planning density the placebo copies; seed: the placebo's seed (with the step); span_patterns:
  regexes for `spans` (() = DEFAULT_SPAN_PATTERNS); tokenizer: overrides task.tokenizer for the text
  taggers (a tokenizers.Tokenizer or a tokenizer.json path works).
  """
  options = {"lexicon_path": lexicon_path, "placebo_of": placebo_of, "seed": int(seed),
             "span_patterns": tuple(span_patterns), "tokenizer": tokenizer}
  return TAGGERS.get(name)(task, options)
