"""Reward functions (docs/objectives.md), chosen by `reward.name`.

A reward function maps one step's responses to float rewards:
    fn(ctx: RewardContext) -> rewards_B (np.float32)
Rows come in groups of G consecutive responses to the same prompt. Model outputs are untrusted text:
rewards go through the task's parser/verifier (never eval/exec). `accuracy` (verifier correctness) is
logged separately from the reward, so spurious-reward arms stay measurable.

  ground_truth   1 iff the task's verifier accepts the response
  format         1 iff the response has a well-formed final answer (correct or not)
  random         Bernoulli(γ = reward.random_p), independent of the output; seeded by (reward.seed, step)
  zero           0 for every response: no reward signal (the entropy-only arm: loss.entropy_coef > 0)
  incorrect_label  1 iff the response's answer is a fixed WRONG label of its problem (`wrong_label`)
  majority_vote  1 iff the response's answer is its group's most common answer (Shao et al. 2025)
  distinct_correct  1 + β/m for a correct response whose solution m correct responses of its group share
                 (β = reward.distinct_bonus), 0 if wrong: the group earns β per distinct correct solution

"The answer" of a response (`answer_key`) is what the verifier would compare against a label: the
number for arithmetic; for countdown, the exact value of the answer expression when it uses exactly the
problem's numbers (an expression over other numbers could verify under no target, so it has no answer).
Responses without an answer get 0 and do not vote.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import json
from collections.abc import Hashable, Sequence
from fractions import Fraction

import numpy as np

from rldyn.config import RewardConfig
from rldyn.metrics import strategy as strategy_lib
from rldyn.registry import Registry
from rldyn.tasks import expr as expr_lib
from rldyn.tasks.base import Problem, Task

REWARDS: Registry = Registry("reward")


@dataclasses.dataclass(frozen=True)
class RewardContext:
  task: Task
  problems: Sequence[Problem]  # one per row (repeated within a group)
  texts: Sequence[str]
  correct: np.ndarray  # verifier correctness per row (bool), computed once per step
  group_size: int
  step: int
  cfg: RewardConfig


@REWARDS.register("ground_truth")
def ground_truth(ctx: RewardContext) -> np.ndarray:
  return ctx.correct.astype(np.float32)


@REWARDS.register("format")
def format_only(ctx: RewardContext) -> np.ndarray:
  return np.array([ctx.task.extract_answer(t) is not None for t in ctx.texts], np.float32)


@REWARDS.register("random")
def random_reward(ctx: RewardContext) -> np.ndarray:
  rng = np.random.default_rng([ctx.cfg.seed, ctx.step])
  return (rng.random(len(ctx.texts)) < ctx.cfg.random_p).astype(np.float32)


@REWARDS.register("zero")
def zero(ctx: RewardContext) -> np.ndarray:
  """No reward: every advantage is 0, so only the loss's other terms (entropy bonus, KL) train the policy."""
  return np.zeros(len(ctx.texts), np.float32)


# ---- answers and labels --------------------------------------------------------------------------------

def answer_key(task: Task, problem: Problem, text: str) -> Hashable | None:
  """The answer a response gives, in the form labels take (None: no answer). See the module docstring."""
  answer = task.extract_answer(text)
  if answer is None or task.name != "countdown":
    return answer
  e = expr_lib.parse(answer, max_tokens=1024, max_depth=1024)  # canonical text of a bounded parse
  if sorted(expr_lib.leaves(e)) != sorted(json.loads(problem.data)["numbers"]):
    return None
  try:
    return expr_lib.evaluate(e)
  except ZeroDivisionError:
    return None


def true_label(task: Task, problem: Problem) -> Hashable:
  """The label the verifier checks: `answer_key(task, p, r) == true_label(task, p)` iff r verifies."""
  if task.name == "countdown":
    return Fraction(json.loads(problem.data)["target"])
  if task.name == "arithmetic":
    return json.loads(problem.data)["value"]
  raise ValueError(f"task {task.name!r} has no label definition; valid: {', '.join(LABELLED_TASKS)}")


def _draw(seed: int, uid: str, n: int) -> int:
  """A deterministic index in [0, n) from (seed, problem uid), the same in every process."""
  digest = hashlib.sha256(f"wrong-label:{seed}:{uid}".encode()).digest()
  return int.from_bytes(digest[:8], "big") % n


