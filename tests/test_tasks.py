"""Tests for the synthetic tasks: generators, verifiers, traces and roles."""

from fractions import Fraction
import json
import re
import time

import numpy as np
import pytest

from rldyn import tasks
from rldyn.tasks import base
from rldyn.tasks import countdown
from rldyn.tasks import expr as expr_lib

TOK = tasks.TOKENIZER
_TRY = re.compile(r"try (\d+) ([-+*/]) (\d+) = (\d+)")
_STEP = re.compile(r"(\d+) ([-+*]) (\d+) = (\d+)")


def _samples(task, n, seed=0):
  rng = np.random.default_rng(seed)
  for _ in range(n):
    problem = task.sample_problem(rng)
    yield problem, task.reference_trace(problem, rng)


def _error_fraction(pattern, traces):
  steps = [m.groups() for t in traces for m in pattern.finditer(t)]
  wrong = [expr_lib.apply(op, int(a), int(b)) != int(r)
           for a, op, b, r in steps]
  return np.mean(wrong), len(wrong)


# Registry and configs.


# Tasks that generate their own problems (text tasks need data and tokenizer files: tests/test_textmath.py).
SYNTHETIC = sorted(n for n, c in tasks.TASKS.items() if c.has_role_truth)


def test_unknown_task_names_valid_choices():
  with pytest.raises(ValueError, match=r"arithmetic.*countdown"):
    tasks.make_task("sudoku")


def test_unknown_config_key_names_valid_keys():
  with pytest.raises(ValueError, match=r"bogus.*valid:.*num_count"):
    tasks.make_task("countdown", bogus=1)
  with pytest.raises(ValueError, match=r"valid:.*num_ops"):
    tasks.make_task("arithmetic", num_count=3)


def test_config_validation():
  with pytest.raises(ValueError, match="num_count"):
    tasks.CountdownConfig(num_count=6)
  with pytest.raises(ValueError, match=r"valid: \['dfs', 'greedy', 'random'\]"):
    tasks.CountdownConfig(strategy_mix=(("bfs", 1.0),))
  with pytest.raises(ValueError, match="ops"):
    tasks.ArithmeticConfig(ops="+/")
  mix = tasks.CountdownConfig(strategy_mix={"dfs": 1, "greedy": 3}).strategy_mix
  assert mix == (("dfs", 1.0), ("greedy", 3.0))


@pytest.mark.parametrize("name", SYNTHETIC)
def test_deterministic_and_serialisable(name):
  task = tasks.make_task(name)
  a, b = list(_samples(task, 20, seed=3)), list(_samples(task, 20, seed=3))
  assert a == b
  for problem, _ in a:
    assert task.problem_from_dict(task.problem_to_dict(problem)) == problem
    assert problem.prompt.endswith(":")
  with pytest.raises(ValueError, match="exactly the keys"):
    task.problem_from_dict({"uid": "x"})


@pytest.mark.parametrize("name", SYNTHETIC)
def test_training_sampling_skips_heldout(name):
  task = tasks.make_task(name)
  rng = np.random.default_rng(0)
  assert not any(base.is_heldout(task.sample_problem(rng)) for _ in range(300))
  assert all(base.is_heldout(task.sample_problem(rng, heldout=True))
             for _ in range(30))


# Countdown.


@pytest.mark.parametrize("num_count", [2, 3, 4, 5])
def test_countdown_reference_solutions_verify(num_count):
  task = tasks.make_task("countdown", num_count=num_count, error_rate=0.0,
                         budget=40)
  answered = 0
  for problem, trace in _samples(task, 300 if num_count == 3 else 60):
    data = json.loads(problem.data)
    assert len(data["numbers"]) == num_count
    assert 1 <= data["target"] <= task.config.max_target
    assert task.verify(problem, "answer " + problem.answer)
    assert trace.endswith("fail") or "answer" in trace
    if "answer" in trace:
      answered += 1
      assert task.verify(problem, trace), trace
      assert task.extract_answer(trace) is not None
  assert answered > 0


