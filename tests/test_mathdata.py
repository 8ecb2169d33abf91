"""Tests for the GSM8K/MATH/verl loaders and the GSM8K-path fixes in evalsets."""

import json
import pathlib
import sys

import pytest

from rldyn import tasks
from rldyn.tasks import base
from rldyn.tasks import evalsets
from rldyn.tasks import mathdata

DATA = pathlib.Path(__file__).parent / "data"
GSM8K = str(DATA / "gsm8k_test_sample.jsonl")
MATH = str(DATA / "math_train_sample.jsonl")


def _write(path, rows):
  path.write_text("".join(
      (r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
  return str(path)


def test_gsm8k_jsonl():
  problems = mathdata.load_problems(GSM8K)
  raw = [json.loads(line) for line in open(GSM8K, encoding="utf-8")]
  assert len(problems) == len(raw) == 24
  p, r = problems[0], raw[0]
  assert p.answer == "18"
  question = f"{r['question']} {mathdata.GSM8K_INSTRUCTION}"
  assert p.prompt == f"Question: {question}\nAnswer:"
  assert mathdata.chat_messages(p) == [{"role": "user", "content": question}]
  assert p.uid == base.make_uid("math", question)
  data = json.loads(p.data)
  assert (data["source"], data["solution"]) == ("gsm8k", r["answer"])
  assert all("," not in q.answer for q in problems)  # As verl writes them.
  assert all(mathdata.verify(q, json.loads(q.data)["solution"])
             for q in problems)
  assert not mathdata.verify(p, "#### 19")


def test_math_jsonl():
  problems = mathdata.load_problems(MATH)
  assert len(problems) == 28
  p = problems[0]
  assert p.prompt.endswith(f"{mathdata.MATH_INSTRUCTION}\nAnswer:")
  assert json.loads(p.data)["level"].startswith("Level")
  for q in problems:
    assert mathdata.verify(q, f"so the answer is $\\boxed{{{q.answer}}}$.")
    assert mathdata.extract_answer(f"\\boxed{{{q.answer}}}") == q.answer


def test_math_solution_with_boxed_answer(tmp_path):
  path = _write(tmp_path / "m.jsonl", [
      {"problem": "What is $1+1$?", "solution": "$1+1=\\boxed{2}$."}])
  (p,) = mathdata.load_problems(path, instruction="")
  assert (p.answer, p.prompt) == ("2", "Question: What is $1+1$?\nAnswer:")


def _verl_rows(path, split):
  """The rows verl's examples/data_preprocess/gsm8k.py writes."""
  rows = []
  for idx, line in enumerate(open(path, encoding="utf-8")):
    r = json.loads(line)
    ground_truth = r["answer"].rsplit("#### ", 1)[1].replace(",", "")
    rows.append({
        "data_source": "openai/gsm8k",
        "prompt": [{"role": "user", "content":
                    f"{r['question']} {mathdata.GSM8K_INSTRUCTION}"}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": ground_truth},
        "extra_info": {"split": split, "index": idx, "answer": r["answer"],
                       "question": r["question"]},
    })
  return rows


def test_verl_parquet_matches_jsonl(tmp_path):
  pa = pytest.importorskip("pyarrow")
  pq = pytest.importorskip("pyarrow.parquet")
  path = str(tmp_path / "test.parquet")
  pq.write_table(pa.Table.from_pylist(_verl_rows(GSM8K, "test")), path)
  from_parquet = mathdata.load_problems(path)
  from_jsonl = mathdata.load_problems(GSM8K)
  key = lambda ps: [(p.uid, p.prompt, p.answer) for p in ps]
  assert key(from_parquet) == key(from_jsonl)
  data = json.loads(from_parquet[0].data)
  assert (data["source"], data["split"], data["where"]) == (
      "openai/gsm8k", "test", "row 1")
  # The same rows as JSONL read the same way.
  jsonl = _write(tmp_path / "verl.jsonl", _verl_rows(GSM8K, "test"))
  assert key(mathdata.load_problems(jsonl)) == key(from_jsonl)


def test_parquet_without_pyarrow(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
  with pytest.raises(ImportError, match="needs pyarrow"):
    mathdata.load_problems(str(tmp_path / "x.parquet"))


def test_heldout_split_is_deterministic_and_disjoint(tmp_path):
  problems = mathdata.load_problems(GSM8K) + mathdata.load_problems(MATH)
  train, heldout = mathdata.split_heldout(problems)
  assert len(train) + len(heldout) == len(problems) == 52
  assert all(base.is_heldout(p) for p in heldout)
  assert not {p.uid for p in train} & {p.uid for p in heldout}
  shuffled = mathdata.split_heldout(problems[::-1])
  assert {p.uid for p in heldout} == {p.uid for p in shuffled[1]}
  # The file's own test split: training problems in it are dropped.
  both = _write(tmp_path / "train.jsonl",
                [line.strip() for line in open(GSM8K, encoding="utf-8")][:10])
  train, heldout = mathdata.load_splits(both, GSM8K)
  assert (len(train), len(heldout)) == (0, 24)
  train, heldout = mathdata.load_splits(GSM8K)
  assert len(train) + len(heldout) == 24 and all(map(base.is_heldout, heldout))


@pytest.mark.parametrize("line,match", [
    ("{not json", r"x.jsonl:2: invalid JSON"),
    ("[1, 2]", r"x.jsonl:2: a row of unknown layout \(list\); valid: verl"),
    ({"q": "x"}, r"x.jsonl:2: a row of unknown layout \(\['q'\]\)"),
    ({"question": "x", "answer": None}, r"x.jsonl:2: 'answer' must be a string"),
    ({"question": "x", "answer": "no marker"}, r"x.jsonl:2: .*'#### <answer>'"),
    ({"problem": "x", "answer": ""}, r"x.jsonl:2: 'answer' is empty"),
    ({"problem": "x", "solution": "no box"}, r"x.jsonl:2: .*\\boxed\{\}"),
    ({"prompt": "x", "reward_model": {"ground_truth": "1"}},
     r"x.jsonl:2: 'prompt' must be a list"),
    ({"question": "What is 1+1?", "answer": "#### 3"},
     r"x.jsonl:2: the question of 1 again, with answer '3' instead of '2'"),
])
def test_bad_rows_name_file_and_line(tmp_path, line, match):
  path = _write(tmp_path / "x.jsonl",
                [{"question": "What is 1+1?", "answer": "#### 2"}, line])
  with pytest.raises(ValueError, match=match):
    mathdata.load_problems(path)
  if "again" not in match:
    assert len(mathdata.load_problems(path, skip_invalid=True)) == 1


def test_unknown_file_type():
  with pytest.raises(ValueError, match=r"unknown file type '.csv'; valid: "
                     r"\['.jsonl', '.parquet'\]"):
    mathdata.load_problems("problems.csv")


def test_repeated_question_with_same_answer_is_kept_once(tmp_path):
  row = {"question": "What is 1+1?", "answer": "#### 2"}
  assert len(mathdata.load_problems(_write(tmp_path / "d.jsonl",
                                           [row, row]))) == 1


# The GSM8K path in evalsets (verify_numeric, load_jsonl): each case failed
# before the fix.


@pytest.mark.parametrize("answer,response,expected", [
    ("5", "1e5", False),  # Was read as the numbers 1 and 5.
    ("100000", "#### 1e5", True),
    ("5", "1e99999999999", False),
    # A 10k-character cut inside 12345 left 345.
    ("345", "12345 " + "a" * 9_996, False),
    ("12345", "12345 " + "a" * 9_996, True),
    # A cut that dropped the '####' marker read the last number instead.
    ("7", "#### 8\n" + "step 7 " * 2_000, False),
    ("8", "#### 8\n" + "step 7 " * 2_000, True),
    ("0.5", "#### .5", True),  # '.5' was read as 5.
    ("0.5", "so it is .5", True),
    ("1,001", "1,0010", False),  # Commas only in groups of three.
    ("15", "v1.5", False),
    ("7", "####", False),
    ("7", "9" * 1_000, False),
])
def test_verify_numeric(answer, response, expected):
  assert evalsets.verify_numeric(answer, response) is expected


@pytest.mark.parametrize("line,match", [
    ("{not json", r"g.jsonl:2: invalid JSON"),  # Was a bare JSONDecodeError.
    ("5", r"g.jsonl:2: a line must be a JSON object, got int"),  # TypeError.
    ("[1, 2]", r"g.jsonl:2: a line must be a JSON object, got list"),
    ('{"question": "q", "answer": null}', r"g.jsonl:2: 'answer' must be text"),
    ('{"question": null, "answer": "1"}', r"g.jsonl:2: 'question' must be text"),
    ('{"question": "q", "answer": "#### "}', r"g.jsonl:2: no answer after"),
])
def test_load_jsonl_bad_lines(tmp_path, line, match):
  path = _write(tmp_path / "g.jsonl", ['{"question": "q0", "answer": "1"}', line])
  with pytest.raises(ValueError, match=match):
    evalsets.load_jsonl(path)


def test_load_jsonl_number_answer(tmp_path):
  path = _write(tmp_path / "n.jsonl", [{"question": "3 + 4?", "answer": 7}])
  (p,) = evalsets.load_jsonl(path)
  assert p.answer == "7"
  assert evalsets.verify_numeric(p.answer, "#### 7")


def test_exported():
  assert tasks.verify_math("#### 7", "7")