@functools.lru_cache(maxsize=4096)
def countdown_values(numbers: tuple[int, ...]) -> frozenset[int]:
  """Every value the countdown search language can reach using all `numbers` once: repeatedly combine two
  numbers by +, − (larger minus smaller, non-zero), × or exact ÷, as `try` moves do."""
  if len(numbers) == 1:
    return frozenset(numbers)
  out = set()
  for i in range(len(numbers)):
    for j in range(i + 1, len(numbers)):
      a, b = max(numbers[i], numbers[j]), min(numbers[i], numbers[j])
      rest = [n for k, n in enumerate(numbers) if k not in (i, j)]
      for r in {a + b, a - b, a * b} | ({a // b} if a % b == 0 else set()):
        if r > 0:
          out |= countdown_values(tuple(sorted(rest + [r])))
  return frozenset(out)


def wrong_label(task: Task, problem: Problem, seed: int) -> Hashable:
  """A fixed wrong label of `problem`, drawn from (seed, uid); it never equals the true label.

  arithmetic: value + δ, δ from ±1..±max_error (the task's own error model; negatives excluded), so the
    policy writes it now and then. countdown: another value reachable with the problem's numbers
    (`countdown_values`), so some expression over exactly those numbers earns it; if the target is the
    only reachable value, target + 1 (then no response earns the reward).
  """
  truth = true_label(task, problem)
  if task.name == "arithmetic":
    m = task.config.max_error
    options = [int(truth) + d for d in range(-m, m + 1) if d and int(truth) + d >= 0]
    return str(options[_draw(seed, problem.uid, len(options))])
  values = sorted(countdown_values(tuple(sorted(json.loads(problem.data)["numbers"]))) - {int(truth)})
  if not values:
    return truth + 1
  return Fraction(values[_draw(seed, problem.uid, len(values))])


LABELLED_TASKS = ("arithmetic", "countdown")


@REWARDS.register("incorrect_label")
def incorrect_label(ctx: RewardContext) -> np.ndarray:
  """1 iff the answer equals the problem's fixed wrong label (Shao et al. 2025's incorrect-label reward)."""
  out = np.zeros(len(ctx.texts), np.float32)
  for i, (p, t) in enumerate(zip(ctx.problems, ctx.texts)):
    key = answer_key(ctx.task, p, t)
    out[i] = key is not None and key == wrong_label(ctx.task, p, ctx.cfg.seed)
  return out


def majority_labels(keys: Sequence[Hashable | None]) -> Hashable | None:
  """The most common non-None key; ties go to the one that appears first. None if no row has one."""
  counts = collections.Counter(k for k in keys if k is not None)
  return max(counts, key=counts.__getitem__) if counts else None  # Counter keeps first-seen order


@REWARDS.register("majority_vote")
def majority_vote(ctx: RewardContext) -> np.ndarray:
  """1 iff the answer equals its group's majority answer (test-time-RL style pseudo-label)."""
  keys = [answer_key(ctx.task, p, t) for p, t in zip(ctx.problems, ctx.texts)]
  out = np.zeros(len(keys), np.float32)
  g = ctx.group_size
  for start in range(0, len(keys), g):
    label = majority_labels(keys[start:start + g])
    for i in range(start, min(start + g, len(keys))):
      out[i] = keys[i] is not None and keys[i] == label
  return out


# ---- distinct correct solutions ----------------------------------------------------------------------------

SOLUTION_TASKS = ("countdown",)


def solution_key(task: Task, text: str) -> Hashable:
  """What makes two correct responses the same solution: for countdown the answer expression with + and ×
  chains flattened and sorted (`strategy.countdown_solution`, the key `strategy/distinct_correct_per_prompt`
  counts), so `(3 + 5) + 7` and `7 + (5 + 3)` are one solution and `3 * 5 - 7` another."""
  if task.name not in SOLUTION_TASKS:
    raise ValueError(f"task {task.name!r} has no solution key; valid: {', '.join(SOLUTION_TASKS)}")
  return strategy_lib.countdown_solution(text)


@REWARDS.register("distinct_correct")
def distinct_correct(ctx: RewardContext) -> np.ndarray:
  """An outcome-level bonus for distinct correct solutions: a correct response whose solution m of its
  group's correct responses share (itself included) gets 1 + β/m, a wrong one 0. So a group's rewards sum
  to (#correct + β · #distinct correct solutions): the bonus pays for each new solution once, split among
  the responses that found it, and a group that repeats one solution earns what ground_truth gives it
  plus β."""
  beta = ctx.cfg.distinct_bonus
  keys = [solution_key(ctx.task, t) if c else None for t, c in zip(ctx.texts, ctx.correct)]
  out = ctx.correct.astype(np.float32)
  g = ctx.group_size
  for start in range(0, len(keys), g):
    counts = collections.Counter(k for k, c in zip(keys[start:start + g], ctx.correct[start:start + g]) if c)
    for i in range(start, min(start + g, len(keys))):
      if ctx.correct[i]:
        out[i] += beta / counts[keys[i]]
  return out


def compute(ctx: RewardContext) -> np.ndarray:
  """Runs the configured reward, naming the reward and the sample when it fails."""
  fn = REWARDS.get(ctx.cfg.name)
  try:
    r = np.asarray(fn(ctx), np.float32)
  except Exception as e:
    # Find the first offending row to make the error actionable.
    for i, text in enumerate(ctx.texts):
      try:
        fn(dataclasses.replace(ctx, problems=[ctx.problems[i]], texts=[text], correct=ctx.correct[i:i + 1],
                               group_size=1))
      except Exception:  # noqa: BLE001
        raise RuntimeError(f"reward {ctx.cfg.name!r} failed on row {i} (problem {ctx.problems[i].uid}, "
                           f"response {text[:200]!r}): {e}") from e
    raise RuntimeError(f"reward {ctx.cfg.name!r} failed: {e}") from e
  if r.shape != (len(ctx.texts),):
    raise RuntimeError(f"reward {ctx.cfg.name!r} returned shape {r.shape}, expected ({len(ctx.texts)},)")
  return r


def verify_all(task: Task, problems: Sequence[Problem], texts: Sequence[str]) -> np.ndarray:
  return np.array([task.verify(p, t) for p, t in zip(problems, texts)], bool)
