"""Word-level tokenizer shared by every synthetic task.

The vocabulary is fixed (33 tokens): three specials, the ten digits, the
operators `+ - * / = ( )`, the separators `, : ;` and the keywords of the trace
languages. Numbers are written digit by digit, so "15" is two tokens.

Canonical text separates tokens by single spaces, except consecutive digits,
which are adjacent: "try 5 * 3 = 15". Because digit tokens carry no number
boundary, two numbers are never adjacent in the trace languages (lists use
","). `decode` joins every id sequence the same way, so for ANY ids without
specials, `encode(decode(ids)) == ids`; for canonical text,
`decode(encode(text)) == text`.

`encode` also accepts non-canonical spacing ("(3+4)*5", runs of whitespace):
letters group into keywords, every other character is its own token.
"""

from collections.abc import Sequence
import string

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
SPECIALS = (PAD, BOS, EOS)
DIGITS = tuple(string.digits)
OPERATORS = ("+", "-", "*", "/", "=", "(", ")")
SEPARATORS = (",", ":", ";")
# Countdown: target, try, left, goal, no, back, fail, answer.
# Arithmetic: eval, then, answer.
KEYWORDS = ("target", "try", "left", "goal", "no", "back", "fail", "answer",
            "eval", "then")
VOCAB = SPECIALS + DIGITS + OPERATORS + SEPARATORS + KEYWORDS


class Tokenizer:
  """Deterministic word-level tokenizer over `VOCAB`."""

  def __init__(self, vocab: Sequence[str] = VOCAB):
    if tuple(vocab[:3]) != SPECIALS or len(set(vocab)) != len(vocab):
      raise ValueError(f"vocab must start with {SPECIALS} and be unique")
    self._id_to_token = tuple(vocab)
    self._token_to_id = {t: i for i, t in enumerate(vocab)}
    self._digit_ids = frozenset(self._token_to_id[d] for d in DIGITS)

  @property
  def vocab_size(self) -> int:
    return len(self._id_to_token)

  @property
  def pad_id(self) -> int:
    return self._token_to_id[PAD]

  @property
  def bos_id(self) -> int:
    return self._token_to_id[BOS]

  @property
  def eos_id(self) -> int:
    return self._token_to_id[EOS]

  @property
  def vocab(self) -> tuple[str, ...]:
    return self._id_to_token

  def token_to_id(self, token: str) -> int:
    try:
      return self._token_to_id[token]
    except KeyError:
      raise ValueError(f"unknown token {token!r}") from None

  def id_to_token(self, token_id: int) -> str:
    if not 0 <= token_id < self.vocab_size:
      raise ValueError(
          f"token id {token_id} out of range [0, {self.vocab_size})")
    return self._id_to_token[token_id]

  def is_digit(self, token_id: int) -> bool:
    return token_id in self._digit_ids

  def encode_with_offsets(
      self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids and the [start, end) character span of each token."""
    ids, offsets = [], []
    i, n = 0, len(text)
    while i < n:
      c = text[i]
      if c.isspace():
        i += 1
        continue
      if "a" <= c <= "z":
        j = i
        while j < n and "a" <= text[j] <= "z":
          j += 1
      else:
        j = i + 1
      word = text[i:j]
      token_id = self._token_to_id.get(word)
      if token_id is None:
        raise ValueError(
            f"cannot tokenize {word!r} at offset {i} of {text[:80]!r}: not in "
            f"the synthetic vocabulary {VOCAB[3:]}")
      ids.append(token_id)
      offsets.append((i, j))
      i = j
    return ids, offsets

  def encode(self, text: str) -> list[int]:
    """Token ids of `text` (no bos/eos added)."""
    return self.encode_with_offsets(text)[0]

  def decode(self, ids: Sequence[int]) -> str:
    """Canonical text of `ids`; pad, bos and eos are skipped."""
    parts = []
    prev_digit = False
    for token_id in ids:
      token_id = int(token_id)
      token = self.id_to_token(token_id)
      if token in SPECIALS:
        continue
      digit = token_id in self._digit_ids
      if parts and not (digit and prev_digit):
        parts.append(" ")
      parts.append(token)
      prev_digit = digit
    return "".join(parts)


TOKENIZER = Tokenizer()
