"""Procedure errors: how often the execution of a trace is wrong, read from the text itself.

Token entropy on execution tokens is a proxy for procedural consolidation (a confident policy can be
confidently wrong). Where a task's traces state checkable steps, the real thing can be counted:

    procedure/move_error_rate     wrong results over written steps: countdown `try A op B = R` with
                                  R ≠ A op B (an inexact `/` is wrong: moves must give integers);
                                  arithmetic `A op B = R` with R ≠ A op B
    procedure/verdict_error_rate  countdown only: wrong verdicts over verdicts, where a verdict is the
                                  `goal` / `no` after a last move, judged by whether the move's *written*
                                  result is the problem's target (`= 31 target 31 no` is wrong, `= 30
                                  goal` with target 31 is wrong); a wrong result judged consistently is
                                  a move error, not a verdict error
    procedure/moves_per_response  written steps per response (context for the rates)
    procedure/gave_up_rate        countdown only: responses that end in `fail` (the search gave up) over
                                  responses; a response cut off by the token budget has not given up

Counted over every response of the step (or of a replay probe), pooled: a rate is errors / opportunities
over the batch, so long responses weigh by their steps. A batch with no step of the kind gives NaN
(JSON null). Tasks whose traces have no such steps (text tasks) log none of these keys.

The parse is a regular expression over the decoded text (model output is untrusted: numbers are parsed
with `int`, never evaluated; operands longer than MAX_DIGITS digits are skipped, so a runaway response
cannot make the host multiply huge integers).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from rldyn.tasks import expr as expr_lib

MAX_DIGITS = 12
_N = r"(\d{1,%d})" % MAX_DIGITS
# countdown: `try A op B = R` then `left ...` (an inner move) or an optional `target T` and the verdict
_COUNTDOWN_MOVE = re.compile(rf"\btry {_N} ([-+*/]) {_N} = {_N}(?: target {_N})?(?: (goal|no)\b)?")
# arithmetic: `A op B = R` (each step of the scratchpad)
_ARITHMETIC_STEP = re.compile(rf"\b{_N} ([-+*]) {_N} = {_N}")

TASKS = ("countdown", "arithmetic")


def _value(a: int, op: str, b: int) -> Fraction | None:
  """A op B exactly (`expr.apply`); None for a division by zero. A written result is right iff it equals
  this, so an inexact `/` is always wrong (the traces write integers)."""
  return None if op == "/" and b == 0 else expr_lib.apply(op, a, b)


def countdown_counts(text: str, target: int) -> tuple[int, int, int, int]:
  """(moves, wrong moves, verdicts, wrong verdicts) of one countdown response (module docstring)."""
  moves = wrong = verdicts = wrong_verdicts = 0
  for m in _COUNTDOWN_MOVE.finditer(text):
    a, op, b, r, _, verdict = m.groups()
    moves += 1
    wrong += _value(int(a), op, int(b)) != int(r)
    if verdict:
      verdicts += 1
      wrong_verdicts += (int(r) == target) != (verdict == "goal")
  return moves, wrong, verdicts, wrong_verdicts


def arithmetic_counts(text: str) -> tuple[int, int]:
  """(steps, wrong steps) of one arithmetic response."""
  steps = wrong = 0
  for m in _ARITHMETIC_STEP.finditer(text):
    a, op, b, r = m.groups()
    steps += 1
    wrong += _value(int(a), op, int(b)) != int(r)
  return steps, wrong


def procedure_metrics(task: Any, problems: Sequence[Any], texts: Sequence[str]) -> dict[str, float]:
  """The `procedure/*` metrics of a batch of responses (`problems[i]` is response i's problem); {} for a
  task without checkable steps."""
  if task.name not in TASKS:
    return {}
  if len(problems) != len(texts):
    raise ValueError(f"{len(problems)} problems for {len(texts)} responses")
  if task.name == "countdown":
    counts = [countdown_counts(t, int(json.loads(p.data)["target"])) for p, t in zip(problems, texts)]
  else:
    counts = [arithmetic_counts(t) + (0, 0) for t in texts]  # no verdicts
  moves, wrong, verdicts, wrong_verdicts = (sum(c) for c in zip(*counts)) if counts else (0, 0, 0, 0)
  rate = lambda num, den: num / den if den else math.nan  # noqa: E731
  out = {"procedure/move_error_rate": rate(wrong, moves),
         "procedure/moves_per_response": rate(moves, len(texts))}
  if task.name == "countdown":
    out["procedure/verdict_error_rate"] = rate(wrong_verdicts, verdicts)
    out["procedure/gave_up_rate"] = rate(sum(gave_up(t) for t in texts), len(texts))
  return out


def gave_up(text: str) -> bool:
  """Whether a countdown response ends in `fail`: its search stopped without an answer."""
  return text.split()[-1:] == ["fail"]
