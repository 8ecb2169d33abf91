"""procedure/* metrics (rldyn/metrics/procedure.py): hand-counted traces, the generators' injected error
rate recovered, hostile text."""

import math
import types

import numpy as np
import pytest

from rldyn.metrics import procedure as P
from rldyn.tasks import make_task


def test_countdown_counts_by_hand():
  # target 11: 4 moves; 4 + 4 = 9 wrong; 44 * 4 = 188 wrong (176); verdicts: 19 no (right), 11 no (wrong:
  # 11 is the target), 12 goal (wrong: 12 is not the target), 16 / 11 = 1 inexact (wrong move), its `no`
  # is right (1 is not 11)
  text = ("try 4 + 4 = 9 left 9 , 11 try 8 + 11 = 19 target 11 no try 44 * 4 = 188 target 11 no "
          "try 5 + 6 = 11 target 11 no try 6 + 6 = 12 goal back try 16 / 11 = 1 target 11 no fail")
  assert P.countdown_counts(text, 11) == (6, 3, 5, 2)
  # exact division and a consistent verdict on a wrong result: a move error only
  assert P.countdown_counts("try 12 / 4 = 3 left 3 , 8 try 3 + 8 = 12 target 12 goal answer ( 12 / 4 ) + 8",
                            12) == (2, 1, 1, 0)
  assert P.countdown_counts("fail", 5) == (0, 0, 0, 0)


def test_arithmetic_counts_by_hand():
  text = "3 + 4 = 7 then 7 * 5 - 6 ; 7 * 5 = 36 then 36 - 6 ; 36 - 6 = 30 answer 30"
  assert P.arithmetic_counts(text) == (3, 1)
  assert P.arithmetic_counts("answer 3") == (0, 0)


def test_metrics_pool_over_the_batch_and_skip_other_tasks():
  task = make_task("countdown")
  p = task.make_problem([4, 4, 11], 11)
  texts = ["try 4 + 4 = 8 left 8 , 11 try 8 + 11 = 19 target 11 no fail",   # 2 moves, 1 verdict, no error
           "try 4 + 11 = 15 left 15 , 4 try 15 - 4 = 11 target 11 no fail",  # 2 moves, wrong verdict
           "try 4 * 4 = 15 left 15 , 11 fail",                               # 1 move, wrong
           "junk"]
  got = P.procedure_metrics(task, [p] * 4, texts)
  assert got == pytest.approx({"procedure/move_error_rate": 1 / 5, "procedure/verdict_error_rate": 1 / 2,
                               "procedure/moves_per_response": 5 / 4, "procedure/gave_up_rate": 3 / 4})
  assert [P.gave_up(t) for t in ("fail", "try 4 + 4 = 8 left 8 , 11 fail ", "try 4 + 4 = 8 left 8 , 11",
                                 "try 1 + 1 = 2 goal answer 1 + 1", "nofail")] == [True, True, False, False,
                                                                                   False]
  none = P.procedure_metrics(task, [p], ["fail"])
  assert math.isnan(none["procedure/move_error_rate"]) and math.isnan(none["procedure/verdict_error_rate"])
  assert P.procedure_metrics(types.SimpleNamespace(name="textmath"), [p], ["1 + 1 = 3"]) == {}
  with pytest.raises(ValueError, match="2 problems for 1 responses"):
    P.procedure_metrics(task, [p, p], ["fail"])


@pytest.mark.parametrize("name", ["countdown", "arithmetic"])
def test_the_generators_error_rate_is_recovered(name):
  """Reference traces inject wrong results at error_rate: the metric reads it back; at 0 it reads 0."""
  for rate in (0.0, 0.1, 0.3):
    task = make_task(name, error_rate=rate)
    rng = np.random.default_rng(0)
    problems = [task.sample_problem(rng) for _ in range(400)]
    texts = [task.reference_trace(p, rng) for p in problems]
    got = P.procedure_metrics(task, problems, texts)
    # arithmetic skips errors that would make a later value negative: a little below the rate
    assert rate - 0.03 <= got["procedure/move_error_rate"] <= rate + 0.02, (rate, got)
    if rate == 0:
      assert got["procedure/move_error_rate"] == 0
    if name == "countdown":
      assert got["procedure/verdict_error_rate"] == 0  # the generator judges its written result
      assert "procedure/verdict_error_rate" in got and got["procedure/moves_per_response"] > 3
    else:
      assert "procedure/verdict_error_rate" not in got


def test_hostile_text_is_bounded():
  huge = "9" * 5000
  assert P.countdown_counts(f"try {huge} * {huge} = 1 target 1 goal", 1) == (0, 0, 0, 0)
  assert P.arithmetic_counts(f"{huge} * {huge} = 1") == (0, 0)
  assert P.countdown_counts("try 3 / 0 = 0 target 0 goal", 0) == (1, 1, 1, 0)
