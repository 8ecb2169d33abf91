"""Tokenizers with character offsets: where each token of a response lies in its decoded text.

Roles are found on text (words, regex spans), then mapped back to tokens: a token is planning iff its
character span overlaps a planning character. Offsets come from the tokenizer, never from token-id
windows (which break under BPE). `text_tokenizer` wraps the synthetic tokenizer or a Hugging Face
`tokenizers.Tokenizer` (or loads a tokenizer.json path).

    tt = text_tokenizer(task.tokenizer)
    text, offsets = tt.text_and_offsets(ids)            # offsets int64 [T, 2]
    roles = roles_from_char_mask(offsets, planning_chars, tt.special_mask(ids))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from rldyn.roles.ids import EXECUTION, OTHER, PLANNING
from rldyn.tasks import tokenizer as synthetic_tokenizer


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
