"""Words: how text is split and normalised before strategic grams are matched or mined.

Text is split into words by `\\w+(?:'\\w+)*|[^\\w\\s]`: runs of letters/digits (with inner apostrophes,
"let's") and single punctuation marks, so "but wait, let me check" has the words
`but wait , let me check`. In the synthetic countdown language this is exactly its whitespace split
("try 11 - 9 = 2" -> try 11 - 9 = 2): a number is one word though it is several digit tokens. Matching
is case-insensitive by default; a lexicon may also replace every all-digit word by `<num>`
(`mine --number_placeholder`), so "try <num> * <num>" matches any operands.
"""

from __future__ import annotations

import dataclasses
import re

NUM = "<num>"  # What an all-digit word becomes in a lexicon with number_placeholder.
WORD_RE = re.compile(r"\w+(?:'\w+)*|[^\w\s]")
NGRAM_WORD_RE = re.compile(re.escape(NUM) + r"|\w+(?:'\w+)*|[^\w\s]")
APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'"})  # 1:1, so offsets are unchanged.


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
  for m in WORD_RE.finditer(text.translate(APOSTROPHES)):
    words.append(opts.norm(m.group()))
    spans.append(m.span())
  return words, spans


def ngram_words(ngram: str, opts: MatchOptions = MatchOptions()) -> tuple[str, ...]:
  """A lexicon n-gram string as a tuple of normalised words (`<num>` stays a placeholder)."""
  return tuple(w if w == NUM else opts.norm(w)
               for w in NGRAM_WORD_RE.findall(ngram.translate(APOSTROPHES)))
