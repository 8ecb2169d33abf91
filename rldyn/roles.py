"""Token-role taggers: ground truth, strategic-gram lexicons (HICRA), placebo masks and tag spans.

On a real model nobody hands us per-token roles, so the planning/execution split comes from text, as
in HICRA (Wang et al. 2025, arXiv 2509.03646; SCIENCE.md §1): *strategic grams* are 3-5-word n-grams
mined from correct responses, grouped by meaning, scored by Cluster Document Frequency (CDF = number
of distinct responses containing >= 1 n-gram of the group); the top 20 % of groups form the lexicon.
A token is planning iff its character span overlaps a matched occurrence; every other non-special
token is execution. Matching is on words of the decoded text, and character spans map back to tokens
through the tokenizer's offsets (token-id windows break under BPE).

    tagger = make_tagger("lexicon", task)               # the task's shipped lexicon
    roles = tagger(ids_list, texts, step)               # [int8 [T_i]]: 0 other, 1 planning, 2 execution
    lex = load_lexicon("math_en")                       # a shipped name, or a path to a JSON file
    semantic_entropy(group_uses(texts, lex))            # planning diversity of a step (SCIENCE.md §2)

Taggers (`TAGGERS`, name -> factory(task, options) -> Tagger):
  structural  the task's ground truth, `task.token_roles(ids)`.
  lexicon     strategic grams from a lexicon JSON (`lexicon_path`; default: the task's shipped one).
  placebo     a random mask with, per batch, exactly as many planning tokens as the `placebo_of`
              tagger gives, placed uniformly among that tagger's non-other tokens; seeded by
              (seed, step).
  spans       planning = the content of regex spans (default `<think>...</think>`, `<planning>...`);
              the markup itself is other.

Words. Text is split into words by `\\w+(?:'\\w+)*|[^\\w\\s]`: runs of letters/digits (with inner
apostrophes, "let's") and single punctuation marks, so "but wait, let me check" has the words
`but wait , let me check`. In the synthetic countdown language this is exactly its whitespace split
("try 11 - 9 = 2" -> try 11 - 9 = 2): a number is one word though it is several digit tokens. Matching
is case-insensitive by default; a lexicon may also replace every all-digit word by `<num>`
(`mine --number_placeholder`), so "try <num> * <num>" matches any operands.

Lexicon JSON: {"version": 1, "groups": [{"id", "ngrams": [...], "cdf"}], "meta": {..., "match":
{"case_sensitive": false, "number_placeholder": false}}}. Shipped lexicons live in rldyn/data/:
  lexicon_math_en.json    hand-curated English planning phrases for math reasoning, grouped by meaning.
  lexicon_countdown.json  mined from correct countdown reference traces; regenerate with
      python -m rldyn.roles mine --task=countdown --traces=2000 --seed=0 \\
          --out=rldyn/data/lexicon_countdown.json

CLI:
    python -m rldyn.roles mine --samples=WORKDIR/samples --out=lexicon.json  # its correct samples
    python -m rldyn.roles mine --samples=texts.jsonl --field=text --all_responses --out=lexicon.json
    python -m rldyn.roles validate --workdir=WORKDIR [--lexicon=PATH] [--entropy_model=base|final|none]
    python -m rldyn.roles validate --task=countdown --traces=1000 --seed=1 --out=report.json

How good is the recipe? On countdown it is at chance. The shipped lexicon (5117 exact 3-5-grams, top
20 % of 25584 candidates with CDF >= 2, from 1410 verified traces) against structural roles on 703
other verified reference traces (`validate --task=countdown --traces=1000 --seed=1`): precision 0.472,
recall 0.973, F1 0.635; it tags 95 % of tokens planning. A random mask of the same density (the
placebo) has precision 0.470, F1 0.630; tagging everything planning, F1 0.640. In this 33-word
language every structure is frequent, so CDF selects all of it: "try 2 +" (planning) ranks beside
"- 1 =" (execution). Neither `<num>` placeholders nor other n-gram ranges or top fractions beat chance
by much (best F1 0.66; precision reaches 0.67 only at recall 0.44). The ground truth disagrees with the
text at the `=` inside a step ("try 3 + 4" planning, "= 7" execution), which no frequency statistic
over word n-grams sees. On natural text the recipe is the published one; validate it there with the
hand-curated math_en lexicon or a mined one.

`validate` writes WORKDIR/roles_validation.json: token-level precision/recall/F1 of lexicon planning
against structural planning over the samples' responses, and `high_entropy_planning_frac`, the fraction
of the top-20 % highest-entropy response tokens that are structural planning tokens. Entropies come
from a forward pass of the run's base model (default) or its last RL checkpoint over the samples.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
import dataclasses
import json
import math
import os
import re
import sys
from typing import Any, Protocol

import numpy as np

from rldyn.metrics.entropy import semantic_entropy
from rldyn.registry import Registry
from rldyn.tasks import tokenizer as synthetic_tokenizer
from rldyn.tasks.base import EXECUTION, OTHER, PLANNING

LEXICON_VERSION = 1
DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
# The lexicon a task uses when none is configured; any other task uses math_en.
DEFAULT_LEXICONS = {"countdown": "countdown"}
FALLBACK_LEXICON = "math_en"
NUM = "<num>"  # What an all-digit word becomes in a lexicon with number_placeholder.
DEFAULT_SPAN_PATTERNS = (r"<think>(.*?)(?:</think>|\Z)", r"<planning>(.*?)(?:</planning>|\Z)")
_WORD_RE = re.compile(r"\w+(?:'\w+)*|[^\w\s]")
_NGRAM_WORD_RE = re.compile(re.escape(NUM) + r"|\w+(?:'\w+)*|[^\w\s]")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'"})  # 1:1, so offsets are unchanged.


# ---- words ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MatchOptions:
  """How text words are normalised before matching (stored with the lexicon)."""
  case_sensitive: bool = False  # False: compare lower-cased words.
  number_placeholder: bool = False  # True: every all-digit word is compared as `<num>`.

  def norm(self, word: str) -> str:
    if self.number_placeholder and word.isdigit():
      return NUM
    return word if self.case_sensitive else word.lower()


def words_with_spans(text: str, opts: MatchOptions = MatchOptions()
                     ) -> tuple[list[str], list[tuple[int, int]]]:
  """The normalised words of `text` and their [start, end) character spans."""
  words, spans = [], []
  for m in _WORD_RE.finditer(text.translate(_APOSTROPHES)):
    words.append(opts.norm(m.group()))
    spans.append(m.span())
  return words, spans


def ngram_words(ngram: str, opts: MatchOptions = MatchOptions()) -> tuple[str, ...]:
  """A lexicon n-gram string as a tuple of normalised words (`<num>` stays a placeholder)."""
  return tuple(w if w == NUM else opts.norm(w)
               for w in _NGRAM_WORD_RE.findall(ngram.translate(_APOSTROPHES)))


# ---- lexicons ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Group:
  """A strategic-gram group: n-grams with one meaning, and its Cluster Document Frequency."""
  id: str
  ngrams: tuple[str, ...]
  cdf: int | None = None  # None for hand-curated groups.


@dataclasses.dataclass(frozen=True)
class Lexicon:
  """Strategic-gram groups plus the word normalisation they were built with."""
  groups: tuple[Group, ...]
  match: MatchOptions = MatchOptions()
  meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    ids = [g.id for g in self.groups]
    if len(set(ids)) != len(ids):
      raise ValueError(f"lexicon group ids must be unique, got duplicates "
                       f"{sorted(k for k, c in Counter(ids).items() if c > 1)}")
    seen: dict[tuple[str, ...], str] = {}
    for g in self.groups:
      for ng in g.ngrams:
        key = ngram_words(ng, self.match)
        if not key:
          raise ValueError(f"lexicon group {g.id!r} has an n-gram with no words: {ng!r}")
        if seen.get(key, g.id) != g.id:
          raise ValueError(f"n-gram {ng!r} is in groups {seen[key]!r} and {g.id!r}")
        seen[key] = g.id

  def to_json(self) -> dict:
    return {"version": LEXICON_VERSION,
            "groups": [{"id": g.id, "ngrams": list(g.ngrams), "cdf": g.cdf} for g in self.groups],
            "meta": {**self.meta, "match": dataclasses.asdict(self.match)}}

  @classmethod
  def from_json(cls, d: Mapping[str, Any]) -> Lexicon:
    if d.get("version") != LEXICON_VERSION:
      raise ValueError(f"lexicon version {d.get('version')!r} is not {LEXICON_VERSION}")
    meta = dict(d.get("meta", {}))
    match = MatchOptions(**meta.pop("match", {}))
    groups = tuple(Group(str(g["id"]), tuple(str(n) for n in g["ngrams"]),
                         None if g.get("cdf") is None else int(g["cdf"])) for g in d["groups"])
    return cls(groups, match, meta)

  def save(self, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    d = self.to_json()
    groups = ",\n  ".join(json.dumps(g) for g in d["groups"])  # one group per line
    with open(tmp, "w") as f:
      f.write(f'{{"version": {d["version"]},\n "meta": {json.dumps(d["meta"])},\n'
              f' "groups": [\n  {groups}\n ]}}\n')
    os.replace(tmp, path)


def shipped_lexicons() -> list[str]:
  """Names of the lexicons shipped in rldyn/data (lexicon_<name>.json)."""
  if not os.path.isdir(DATA_DIR):
    return []
  return sorted(f[len("lexicon_"):-len(".json")] for f in os.listdir(DATA_DIR)
                if f.startswith("lexicon_") and f.endswith(".json"))


def lexicon_path(name_or_path: str) -> str:
  """A path for a shipped lexicon name ("math_en") or a path; raises if neither exists."""
  if os.path.isfile(name_or_path):
    return name_or_path
  shipped = os.path.join(DATA_DIR, f"lexicon_{name_or_path}.json")
  if os.path.isfile(shipped):
    return shipped
  raise FileNotFoundError(f"no lexicon file {name_or_path!r}; shipped lexicons: "
                          f"{', '.join(shipped_lexicons())}")


def load_lexicon(name_or_path: str) -> Lexicon:
  with open(lexicon_path(name_or_path)) as f:
    return Lexicon.from_json(json.load(f))


def default_lexicon_name(task: Any) -> str:
  return DEFAULT_LEXICONS.get(getattr(task, "name", ""), FALLBACK_LEXICON)


# ---- matching ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Occurrence:
  start: int  # Character span [start, end) in the text.
  end: int
  group: str


class Matcher:
  """Finds lexicon n-gram occurrences in text, on word boundaries.

  At every word where some n-gram starts, the longest one starting there is an occurrence; so the
  union of occurrences is exactly the union of all matches of all n-grams (overlaps included).
  Batches are matched at once: texts -> words (one regex pass each) -> word ids -> each n-gram
  length's windows coded in mixed radix (numpy) and looked up in the sorted lexicon codes.
  """

  def __init__(self, lexicon: Lexicon):
    self.lexicon = lexicon
    self.group_ids = tuple(g.id for g in lexicon.groups)
    table = {ngram_words(ng, lexicon.match): gi
             for gi, g in enumerate(lexicon.groups) for ng in g.ngrams}
    self._table = table
    vocab = sorted({w for key in table for w in key})
    self._wid = {w: i + 1 for i, w in enumerate(vocab)}  # 0 = a word no n-gram contains
    self._num = self._wid.get(NUM, 0)
    self._radix = len(vocab) + 1
    self._lengths = sorted({len(k) for k in table}, reverse=True)
    # Mixed-radix codes are exact while radix ** n fits in int64; longer n-grams use the dict.
    self._codes: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for n in self._lengths:
      if self._radix ** n >= 2 ** 62:
        continue
      keys = [k for k in table if len(k) == n]
      codes = np.array([self._code(k) for k in keys], np.int64)
      order = np.argsort(codes)
      self._codes[n] = codes[order], np.array([table[k] for k in keys], np.int64)[order]

  def _code(self, key: tuple[str, ...]) -> int:
    c = 0
    for w in key:
      c = c * self._radix + self._wid[w]
    return c

  def _word_ids(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    t = text.translate(_APOSTROPHES)
    per_word = False
    if not self.lexicon.match.case_sensitive:
      low = t.lower()
      per_word = len(low) != len(t)  # rare characters whose lower case is longer
      t = t if per_word else low
    spans = [m.span() for m in _WORD_RE.finditer(t)]
    words = [t[a:b] for a, b in spans]
    if per_word:
      words = [w.lower() for w in words]
    get = self._wid.get
    if self.lexicon.match.number_placeholder:
      num = self._num
      return [num if w.isdigit() else get(w, 0) for w in words], spans
    return [get(w, 0) for w in words], spans

  def scan(self, texts: Sequence[str]) -> _Scan:
    """Words and occurrences of a batch of texts."""
    wids, spans, counts = [], [], []
    for text in texts:
      w, s = self._word_ids(text)
      wids += w
      spans += s
      counts.append(len(w))
    m = len(wids)
    word = np.asarray(wids, np.int64)
    span = np.asarray(spans, np.int64).reshape(m, 2)
    text_of = np.repeat(np.arange(len(texts)), counts)
    best_n = np.zeros(m, np.int64)
    best_g = np.zeros(m, np.int64)
    for n in self._lengths:
      if m < n:
        continue
      starts = np.arange(m - n + 1)
      free = (best_n[:m - n + 1] == 0) & (text_of[:m - n + 1] == text_of[n - 1:])
      if n in self._codes:
        codes_sorted, groups = self._codes[n]
        code = np.zeros(m - n + 1, np.int64)
        for j in range(n):
          code = code * self._radix + word[j:m - n + 1 + j]
        pos = np.minimum(np.searchsorted(codes_sorted, code), len(codes_sorted) - 1)
        hit = free & (codes_sorted[pos] == code)
        best_n[starts[hit]] = n
        best_g[starts[hit]] = groups[pos[hit]]
      else:
        for i in starts[free & (word[:m - n + 1] > 0)]:
          key = tuple(self._words_of(texts, text_of, span, i, n))
          if key in self._table:
            best_n[i], best_g[i] = n, self._table[key]
    first = np.flatnonzero(best_n)
    last = first + best_n[first] - 1
    return _Scan(text_of=text_of[first], start=span[first, 0], end=span[last, 1],
                 group=best_g[first], counts=np.asarray(counts, np.int64))

  def _words_of(self, texts, text_of, span, i, n):
    for j in range(i, i + n):
      w = texts[text_of[j]][span[j, 0]:span[j, 1]].translate(_APOSTROPHES)
      yield self.lexicon.match.norm(w)

  def find(self, text: str) -> list[Occurrence]:
    """The occurrences in `text` (the longest n-gram at each word that starts one), in order."""
    sc = self.scan([text])
    return [Occurrence(s, e, self.group_ids[g])
            for s, e, g in zip(sc.start.tolist(), sc.end.tolist(), sc.group.tolist())]

  def char_masks(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(bool mask over the concatenated texts: inside an occurrence, int64 [B] text start)."""
    base = np.concatenate([[0], np.cumsum([len(t) for t in texts], dtype=np.int64)])
    sc = self.scan(texts)
    diff = np.zeros(base[-1] + 1, np.int64)
    np.add.at(diff, base[sc.text_of] + sc.start, 1)
    np.add.at(diff, base[sc.text_of] + sc.end, -1)
    return np.cumsum(diff[:-1]) > 0, base[:-1]

  def char_mask(self, text: str) -> np.ndarray:
    """bool [len(text)]: characters inside a matched occurrence."""
    return self.char_masks([text])[0]

  def uses_batch(self, texts: Sequence[str]) -> list[list[str]]:
    """Per text: group ids of its leftmost-longest, non-overlapping occurrences, in order."""
    sc = self.scan(texts)
    out: list[list[str]] = [[] for _ in texts]
    end, cur = -1, -1
    for t, s, e, g in zip(sc.text_of.tolist(), sc.start.tolist(), sc.end.tolist(),
                          sc.group.tolist()):
      if t != cur:
        cur, end = t, -1
      if s >= end:
        out[t].append(self.group_ids[g])
        end = e
    return out

  def uses(self, text: str) -> list[str]:
    return self.uses_batch([text])[0]