def test_countdown_default_success_rate():
  task = tasks.make_task("countdown")
  ok = [task.verify(p, t) for p, t in _samples(task, 400)]
  assert 0.65 <= np.mean(ok) <= 0.85


def test_countdown_verifier_rejects_corruptions():
  task = tasks.make_task("countdown")
  problem = task.make_problem([3, 5, 7], 22, "( 5 * 3 ) + 7")
  assert task.verify(problem, "try 5 * 3 = 15 goal answer 5 * 3 + 7")
  assert task.verify(problem, "answer (7 + (3*5))")
  bad = [
      "answer ( 5 * 3 ) + 8",  # Wrong number.
      "answer ( 5 * 3 ) + 7 + 7 - 7",  # Reused number.
      "answer 5 * 3 + 7 - 0",  # Extra number.
      "answer 3 * 7 + 1",  # Missing number, wrong target.
      "answer ( 5 + 3 ) * 7",  # Right numbers, wrong target.
      "answer 7 / ( 5 - 5 ) + 3",  # Division by zero (and reuse).
      "answer ( 5 * 3 + 7",  # Unbalanced.
      "answer 5 * 3 + 7 fail",  # Trailing garbage.
      "try 5 * 3 = 15 goal",  # No answer.
      "fail",
      "",
      "answer",
      "answer -5 * -3 + 7",  # No unary minus.
      "answer 5 ** 3",
      "answer 5 * 3 + 7 ; import os",
  ]
  for response in bad:
    assert not task.verify(problem, response), response
  assert task.extract_answer("fail") is None
  assert task.extract_answer("answer 5 * 3 + 7") == "( 5 * 3 ) + 7"


def test_countdown_verifier_bounded_on_huge_inputs():
  task = tasks.make_task("countdown")
  problem = task.make_problem([3, 5, 7], 22)
  huge = [
      "answer " + "9" * 100_000,
      "answer " + "( " * 50_000 + "3" + " )" * 50_000,
      "answer " + " + ".join(["3"] * 50_000),
      "answer " + "9" * 6 + " * 9" * 10,
      "try " * 100_000 + "answer 5 * 3 + 7",
  ]
  start = time.perf_counter()
  results = [task.verify(problem, r) for r in huge]
  assert time.perf_counter() - start < 5.0  # bounded work per completion (a blow-up would be minutes)
  assert results == [False, False, False, False, True]


def test_countdown_error_injection_rate():
  clean = tasks.make_task("countdown", error_rate=0.0)
  assert _error_fraction(_TRY, [t for _, t in _samples(clean, 100)])[0] == 0
  noisy = tasks.make_task("countdown", error_rate=0.3)
  rate, n = _error_fraction(_TRY, [t for _, t in _samples(noisy, 400)])
  assert n > 2000
  assert abs(rate - 0.3) < 0.03


def test_countdown_errors_propagate():
  # A wrong result is what the next move works with: the `left` list repeats
  # the written result, so some traces claim `goal` for a false answer.
  task = tasks.make_task("countdown", error_rate=0.3)
  false_goals = 0
  for problem, trace in _samples(task, 300):
    for m in re.finditer(r"= (\d+) left (\d+)", trace):
      assert m.group(1) == m.group(2)
    if "goal" in trace and not task.verify(problem, trace):
      false_goals += 1
  assert false_goals > 10


def test_countdown_budget_caps_tries():
  task = tasks.make_task("countdown", budget=3)
  for _, trace in _samples(task, 100):
    assert trace.count("try") <= 3


