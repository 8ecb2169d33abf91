"""Finding strategic grams in text: occurrences, per-text group uses, planning semantic entropy.

    matcher = Matcher(load_lexicon("math_en"))
    matcher.char_mask(text)                             # bool [len(text)]: inside a matched n-gram
    semantic_entropy(group_uses(texts, matcher))        # planning diversity of a step (docs/metrics.md)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
import dataclasses

import numpy as np

from rldyn.metrics.entropy import semantic_entropy
from rldyn.roles.lexicon import Lexicon
from rldyn.roles.words import APOSTROPHES, NUM, WORD_RE, ngram_words


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
    t = text.translate(APOSTROPHES)
    per_word = False
    if not self.lexicon.match.case_sensitive:
      low = t.lower()
      per_word = len(low) != len(t)  # rare characters whose lower case is longer
      t = t if per_word else low
    spans = [m.span() for m in WORD_RE.finditer(t)]
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
      w = texts[text_of[j]][span[j, 0]:span[j, 1]].translate(APOSTROPHES)
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


def as_matcher(lexicon: Lexicon | Matcher) -> Matcher:
  return lexicon if isinstance(lexicon, Matcher) else Matcher(lexicon)


def group_uses(texts: Iterable[str], lexicon: Lexicon | Matcher) -> list[str]:
  """Group ids of every strategic-gram occurrence in `texts` (leftmost-longest, non-overlapping).

  `semantic_entropy(group_uses(texts, lexicon))` is the step's semantic entropy of planning.
  """
  return [g for uses in as_matcher(lexicon).uses_batch(list(texts)) for g in uses]


def planning_semantic_entropy(texts: Iterable[str], lexicon: Lexicon | Matcher) -> float:
  return semantic_entropy(group_uses(texts, lexicon))