@dataclasses.dataclass(frozen=True)
class _Scan:
  """Occurrences of a batch, sorted by (text, start): longest n-gram per starting word."""
  text_of: np.ndarray  # int64 [K] which text
  start: np.ndarray  # int64 [K] character span in that text
  end: np.ndarray
  group: np.ndarray  # int64 [K] index into Matcher.group_ids
  counts: np.ndarray  # int64 [B] words per text


def _matcher(lexicon: Lexicon | Matcher) -> Matcher:
  return lexicon if isinstance(lexicon, Matcher) else Matcher(lexicon)


def group_uses(texts: Iterable[str], lexicon: Lexicon | Matcher) -> list[str]:
  """Group ids of every strategic-gram occurrence in `texts` (leftmost-longest, non-overlapping).

  `semantic_entropy(group_uses(texts, lexicon))` is the step's semantic entropy of planning.
  """
  return [g for uses in _matcher(lexicon).uses_batch(list(texts)) for g in uses]


def planning_semantic_entropy(texts: Iterable[str], lexicon: Lexicon | Matcher) -> float:
  return semantic_entropy(group_uses(texts, lexicon))


# ---- tokenizers with offsets ---------------------------------------------------------------------


class TextTokenizer(Protocol):
  """What the text taggers need from a tokenizer."""

  def encode_with_offsets(self, text: str) -> tuple[list[int], np.ndarray]:
    """ids and int64 [T, 2] character spans of `text` (no special tokens added)."""

  def text_and_offsets(self, ids: Sequence[int]) -> tuple[str, np.ndarray]:
    """The decoded text of `ids` and the [T, 2] span of each id in it (empty for specials)."""

  def special_mask(self, ids: Sequence[int]) -> np.ndarray:
    """bool [T]: special tokens (role other in every text tagger)."""

  def batch_text_and_offsets(self, ids_list: Sequence[Sequence[int]]
                             ) -> tuple[list[str], list[np.ndarray]]:
    """text_and_offsets of each ids (a special's empty span may sit anywhere)."""


