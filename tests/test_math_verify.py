"""Tests for the math verifier (rldyn.tasks.verify_math and math_grader)."""

import json
import pathlib
import re
import statistics
import sys
import threading
import time

import pytest

from rldyn import tasks
from rldyn.tasks import math_grader

DATA = pathlib.Path(__file__).parent / "data"
needs_sympy = pytest.mark.skipif(
    __import__("importlib").util.find_spec("math_verify") is None,
    reason="math-verify not installed")


def _rows(name):
  return [json.loads(line) for line in (DATA / name).open(encoding="utf-8")]


def _perturb(answer):
  """`answer` with its last digit changed (a different answer), or None."""
  digits = list(re.finditer(r"\d", answer))
  if not digits:
    return None
  k = digits[-1].start()
  return answer[:k] + str((int(answer[k]) + 1) % 10) + answer[k + 1:]


@pytest.mark.parametrize("text,expected", [
    ("so $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
    ("\\boxed{1} then \\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # The last box.
    ("\\fbox{7}", "7"),
    ("hence \\boxed 5.", "5"),
    ("3 + 4 = 7\n#### 7", "7"),
    ("#### 8\nbut 9", "8"),
    ("The answer is 42. Next, we", "42"),
    ("Final Answer: The final answer is $18$. I hope it is correct.", "18"),
    ("ANSWER: \\(x+1\\)", "x+1"),
    ("0.5", "0.5"),  # A short unmarked response is its own answer.
    ("an explanation that ends without any marker at all, 5 apples then 6", None),
    ("\\boxed{12", None),  # Truncated inside the box.
    ("####", None),
    ("#### " + "9" * 2000, None),  # Longer than any answer.
    ("\\boxed{" * 1000, None),
])
def test_extract_answer(text, expected):
  assert math_grader.extract_answer(text) == expected


@pytest.mark.parametrize("response,reference", [
    ("0.5", "\\frac{1}{2}"),
    ("\\boxed{\\dfrac{1}{2}}", "\\frac12"),
    ("\\boxed{\\tfrac 1 2}", "0.50"),
    ("\\boxed{.5}", "0.5"),
    ("\\boxed{-\\frac{33}{2}}", "k = \\frac{-33}{2}"),
    ("\\boxed{1,000}", "1000"),
    ("\\boxed{2,\\!880}", "2880"),
    ("\\boxed{1e3}", "1000"),
    ("\\boxed{2.5\\times10^{3}}", "2500"),
    ("\\boxed{50}", "50\\%"),
    ("\\boxed{73}", "73^\\circ"),
    ("\\boxed{4}", "4 \\text{ feet}"),
    ("\\boxed{\\$18}", "18"),
    ("\\boxed{2 \\pi r}", "2\\pi r"),
    ("\\boxed{\\left( 3, -1 \\right)}", "(3, -1)"),
    ("\\boxed{3,-1}", "(3, -1)"),
    ("\\boxed{\\{7, 4, 5\\}}", "\\{4,5,7\\}"),
    ("\\boxed{4, 2, 3}", "2, 3, \\text{ and } 4"),
    ("\\boxed{(-\\infty, -27) \\cup (-27, \\infty)}",
     "(-\\infty,-27)\\cup(-27,\\infty)"),
    ("\\boxed{[1, \\infty)}", "[1,\\infty)"),
    ("\\boxed{\\begin{pmatrix} 4 \\\\ -3 \\end{pmatrix}}",
     "\\begin{pmatrix}4\\\\-3\\end{pmatrix}"),
    ("\\boxed{Friday}", "\\text{Friday}"),
    ("\\boxed{E}", "\\text{(E)}"),
    ("\\boxed{12_{5}}", "12_5"),
    ("\\boxed{y = -2x + 1}", "y=-2x+1"),
])
def test_equivalent_without_sympy(response, reference, monkeypatch):
  monkeypatch.setattr(math_grader._WORKER, "equal", _no_sympy)
  assert tasks.verify_math(response, reference)


def _no_sympy(**kwargs):
  raise AssertionError(f"sympy consulted for {kwargs}")


@pytest.mark.parametrize("response,reference", [
    ("1e5", "5"),
    ("\\boxed{0.333}", "\\frac{1}{3}"),  # Numbers compare exactly.
    ("\\boxed{(1, 2]}", "(1, 2)"),
    ("\\boxed{(2, 1)}", "(1, 2)"),  # Tuples are ordered,
    ("\\boxed{3, 2}", "2, 3, \\text{ and } 4"),  # lists complete.
    ("\\boxed{12_6}", "12_5"),
    ("\\boxed{-37_9}", "-37_8"),
    ("\\boxed{CBDA}", "\\text{CBAD}"),  # Not a product of symbols.
    ("\\boxed{5}", "0"),
    ("\\boxed{}", "0"),
    ("the answer is", "0"),
    ("\\boxed{1}", ""),
])
def test_different_without_sympy(response, reference, monkeypatch):
  monkeypatch.setattr(math_grader._WORKER, "equal", _no_sympy)
  assert not tasks.verify_math(response, reference)


@needs_sympy
@pytest.mark.parametrize("response,reference,expected", [
    ("\\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{1}{\\sqrt{2}}", True),
    ("\\boxed{\\pi \\cdot 2}", "2\\pi", True),
    ("\\boxed{(x+1)^2}", "x^2+2x+1", True),
    ("\\boxed{\\frac{\\sqrt5+1}{2}}", "\\frac{1 + \\sqrt{5}}{2}", True),
    ("\\boxed{(x+1)^2}", "x^2+2x+2", False),
    # math-verify alone calls these equal (it chops |a - b| < 1e-15).
    ("\\boxed{\\frac{1}{2^{99}}}", "\\frac{1}{2^{98}}", False),
])
def test_symbolic(response, reference, expected):
  assert tasks.verify_math(response, reference) is expected


@needs_sympy
def test_unbalanced_braces_do_not_escape_the_box():
  # Sent as `\boxed{1}+x{}`, math-verify would read the answer 1.
  assert math_grader.answers_equal("1}+x{", "1") is False
  assert math_grader.answers_equal("1}", "1") is False


def test_gsm8k_sample_solutions_score_one_and_perturbed_zero():
  rows = _rows("gsm8k_test_sample.jsonl")
  assert len(rows) == 24
  for row in rows:
    answer = row["answer"].rsplit("####", 1)[1].strip()
    assert tasks.verify_math(row["answer"], answer)
    assert tasks.verify_math(f"The answer is {answer}.", row["answer"])
    wrong = _perturb(answer)
    body = row["answer"].rsplit("####", 1)[0]
    assert not tasks.verify_math(f"{body}#### {wrong}", answer)


@needs_sympy
def test_math_sample_boxed_rewritten_and_perturbed():
  rows = _rows("math_train_sample.jsonl")
  assert len(rows) == 28
  for row in rows:
    ref = row["answer"]
    assert tasks.verify_math(f"So $\\boxed{{{ref}}}$.", ref), ref
    spaced = " ".join(re.sub(r"(?<!\\)([{}])", r" \1 ", ref).split())
    for rewrite in (ref.replace("\\frac", "\\dfrac"), spaced):
      assert tasks.verify_math(f"\\boxed{{{rewrite}}}", ref), (rewrite, ref)
    wrong = _perturb(ref)
    if wrong is not None:
      assert not tasks.verify_math(f"\\boxed{{{wrong}}}", ref), (wrong, ref)


MB = 1 << 20
HOSTILE = [
    "\\boxed{9^{9^{9^{9}}}}",
    "\\boxed{10^{100000}}",
    "\\boxed{(((9^{999})^{999})^{999})}",
    "\\boxed{100000!}",
    "\\boxed{(10^{9})!}",
    "\\boxed{\\binom{10^{8}}{5\\cdot 10^{7}}}",
    "\\boxed{" + "9" * 100_000 + "}",
    "#### " + "9" * 100_000,
    "The answer is " + "9" * 100_000,
    "\\boxed{1e999999999}",
    "1" * MB,
    "\\boxed{" * (MB // 7),
    "a" * MB + " The answer is 5",
    "answer is " * (MB // 10),
    "\\boxed{" + "{" * 100_000 + "1" + "}" * 100_000 + "}",
    "\\boxed{" + "(" * 20 + "x" + ")" * 20 + "}",
    "\\boxed{" + "\\sqrt{" * 200 + "2" + "}" * 200 + "}",
    "\\boxed{" + ",".join(["1"] * 5000) + "}",
    "\\boxed{__import__('os').system('exit 1')}",
]


@needs_sympy
def test_hostile_answers_score_zero_within_the_limit():
  limit = 0.5
  tasks.verify_math("\\boxed{\\sqrt{8}}", "2\\sqrt{2}")  # Start the worker.
  for response in HOSTILE:
    for reference in ("1", "\\sqrt{2}"):
      start = time.monotonic()
      assert not tasks.verify_math(response, reference, timeout_s=limit)
      assert time.monotonic() - start < limit + 2.0, response[:40]  # bounded (a hang would be minutes)
  assert tasks.verify_math("\\boxed{\\sqrt{8}}", "2\\sqrt{3}") is False


def test_never_evaluates(tmp_path):
  marker = tmp_path / "pwned"
  code = f"__import__('os').system('touch {marker}')"
  for response in (f"\\boxed{{{code}}}", f"The answer is {code}", code):
    try:
      tasks.verify_math(response, "0")
    except ImportError:
      pass  # No symbolic engine here: nothing could run it anyway.
  assert not marker.exists()


def test_plain_numbers_are_fast(monkeypatch):
  monkeypatch.setattr(math_grader._WORKER, "equal", _no_sympy)
  rows = _rows("gsm8k_test_sample.jsonl")
  times = []
  for _ in range(5):
    for row in rows:
      start = time.perf_counter()
      answer = row["answer"].rsplit("####", 1)[1]
      assert not tasks.verify_math(f"... so #### {_perturb(answer)}",
                                   row["answer"])
      times.append(time.perf_counter() - start)
  assert statistics.median(times) < 5e-3  # the exact pure-Python path, no sympy (loose: shared CPUs)


_HANGS = "import sys; print('{\"ready\": true}', flush=True); sys.stdin.readline(); import time; time.sleep(60)"


def test_late_worker_is_killed_and_restarted():
  worker = math_grader._SymbolicWorker([sys.executable, "-c", _HANGS])
  try:
    start = time.monotonic()
    assert worker.equal(gold="1", pred="1", timeout_s=0.3) is False
    assert time.monotonic() - start < 3.0  # killed at the limit, not left to sleep 60 s
    assert (worker.timeouts, worker.restarts) == (1, 1)
    assert worker._proc is None
    assert worker.equal(gold="1", pred="1", timeout_s=0.1) is False
    assert worker.restarts == 2
  finally:
    worker.stop()


@needs_sympy
def test_symbolic_from_a_thread():
  # math-verify's own timeouts use signal.alarm and fail off the main thread.
  results = []
  thread = threading.Thread(target=lambda: results.append(
      tasks.verify_math("\\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{1}{\\sqrt2}")))
  thread.start()
  thread.join(30)
  assert results == [True]


def test_bad_types():
  with pytest.raises(TypeError, match="two str"):
    tasks.verify_math(None, "1")
