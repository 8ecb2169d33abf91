"""One-shot RLVR (Wang et al. 2025, arXiv 2504.20571): a task that trains on one problem.

    task = FixedProblemTask(make_task("countdown"), problem)
    task.sample_problem(rng)                 # always `problem` (the RL batch is it, repeated)
    task.sample_problem(rng, heldout=True)   # the wrapped task's held-out draw, unchanged

Everything else (name, tokenizer, verifier, roles, eval sets) is the wrapped task's, so rewards, the
held-out evaluation and the base-model checks see the ordinary task: train accuracy on the one problem is
the rollout's `accuracy`, and `eval/*` stays the held-out accuracy on other problems. Wrap only the RL
loop's task: pretraining on a fixed problem would train on one trace. `parse_problem` reads the
`task.fixed_problem` config value (a Problem as JSON, as `python -m rldyn.oneshot rank` prints it); a
training problem's uid is resolved by `rldyn.oneshot.find_problem`.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np

from rldyn.tasks.base import is_heldout, Problem, Task


class FixedProblemTask:
  """The wrapped task, except that training draws always return `problem`."""

  def __init__(self, task: Task, problem: Problem):
    if is_heldout(problem):
      raise ValueError(f"problem {problem.uid} is in the held-out split; one-shot training on it would "
                       "leak into the evaluation: choose a training problem")
    self._task = task
    self.problem = problem

  @property
  def wrapped(self) -> Task:
    return self._task

  def sample_problem(self, rng: np.random.Generator, heldout: bool = False) -> Problem:
    if heldout:
      return self._task.sample_problem(rng, heldout=True)
    return self.problem

  def __getattr__(self, name: str) -> Any:
    return getattr(self._task, name)

  def __repr__(self) -> str:
    return f"FixedProblemTask({self._task.name}, {self.problem.uid})"


def problem_json(problem: Problem) -> str:
  """The compact JSON form `parse_problem` reads (the value of `task.fixed_problem`)."""
  return json.dumps(dataclasses.asdict(problem), sort_keys=True, separators=(",", ":"))


def parse_problem(task: Task, value: str) -> Problem | None:
  """The Problem of a `task.fixed_problem` value if it is JSON (checked against the task), None for a uid.

  A JSON problem must have exactly the Problem fields and belong to `task` (its uid's prefix); anything
  else is refused with a one-line error.
  """
  value = value.strip()
  if not value.startswith("{"):
    if not value.startswith(f"{task.name}/"):
      raise ValueError(f"task.fixed_problem={value!r} is neither a problem as JSON nor a {task.name} uid "
                       f"('{task.name}/<16 hex digits>'); `python -m rldyn.oneshot rank` prints both")
    return None
  try:
    problem = task.problem_from_dict(json.loads(value))
  except (ValueError, TypeError) as e:
    raise ValueError(f"task.fixed_problem is not a problem as JSON: {e}") from e
  if not problem.uid.startswith(f"{task.name}/"):
    raise ValueError(f"task.fixed_problem is problem {problem.uid}, not a {task.name} problem")
  return problem