class SyntheticTextTokenizer:
  """`rldyn.tasks.Tokenizer` with offsets; text_and_offsets == encode_with_offsets(decode(ids))."""

  def __init__(self, tok: synthetic_tokenizer.Tokenizer):
    self.tok = tok
    self._strings = tok.vocab
    self._special = frozenset(tok.token_to_id(s) for s in synthetic_tokenizer.SPECIALS)
    self._digit = frozenset(tok.token_to_id(d) for d in synthetic_tokenizer.DIGITS)
    vocab = range(len(self._strings))
    self._special_arr = np.array([i in self._special for i in vocab], bool)
    self._digit_arr = np.array([i in self._digit for i in vocab], bool)
    self._len_arr = np.array([len(t) for t in self._strings], np.int64)
    self._plain = np.array(self._strings, object)
    self._spaced = np.array([" " + t for t in self._strings], object)

  def encode_with_offsets(self, text: str) -> tuple[list[int], np.ndarray]:
    ids, offsets = self.tok.encode_with_offsets(text)
    return ids, np.asarray(offsets, np.int64).reshape(-1, 2)

  def text_and_offsets(self, ids: Sequence[int]) -> tuple[str, np.ndarray]:
    # The decode loop of Tokenizer.decode, recording where each token lands.
    parts, offsets, pos, prev_digit = [], np.zeros((len(ids), 2), np.int64), 0, False
    for k, t in enumerate(ids):
      t = int(t)
      token = self._strings[t]  # IndexError for out-of-range ids, as decode raises.
      if t in self._special:
        offsets[k] = pos
        continue
      digit = t in self._digit
      if parts and not (digit and prev_digit):
        parts.append(" ")
        pos += 1
      parts.append(token)
      offsets[k] = pos, pos + len(token)
      pos += len(token)
      prev_digit = digit
    return "".join(parts), offsets

  def special_mask(self, ids: Sequence[int]) -> np.ndarray:
    return self._special_arr[np.asarray(ids, np.int64)] if len(ids) else np.zeros(0, bool)

  def batch_text_and_offsets(self, ids_list):
    # Vectorised decode: a space before every non-special token except a response's first and a
    # digit that follows a digit; a special token gets the empty span (0, 0).
    lengths = np.array([len(x) for x in ids_list], np.int64)
    flat = (np.concatenate([np.asarray(x, np.int64) for x in ids_list]) if lengths.sum()
            else np.zeros(0, np.int64))
    if ((flat < 0) | (flat >= len(self._strings))).any():
      raise ValueError(f"token ids outside [0, {len(self._strings)})")
    of = np.repeat(np.arange(len(ids_list)), lengths)
    keep = np.flatnonzero(~self._special_arr[flat])
    tok, resp = flat[keep], of[keep]
    digit = self._digit_arr[tok]
    first = np.ones(len(tok), bool)
    first[1:] = resp[1:] != resp[:-1]
    sep = ~first
    sep[1:] &= ~(digit[1:] & digit[:-1])
    size = self._len_arr[tok] + sep
    end = np.cumsum(size)
    start_idx = np.maximum.accumulate(np.where(first, np.arange(len(tok)), 0))
    end = end - (end[start_idx] - size[start_idx])
    offsets = np.zeros((len(flat), 2), np.int64)
    offsets[keep, 1] = end
    offsets[keep, 0] = end - self._len_arr[tok]
    pieces = np.where(sep, self._spaced[tok], self._plain[tok]).tolist()
    bounds = np.concatenate([[0], np.cumsum(np.bincount(resp, minlength=len(ids_list)))])
    texts = ["".join(pieces[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    return texts, np.split(offsets, np.cumsum(lengths)[:-1])


class HFTextTokenizer:
  """A Hugging Face `tokenizers.Tokenizer` (tokenizer.json) with offsets.

  From ids: decode (specials skipped), re-encode with offsets; if the re-encoding differs from the
  ids (BPE is not always idempotent), fall back to prefix decoding, token k spanning
  [len(decode(ids[:k])), len(decode(ids[:k+1]))).
  """

  def __init__(self, tok: Any):
    self.tok = tok
    self._special = frozenset(int(i) for i, t in tok.get_added_tokens_decoder().items()
                              if getattr(t, "special", False))

  def encode_with_offsets(self, text: str) -> tuple[list[int], np.ndarray]:
    enc = self.tok.encode(text, add_special_tokens=False)
    return list(enc.ids), np.asarray(enc.offsets, np.int64).reshape(-1, 2)

  def special_mask(self, ids: Sequence[int]) -> np.ndarray:
    return np.fromiter((int(t) in self._special for t in ids), bool, len(ids))

  def text_and_offsets(self, ids: Sequence[int]) -> tuple[str, np.ndarray]:
    texts, offsets = self.batch_text_and_offsets([ids])
    return texts[0], offsets[0]

  def batch_text_and_offsets(self, ids_list):
    ids_list = [[int(t) for t in ids] for ids in ids_list]
    keeps = [[t for t in ids if t not in self._special] for ids in ids_list]
    texts = self.tok.decode_batch(keeps, skip_special_tokens=False)
    encs = self.tok.encode_batch(texts, add_special_tokens=False)
    offsets = [self._place(ids, keep, text, list(enc.ids), np.asarray(enc.offsets, np.int64))
               for ids, keep, text, enc in zip(ids_list, keeps, texts, encs)]
    return list(texts), offsets

  def _place(self, ids, keep, text, enc_ids, enc_off) -> np.ndarray:
    special = self.special_mask(ids)
    enc_off = enc_off.reshape(-1, 2)
    if enc_ids != keep:
      ends = [len(self.tok.decode(keep[:k + 1], skip_special_tokens=False)) for k in range(len(keep))]
      ends = np.minimum(np.maximum.accumulate(np.asarray(ends, np.int64)), len(text))
      enc_off = np.stack([np.concatenate([[0], ends[:-1]]), ends], axis=1) if keep else enc_off
    offsets = np.zeros((len(ids), 2), np.int64)
    offsets[~special] = enc_off
    # A special token gets the empty span where the next text token starts.
    pos = len(text)
    for k in np.flatnonzero(special)[::-1] if special.any() else ():
      nxt = k + 1 + np.flatnonzero(~special[k + 1:])[:1]
      offsets[k] = offsets[nxt[0], 0] if len(nxt) else pos
    return offsets


def text_tokenizer(tok: Any) -> TextTokenizer:
  """Wraps a synthetic or a HF `tokenizers` tokenizer, or loads a tokenizer.json path."""
  if isinstance(tok, (SyntheticTextTokenizer, HFTextTokenizer)):
    return tok
  if isinstance(tok, str):
    import tokenizers  # pylint: disable=g-import-not-at-top
    return HFTextTokenizer(tokenizers.Tokenizer.from_file(tok))
  if isinstance(tok, synthetic_tokenizer.Tokenizer):
    return SyntheticTextTokenizer(tok)
  if hasattr(tok, "get_added_tokens_decoder") and hasattr(tok, "encode"):
    return HFTextTokenizer(tok)
  raise TypeError(f"cannot get offsets from a {type(tok).__name__}: need a rldyn.tasks.Tokenizer or "
                  "a tokenizers.Tokenizer")


def roles_from_char_mask(offsets: np.ndarray, planning_chars: np.ndarray,
                         special: np.ndarray, other_chars: np.ndarray | None = None) -> np.ndarray:
  """int8 roles: planning iff a token's span overlaps a planning char; specials other; else execution.

  other_chars (optional): tokens overlapping these and no planning char are other (markup).
  """
  def overlaps(chars):
    csum = np.concatenate([[0], np.cumsum(chars, dtype=np.int64)])
    s = np.clip(offsets[:, 0], 0, len(chars))
    e = np.clip(offsets[:, 1], 0, len(chars))
    return csum[e] - csum[s] > 0
  roles = np.full(len(offsets), EXECUTION, np.int8)
  if other_chars is not None:
    roles[overlaps(other_chars)] = OTHER
  roles[overlaps(planning_chars)] = PLANNING
  roles[special] = OTHER
  return roles


def lexicon_roles_batch(ids_list: Sequence[Sequence[int]], lexicon: Lexicon | Matcher,
                        tok: Any) -> list[np.ndarray]:
  """int8 roles per id of each response: planning inside a matched strategic gram, other for
  specials, else execution. Text and offsets come from the ids (decode, then offsets)."""
  if not ids_list:
    return []
  tt = text_tokenizer(tok)
  texts, offsets = tt.batch_text_and_offsets(ids_list)
  mask, base = _matcher(lexicon).char_masks(texts)
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
  return ids, roles_from_char_mask(offsets, _matcher(lexicon).char_mask(text), tt.special_mask(ids))


# ---- taggers -------------------------------------------------------------------------------------


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
  return options["tokenizer"] if options["tokenizer"] is not None else task.tokenizer


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


# ---- mining --------------------------------------------------------------------------------------


def doc_ngrams(texts: Iterable[str], n_min: int, n_max: int,
               opts: MatchOptions) -> list[set[tuple[str, ...]]]:
  """The set of distinct word n-grams (n_min <= n <= n_max) of each text."""
  out = []
  for text in texts:
    words, _ = words_with_spans(text, opts)
    out.append({tuple(words[i:i + n]) for n in range(n_min, n_max + 1)
                for i in range(len(words) - n + 1)})
  return out


def kmeans(x: np.ndarray, k: int, *, seed: int = 0, iters: int = 100) -> np.ndarray:
  """Lloyd's k-means with k-means++ seeding (numpy); labels [N] in 0..k-1."""
  x = np.asarray(x, np.float64)
  n = len(x)
  k = min(k, n)
  rng = np.random.default_rng(seed)
  centers = [x[rng.integers(n)]]
  d2 = ((x - centers[0]) ** 2).sum(1)
  for _ in range(1, k):
    total = d2.sum()
    idx = rng.choice(n, p=d2 / total) if total > 0 else rng.integers(n)
    centers.append(x[idx])
    d2 = np.minimum(d2, ((x - x[idx]) ** 2).sum(1))
  c = np.stack(centers)
  labels = np.full(n, -1)
  for _ in range(iters):
    dist = (x ** 2).sum(1)[:, None] - 2 * x @ c.T + (c ** 2).sum(1)[None]
    new = dist.argmin(1)
    if np.array_equal(new, labels):
      break
    labels = new
    for j in range(k):
      members = x[labels == j]
      if len(members):
        c[j] = members.mean(0)
  return labels


def mine_lexicon(texts: Sequence[str], *, n_min: int = 3, n_max: int = 5, top_frac: float = 0.2,
                 min_df: int = 2, embed: Callable[[list[str]], np.ndarray] | None = None,
                 num_groups: int | None = None, match: MatchOptions = MatchOptions(),
                 seed: int = 0, meta: Mapping[str, Any] | None = None) -> Lexicon:
  """Strategic grams of `texts` (usually the correct responses), HICRA-style.

  Candidates: word n-grams with n_min <= n <= n_max found in >= min_df distinct texts. Grouping: each
  n-gram alone (exact identity), or, with `embed(list[str]) -> [N, D]`, k-means over the L2-normalised
  embeddings into `num_groups` groups (default ceil(sqrt(N))). CDF(group) = number of distinct texts
  containing >= 1 of its n-grams. Kept: the top ceil(top_frac * groups) groups by CDF (ties broken by
  more words, then alphabetically, so the result is deterministic). Group ids: "g<rank>".
  """
  if not 1 <= n_min <= n_max:
    raise ValueError(f"need 1 <= n_min <= n_max, got {n_min}, {n_max}")
  if not 0 < top_frac <= 1:
    raise ValueError(f"top_frac must be in (0, 1], got {top_frac}")
  docs = doc_ngrams(texts, n_min, n_max, match)
  df = Counter(g for d in docs for g in d)
  cands = sorted(g for g, c in df.items() if c >= min_df)
  if embed is None:
    members = [[g] for g in cands]
  else:
    if not cands:
      members = []
    else:
      e = np.asarray(embed([" ".join(g) for g in cands]), np.float64)
      if e.shape[0] != len(cands):
        raise ValueError(f"embed returned {e.shape[0]} rows for {len(cands)} n-grams")
      e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
      k = num_groups or math.ceil(math.sqrt(len(cands)))
      labels = kmeans(e, k, seed=seed)
      members = [[g for g, lab in zip(cands, labels) if lab == j] for j in sorted(set(labels))]
  index = {g: i for i, grp in enumerate(members) for g in grp}
  cover: list[set[int]] = [set() for _ in members]
  for d_i, d in enumerate(docs):
    for g in d:
      if g in index:
        cover[index[g]].add(d_i)
  scored = sorted(((len(cover[i]), grp) for i, grp in enumerate(members)),
                  key=lambda s: (-s[0], -max(len(g) for g in s[1]), s[1]))
  keep = scored[:math.ceil(top_frac * len(scored))]
  groups = tuple(Group(f"g{r}", tuple(" ".join(g) for g in sorted(grp, key=lambda g: -df[g])), cdf)
                 for r, (cdf, grp) in enumerate(keep))
  info = {"n": [n_min, n_max], "top_frac": top_frac, "min_df": min_df, "docs": len(docs),
          "candidates": len(cands), "grouping": "exact" if embed is None else "kmeans",
          "groups_scored": len(scored), **(meta or {})}
  return Lexicon(groups, match, info)


def read_texts(path: str, field: str = "response", correct_only: bool = True) -> list[str]:
  """Texts from a JSONL file, a samples/ dir or a workdir (samples/samples.jsonl).

  correct_only: keep records whose "correct" is true (records without the key are kept).
  """
  for cand in (path, os.path.join(path, "samples.jsonl"),
               os.path.join(path, "samples", "samples.jsonl")):
    if os.path.isfile(cand):
      path = cand
      break
  else:
    raise FileNotFoundError(f"no JSONL at {path} (nor samples.jsonl, samples/samples.jsonl in it)")
  out = []
  with open(path) as f:
    for line in f:
      if not line.strip():
        continue
      rec = json.loads(line)
      if correct_only and not rec.get("correct", True):
        continue
      if field not in rec:
        raise KeyError(f"{path}: a record has no field {field!r} (keys: {sorted(rec)})")
      out.append(str(rec[field]))
  return out


def reference_traces(task: Any, num: int, seed: int, correct_only: bool = True
                     ) -> list[tuple[Any, str]]:
  """(problem, trace) pairs drawn with np.random.default_rng(seed), optionally only verified ones."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(num):
    problem = task.sample_problem(rng)
    trace = task.reference_trace(problem, rng)
    if not correct_only or task.verify(problem, trace):
      out.append((problem, trace))
  return out


# ---- validation ----------------------------------------------------------------------------------


def planning_prf(pred: Sequence[np.ndarray], truth: Sequence[np.ndarray]) -> dict[str, float]:
  """Token-level precision/recall/F1 of predicted planning against true planning."""
  p = np.concatenate([np.asarray(r) for r in pred]) == PLANNING if pred else np.zeros(0, bool)
  t = np.concatenate([np.asarray(r) for r in truth]) == PLANNING if truth else np.zeros(0, bool)
  if p.shape != t.shape:
    raise ValueError(f"role arrays differ in length: {p.shape} vs {t.shape}")
  tp = float((p & t).sum())
  prec = tp / p.sum() if p.sum() else float("nan")
  rec = tp / t.sum() if t.sum() else float("nan")
  f1 = 2 * prec * rec / (prec + rec) if prec + rec > 0 else float("nan")
  return {"precision": prec, "recall": rec, "f1": f1, "tokens": int(p.size),
          "planning_frac/pred": float(p.mean()) if p.size else float("nan"),
          "planning_frac/true": float(t.mean()) if t.size else float("nan")}


def high_entropy_planning_frac(entropies: Sequence[np.ndarray], roles: Sequence[np.ndarray],
                               top_frac: float = 0.2) -> float:
  """Fraction of the top `top_frac` highest-entropy tokens (pooled) whose role is planning.

  The top set is the ceil(top_frac * T) tokens of largest entropy (stable order breaks ties).
  """
  h = np.concatenate([np.asarray(e, np.float64) for e in entropies])
  r = np.concatenate([np.asarray(x) for x in roles])
  if h.shape != r.shape:
    raise ValueError(f"entropies and roles differ in length: {h.shape} vs {r.shape}")
  if not h.size:
    return float("nan")
  k = math.ceil(top_frac * h.size)
  top = np.argsort(-h, kind="stable")[:k]
  return float((r[top] == PLANNING).mean())


def validate_texts(task: Any, texts: Sequence[str], lexicon: Lexicon,
                   entropies: Sequence[np.ndarray] | None = None, top_frac: float = 0.2) -> dict:
  """Lexicon roles vs the task's structural roles over `texts` (responses), token level."""
  matcher = Matcher(lexicon)
  ids_list = [task.tokenizer.encode(t) for t in texts]
  truth = [np.asarray(task.token_roles(ids), np.int8) for ids in ids_list]
  pred = [tag_text(t, matcher, task.tokenizer)[1] for t in texts]
  out = {**planning_prf(pred, truth), "responses": len(texts),
         "semantic_entropy/planning": planning_semantic_entropy(texts, matcher)}
  conf = np.zeros((3, 3), np.int64)  # rows: structural role; cols: lexicon role
  for t, p in zip(truth, pred):
    np.add.at(conf, (t.astype(np.int64), p.astype(np.int64)), 1)
  # Chance levels over the structurally non-other tokens: tag all of them planning, or a random
  # subset as large as the lexicon's planning set (the placebo; its precision is the base rate).
  n_tok, n_true, n_pred = conf[1:].sum(), conf[1].sum(), conf[1:, 1].sum()
  base = n_true / n_tok if n_tok else float("nan")
  rec_placebo = min(n_pred / n_tok, 1.0) if n_tok else float("nan")
  out["baseline/all_planning_f1"] = 2 * base / (base + 1) if n_tok else float("nan")
  out["baseline/placebo_precision"] = base
  out["baseline/placebo_f1"] = (2 * base * rec_placebo / (base + rec_placebo)
                                if n_tok and base + rec_placebo > 0 else float("nan"))
  out["confusion"] = {"rows_structural_cols_lexicon": ["other", "planning", "execution"],
                      "counts": conf.tolist()}
  if entropies is not None:
    out["high_entropy_planning_frac"] = high_entropy_planning_frac(entropies, truth, top_frac)
    out["high_entropy_lexicon_planning_frac"] = high_entropy_planning_frac(entropies, pred, top_frac)
    out["entropy_top_frac"] = top_frac
  return out


def model_entropies(workdir: str, records: Sequence[Mapping[str, Any]], which: str = "base",
                    batch_size: int = 64) -> list[np.ndarray]:
  """Per-token entropy of each record's response under the run's base model or last RL checkpoint.

  One forward pass over [bos] + prompt + response (prompts left-padded, responses right-padded, fixed
  shapes), full-vocabulary entropy at the sampling temperature, float32 (rldyn.rl.step).
  """
  import jax  # pylint: disable=g-import-not-at-top
  from rldyn import parallel, runs  # pylint: disable=g-import-not-at-top
  from rldyn.rl import step as step_lib  # pylint: disable=g-import-not-at-top

  cfg, task = runs.load_run(workdir)
  mesh = parallel.make_mesh(parallel.MeshConfig(data=1, fsdp=1, tensor=1), devices=jax.devices()[:1])
  if which == "base":
    params = runs.base_params(workdir, cfg, mesh)
  elif which == "final":
    steps = runs.checkpoint_steps(workdir)
    if not steps:
      raise FileNotFoundError(f"{workdir} has no RL checkpoints; use --entropy_model=base")
    params = runs.checkpoint_params(workdir, steps[-1], cfg, mesh)
  else:
    raise ValueError(f"entropy model must be 'base' or 'final', got {which!r}")
  tok = task.tokenizer
  prompts = [[tok.bos_id] + tok.encode(r["prompt"]) for r in records]
  responses = [tok.encode(r["response"]) for r in records]
  p_w = max(len(x) for x in prompts)
  n = max(1, max(len(x) for x in responses))
  temp = cfg.sampling.temperature

  @jax.jit
  def ent(params, tokens_BS, mask_BS):
    logits = step_lib.response_logits(cfg.model, params, tokens_BS, mask_BS, n)
    return step_lib.token_logp_entropy(logits, tokens_BS[:, -n:], temp)[1]

  out = []
  for start in range(0, len(records), batch_size):
    rows = list(range(start, min(start + batch_size, len(records))))
    tokens = np.full((batch_size, p_w + n), tok.pad_id, np.int32)
    mask = np.zeros((batch_size, p_w + n), bool)
    for b, i in enumerate(rows):
      p, r = prompts[i], responses[i]
      tokens[b, p_w - len(p):p_w], mask[b, p_w - len(p):p_w] = p, True
      tokens[b, p_w:p_w + len(r)], mask[b, p_w:p_w + len(r)] = r, True
    mask[len(rows):, p_w - 1] = True  # padding rows: one real token keeps the softmax finite
    h = np.asarray(jax.device_get(ent(params, tokens, mask)))
    out += [h[b, :len(responses[i])] for b, i in enumerate(rows)]
  return out


def validate_workdir(workdir: str, lexicon: str = "", entropy_model: str = "base",
                     top_frac: float = 0.2) -> dict:
  """Writes and returns WORKDIR/roles_validation.json (see the module docstring)."""
  with open(os.path.join(workdir, "config.json")) as f:
    task_cfg = json.load(f)["task"]
  from rldyn.tasks import make_task  # pylint: disable=g-import-not-at-top
  task = make_task(task_cfg["name"], **dict(task_cfg["options"]))
  path = os.path.join(workdir, "samples", "samples.jsonl")
  with open(path) as f:
    records = [json.loads(line) for line in f if line.strip()]
  if not records:
    raise ValueError(f"{path} has no samples")
  lex_path = lexicon_path(lexicon or default_lexicon_name(task))
  lex = load_lexicon(lex_path)
  texts = [r["response"] for r in records]
  entropies = None if entropy_model == "none" else model_entropies(workdir, records, entropy_model)
  res = validate_texts(task, texts, lex, entropies, top_frac)
  res["correct_only"] = validate_texts(
      task, [r["response"] for r in records if r.get("correct")], lex)
  res.update({"lexicon": os.path.abspath(lex_path), "task": task.name,
              "entropy_model": entropy_model, "samples": path})
  with open(os.path.join(workdir, "roles_validation.json"), "w") as f:
    json.dump(_finite(res), f, indent=1)
  return res


def _finite(x: Any) -> Any:
  if isinstance(x, float) and not math.isfinite(x):
    return None
  if isinstance(x, dict):
    return {k: _finite(v) for k, v in x.items()}
  if isinstance(x, list):
    return [_finite(v) for v in x]
  return x


# ---- CLI -----------------------------------------------------------------------------------------


def _task_from_flag(spec: str) -> Any:
  from rldyn.tasks import make_task  # pylint: disable=g-import-not-at-top
  return make_task(spec)


def _cmd_mine(args: argparse.Namespace) -> None:
  if bool(args.samples) == bool(args.task):
    raise SystemExit("mine: give exactly one of --samples or --task")
  match = MatchOptions(args.case_sensitive, args.number_placeholder)
  if args.samples:
    texts = read_texts(args.samples, args.field, correct_only=not args.all_responses)
    source = {"source": os.path.abspath(args.samples), "field": args.field,
              "correct_only": not args.all_responses}
  else:
    task = _task_from_flag(args.task)
    texts = [t for _, t in reference_traces(task, args.traces, args.seed)]
    source = {"source": f"{args.task} reference traces (default config), correct only",
              "traces_drawn": args.traces, "seed": args.seed}
  source["command"] = "python -m rldyn.roles " + " ".join(sys.argv[1:])
  lex = mine_lexicon(texts, n_min=args.n_min, n_max=args.n_max, top_frac=args.top_frac,
                     min_df=args.min_df, match=match, seed=args.seed, meta=source)
  lex.save(args.out)
  print(f"mined {len(lex.groups)} groups from {len(texts)} texts "
        f"({lex.meta['candidates']} candidate n-grams) -> {args.out}")
  for g in lex.groups[:10]:
    print(f"  {g.id:>5} cdf={g.cdf:<6} {g.ngrams[0]!r}")


def _cmd_validate(args: argparse.Namespace) -> None:
  if bool(args.workdir) == bool(args.task):
    raise SystemExit("validate: give exactly one of --workdir or --task")
  if args.workdir:
    res = validate_workdir(args.workdir, args.lexicon, args.entropy_model, args.top_frac)
    out = os.path.join(args.workdir, "roles_validation.json")
  else:
    task = _task_from_flag(args.task)
    lex_path = lexicon_path(args.lexicon or default_lexicon_name(task))
    texts = [t for _, t in reference_traces(task, args.traces, args.seed,
                                            correct_only=not args.all_responses)]
    res = {**validate_texts(task, texts, load_lexicon(lex_path)),
           "lexicon": os.path.abspath(lex_path), "task": task.name,
           "source": f"reference traces, seed {args.seed}"}
    out = args.out or "roles_validation.json"
    with open(out, "w") as f:
      json.dump(_finite(res), f, indent=1)
  keys = ("precision", "recall", "f1", "high_entropy_planning_frac")
  print(" ".join(f"{k}={res[k]:.3f}" for k in keys if k in res) + f" -> {out}")


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog="python -m rldyn.roles", description=__doc__.split("\n")[0])
  sub = parser.add_subparsers(dest="cmd", required=True)
  m = sub.add_parser("mine", help="mine a strategic-gram lexicon")
  m.add_argument("--samples", default="", help="JSONL file, samples/ dir or workdir")
  m.add_argument("--task", default="", help="mine reference traces of this synthetic task instead")
  m.add_argument("--traces", type=int, default=2000, help="reference traces to draw (--task)")
  m.add_argument("--seed", type=int, default=0, help="trace rng seed; k-means seed")
  m.add_argument("--field", default="response", help="JSONL field holding the text")
  m.add_argument("--all_responses", action="store_true", help="keep incorrect responses too")
  m.add_argument("--out", required=True, help="lexicon JSON to write")
  m.add_argument("--n_min", type=int, default=3)
  m.add_argument("--n_max", type=int, default=5)
  m.add_argument("--top_frac", type=float, default=0.2, help="fraction of groups kept, by CDF")
  m.add_argument("--min_df", type=int, default=2, help="least number of texts an n-gram is in")
  m.add_argument("--case_sensitive", action="store_true")
  m.add_argument("--number_placeholder", action="store_true", help="all-digit words match as <num>")
  m.set_defaults(fn=_cmd_mine)
  v = sub.add_parser("validate", help="lexicon roles vs structural roles")
  v.add_argument("--workdir", default="", help="run dir with samples/ and config.json")
  v.add_argument("--task", default="", help="validate on reference traces of this task instead")
  v.add_argument("--traces", type=int, default=1000)
  v.add_argument("--seed", type=int, default=1)
  v.add_argument("--all_responses", action="store_true", help="reference traces: keep wrong ones")
  v.add_argument("--out", default="", help="--task: where to write the JSON")
  v.add_argument("--lexicon", default="", help="lexicon path or shipped name (default: the task's)")
  v.add_argument("--entropy_model", default="base", choices=("base", "final", "none"))
  v.add_argument("--top_frac", type=float, default=0.2, help="high-entropy token fraction")
  v.set_defaults(fn=_cmd_validate)
  args = parser.parse_args(argv)
  args.fn(args)


if __name__ == "__main__":
  main()