def test_countdown_long_budget_share():
  """A share long_budget_rate of traces searches up to long_budget tries; rate 0 leaves the stream alone."""
  task = tasks.make_task("countdown", budget=3, long_budget=7, long_budget_rate=0.3)
  tries = np.array([t.count("try") for _, t in _samples(task, 2000)])
  assert tries.max() == 7 and (tries <= 7).all()
  # Traces that stop at 3 tries (budget or solved) vs those that ran past: the share reaching try 4 is
  # at most the long share, and near it (most 3-try searches are not done after 3 tries).
  assert 0.15 < (tries > 3).mean() <= 0.33
  plain = [t for _, t in _samples(tasks.make_task("countdown", budget=3), 50)]
  off = [t for _, t in _samples(tasks.make_task("countdown", budget=3, long_budget=7), 50)]
  assert off == plain
  with pytest.raises(ValueError, match="long_budget must exceed budget"):
    tasks.make_task("countdown", budget=8, long_budget=8, long_budget_rate=0.3)
  with pytest.raises(ValueError, match="long_budget_rate must be in"):
    tasks.make_task("countdown", long_budget=20, long_budget_rate=1.5)


def test_countdown_roles():
  task = tasks.make_task("countdown")
  for _, trace in _samples(task, 100):
    ids, offsets = TOK.encode_with_offsets(trace)
    roles = task.token_roles(ids)
    assert roles.dtype == np.int8 and roles.shape == (len(ids),)
    assert set(roles.tolist()) <= {base.OTHER, base.PLANNING, base.EXECUTION}
    assert (roles == base.PLANNING).any() and (roles == base.EXECUTION).any()
    # Each `try` choice (operands, operator) is planning; `=` and the
    # result are execution.
    for m in _TRY.finditer(trace):
      span = [k for k, (a, b) in enumerate(offsets)
              if m.start() <= a and b <= m.end()]
      choice = [k for k in span if offsets[k][1] <= m.start(4) - 2]
      rest = [k for k in span if k not in choice]
      assert all(roles[k] == base.PLANNING for k in choice)
      assert all(roles[k] == base.EXECUTION for k in rest)
    for k, token_id in enumerate(ids):
      token = TOK.id_to_token(token_id)
      if token in ("try", "back", "goal", "no", "fail"):
        assert roles[k] == base.PLANNING
      elif token == "answer":
        assert roles[k] == base.OTHER


def test_countdown_echo_target():
  # With echo_target every last move restates the target before its verdict; nothing else changes (the
  # same random draws give the same search, the same verdicts and the same answer).
  plain = tasks.make_task("countdown")
  echo = tasks.make_task("countdown", echo_target=True)
  finals = 0
  for seed in range(60):
    rng_p, rng_e = np.random.default_rng(seed), np.random.default_rng(seed)
    problem = plain.sample_problem(rng_p)
    assert echo.sample_problem(rng_e) == problem
    target = json.loads(problem.data)["target"]
    t_plain, t_echo = plain.reference_trace(problem, rng_p), echo.reference_trace(problem, rng_e)
    assert t_echo.replace(f" target {target} ", " ") == t_plain
    verdicts = re.findall(r"= \d+ target (\d+) (goal|no)", t_echo)
    assert len(verdicts) == t_plain.count(" goal") + t_plain.count(" no")
    assert all(int(t) == target for t, _ in verdicts)
    finals += len(verdicts)
    assert echo.verify(problem, t_echo) == plain.verify(problem, t_plain)
    ids = TOK.encode(t_echo)
    roles = echo.token_roles(ids)
    for k, token_id in enumerate(ids):  # the restated target is copied content: `target` other, digits execution
      if TOK.id_to_token(token_id) == "target":
        assert roles[k] == base.OTHER and roles[k + 1] == base.EXECUTION
  assert finals > 100


def test_countdown_docstring_example():
  task = tasks.make_task("countdown")
  rng = np.random.default_rng(11)
  problem = task.sample_problem(rng)
  trace = task.reference_trace(problem, rng)
  ids = TOK.encode(trace)
  rendered = base.render_roles(TOK, ids, task.token_roles(ids), width=72)
  block = "\n".join("    " + line for line in
                    [problem.prompt] + rendered.split("\n"))
  assert block in countdown.__doc__


