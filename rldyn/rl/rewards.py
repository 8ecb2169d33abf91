"""Reward functions (docs/objectives.md), chosen by `reward.name`.

A reward function maps one step's responses to float rewards:
    fn(ctx: RewardContext) -> rewards_B (np.float32)
Rows come in groups of G consecutive responses to the same prompt. Model outputs are untrusted text:
rewards go through the task's parser/verifier (never eval/exec). `accuracy` (verifier correctness) is
logged separately from the reward, so spurious-reward arms stay measurable.

  ground_truth   1 iff the task's verifier accepts the response
  format         1 iff the response has a well-formed final answer (correct or not)
  random         Bernoulli(γ = reward.random_p), independent of the output; seeded by (reward.seed, step)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from rldyn.config import RewardConfig
from rldyn.registry import Registry
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
