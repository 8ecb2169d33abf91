"""Tests for the synthetic-language tokenizer."""

import numpy as np
import pytest

from rldyn.tasks import tokenizer as tokenizer_lib

TOK = tokenizer_lib.TOKENIZER
CANONICAL = [
    "3 , 5 , 17 target 22 :",
    "try 5 * 3 = 15 left 15 , 7 try 15 + 7 = 22 goal answer ( 5 * 3 ) + 7",
    "try 12 / 4 = 3 no back fail",
    "eval ( 3 + 4 ) * 5 - 6 :",
    "3 + 4 = 7 then 7 * 5 - 6 ; 7 * 5 = 35 then 35 - 6 ; 35 - 6 = 29 answer 29",
]


def test_vocab_layout():
  assert TOK.vocab_size == len(tokenizer_lib.VOCAB) < 64
  assert (TOK.pad_id, TOK.bos_id, TOK.eos_id) == (0, 1, 2)
  for i in range(TOK.vocab_size):
    assert TOK.token_to_id(TOK.id_to_token(i)) == i


@pytest.mark.parametrize("text", CANONICAL)
def test_round_trip_and_offsets(text):
  ids, offsets = TOK.encode_with_offsets(text)
  assert TOK.decode(ids) == text
  assert ids == TOK.encode(text)
  assert [text[a:b] for a, b in offsets] == [TOK.id_to_token(i) for i in ids]
  assert all(b1 <= a2 for (_, b1), (a2, _) in zip(offsets, offsets[1:]))


def test_numbers_are_digit_tokens():
  assert [TOK.id_to_token(i) for i in TOK.encode("= 15")] == ["=", "1", "5"]
  assert TOK.decode([TOK.token_to_id("1"), TOK.token_to_id("2")]) == "12"


def test_non_canonical_spacing():
  assert TOK.encode("(3+4)*5") == TOK.encode("( 3 + 4 ) * 5")
  assert TOK.encode("  try\t5  *3") == TOK.encode("try 5 * 3")


def test_decode_skips_specials():
  ids = [TOK.bos_id] + TOK.encode("try 1 + 2") + [TOK.eos_id, TOK.pad_id]
  assert TOK.decode(ids) == "try 1 + 2"


@pytest.mark.parametrize("text", ["try 5 % 3", "TRY 5", "foo 1", "<bos> 1",
                                  "é"])
def test_unknown_characters_raise(text):
  with pytest.raises(ValueError, match="cannot tokenize"):
    TOK.encode(text)


def test_decode_rejects_out_of_range_ids():
  with pytest.raises(ValueError, match="out of range"):
    TOK.decode([TOK.vocab_size])


def test_arbitrary_ids_reencode_identically():
  rng = np.random.default_rng(0)
  for _ in range(500):
    ids = rng.integers(3, TOK.vocab_size, rng.integers(0, 40)).tolist()
    assert TOK.encode(TOK.decode(ids)) == ids