# Arithmetic.


def test_arithmetic_reference_solutions_verify():
  task = tasks.make_task("arithmetic", error_rate=0.0, num_ops=4)
  for problem, trace in _samples(task, 300):
    data = json.loads(problem.data)
    assert task.verify(problem, trace), trace
    assert trace.count("=") == 4
    assert expr_lib.evaluate(expr_lib.parse(data["expression"])) == Fraction(
        data["value"])
    assert task.extract_answer(trace) == problem.answer == data["value"]


def test_arithmetic_verifier_rejects():
  task = tasks.make_task("arithmetic")
  problem = task.make_problem("( 3 + 4 ) * 5 - 6")
  assert problem.prompt == "eval ( 3 + 4 ) * 5 - 6 :"
  assert task.verify(problem, "answer 29")
  for response in ["answer 28", "answer 29 ;", "answer", "29", "",
                   "answer " + "9" * 100_000, "answer 2 9 x"]:
    assert not task.verify(problem, response), response


def test_arithmetic_trace_format_and_errors():
  task = tasks.make_task("arithmetic", error_rate=0.0)
  rng = np.random.default_rng(0)
  problem = task.make_problem("( 3 + 4 ) * 5 - 6")
  assert task.reference_trace(problem, rng) == (
      "3 + 4 = 7 then 7 * 5 - 6 ; 7 * 5 = 35 then 35 - 6 ; 35 - 6 = 29 "
      "answer 29")
  noisy = tasks.make_task("arithmetic", error_rate=0.3)
  traces = [t for _, t in _samples(noisy, 400)]
  rate, n = _error_fraction(_STEP, traces)
  assert n >= 1200
  assert 0.25 < rate <= 0.3 + 0.03  # Some errors are skipped (negativity).


def test_arithmetic_roles():
  task = tasks.make_task("arithmetic")
  trace = "3 * 4 = 12 then 12 + 5 * 6 ; 5 * 6 = 30 then 12 + 30 ; " \
          "12 + 30 = 42 answer 42"
  ids = TOK.encode(trace)
  roles = "".join("OPE"[r] for r in task.token_roles(ids))
  assert roles == ("PEEEEE" "O" "EEEEEE" "O" "PEEEEE" "O" "EEEEE" "O"
                   "PPEEEEEE" "O" "EE")
  for _, trace in _samples(task, 200):
    r = task.token_roles(TOK.encode(trace))
    assert 0.05 < (r == base.PLANNING).mean() < 0.2


# Both.


@pytest.mark.parametrize("name", SYNTHETIC)
def test_roles_on_random_ids(name):
  task = tasks.make_task(name)
  rng = np.random.default_rng(0)
  for _ in range(300):
    ids = rng.integers(0, TOK.vocab_size + 5, rng.integers(0, 60))
    roles = task.token_roles(ids)
    assert roles.shape == ids.shape and roles.dtype == np.int8
    assert set(roles.tolist()) <= {0, 1, 2}
  assert task.token_roles([]).shape == (0,)
  eos = task.token_roles([TOK.bos_id, TOK.eos_id, TOK.pad_id])
  assert eos.tolist() == [base.OTHER] * 3


@pytest.mark.parametrize("name", SYNTHETIC)
def test_verify_and_extract_survive_garbage(name):
  task = tasks.make_task(name)
  problem = task.sample_problem(np.random.default_rng(0))
  rng = np.random.default_rng(1)
  for _ in range(300):
    text = TOK.decode(rng.integers(3, TOK.vocab_size, rng.integers(0, 40)))
    task.verify(problem, text)
    task.extract_answer(text)
  for text in ["\x00answer 1", "answer \u0661", "answer 1e5", "answer 1.5"]:
    assert not task.verify(problem, text)
