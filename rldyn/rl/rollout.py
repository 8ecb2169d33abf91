"""Rollout: sample the step's groups with the current policy and score them -> a `Rollout` record.

Step t draws `rl.prompts_per_step` training problems from the seeded stream position (seed, t), repeats
each `rl.group_size` times (rows are group-major: row b answers problem b // G), samples one response per
row with the KV-cache sampler, decodes the responses, and scores them: `correct` from the task's verifier
(always), `rewards` from the configured reward (which may ignore correctness, as spurious-reward arms do).
Response arrays are trimmed to the longest response rounded up to RESPONSE_BUCKET, so the update costs
what the responses cost and compiles once per bucket.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import jax
import numpy as np

from rldyn import data
from rldyn import parallel
from rldyn.config import Config
from rldyn.evaluation import decode_rows
from rldyn.rl import rewards as rewards_lib
from rldyn.tasks.base import Problem, Task

ROLLOUT_PURPOSE = 1  # key purpose of rollout sampling (and of the problem stream)
RESPONSE_BUCKET = 32


@dataclasses.dataclass
class Rollout:
  """One step's sampled and scored rows (host numpy arrays; B = prompts × group, N response slots)."""

  problems: list[Problem]  # per row
  prompt_tokens_BP: np.ndarray  # int32, left-padded
  prompt_mask_BP: np.ndarray  # bool
  tokens_BN: np.ndarray  # int32 sampled ids (pad after the row stopped)
  mask_BN: np.ndarray  # bool, response tokens (the stop token included)
  logp_BN: np.ndarray  # float32 log π_old(sampled token), from the sampler
  entropy_BN: np.ndarray  # float32 full-vocabulary entropy of π_old at each position
  length_B: np.ndarray  # int32 response lengths
  truncated_B: np.ndarray  # bool, hit max_new_tokens without stopping
  texts: list[str]  # decoded responses
  correct_B: np.ndarray  # bool, the task's verifier
  rewards_B: np.ndarray  # float32, the configured reward
  group_size: int
  sample_s: float  # wall time of sampling (dispatch to fetched arrays)
  score_s: float  # wall time of decoding and scoring on the host

  @property
  def ids(self) -> list[list[int]]:
    """Each row's response token ids (length-trimmed)."""
    return [self.tokens_BN[i, :n].tolist() for i, n in enumerate(self.length_B)]


def step_problems(cfg: Config, task: Task, step: int) -> list[Problem]:
  """The training problems of RL step `step` (a pure function of seed and step)."""
  rng = np.random.default_rng([cfg.seed, ROLLOUT_PURPOSE, step])
  return [task.sample_problem(rng) for _ in range(cfg.rl.prompts_per_step)]


def rollout(cfg: Config, task: Task, mesh, sample: Callable, params, key: jax.Array, step: int) -> Rollout:
  """Samples and scores step `step`'s groups with `params` (key: the run's base key)."""
  g = cfg.rl.group_size
  problems = step_problems(cfg, task, step)
  prompts = data.prompt_batch(task, problems, repeat=g)
  if prompts["tokens"].shape[1] + cfg.sampling.max_new_tokens > cfg.model.max_seq_len:
    raise ValueError(f"step {step}: prompts of {prompts['tokens'].shape[1]} tokens plus "
                     f"sampling.max_new_tokens={cfg.sampling.max_new_tokens} exceed model.max_seq_len="
                     f"{cfg.model.max_seq_len}")
  t0 = time.time()
  dev = parallel.shard_batch(mesh, prompts)
  out = sample(params, dev["tokens"], dev["mask"],
               jax.random.fold_in(jax.random.fold_in(key, ROLLOUT_PURPOSE), step))
  out = jax.device_get(out)
  t1 = time.time()
  rows = [p for p in problems for _ in range(g)]
  texts = decode_rows(task, out["tokens"], out["length"])
  correct = rewards_lib.verify_all(task, rows, texts)
  rewards = rewards_lib.compute(rewards_lib.RewardContext(task, rows, texts, correct, g, step, cfg.reward))
  n = min(out["tokens"].shape[1], -(-int(out["length"].max()) // RESPONSE_BUCKET) * RESPONSE_BUCKET)
  return Rollout(
      problems=rows, prompt_tokens_BP=prompts["tokens"], prompt_mask_BP=prompts["mask"],
      tokens_BN=out["tokens"][:, :n], mask_BN=out["mask"][:, :n], logp_BN=out["logp"][:, :n],
      entropy_BN=out["entropy"][:, :n], length_B=out["length"], truncated_B=out["truncated"], texts=texts,
      correct_B=correct, rewards_B=rewards, group_size=g, sample_s=t1 - t0, score_s=time.time() - t1)


def rollout_stats(ro: Rollout) -> dict[str, float]:
  """Host-side statistics of a rollout (metrics.jsonl keys; docs/metrics.md)."""
  r_pg = ro.rewards_B.reshape(-1, ro.group_size)
  return {
      "reward/mean": float(ro.rewards_B.mean()),
      "reward/std": float(ro.rewards_B.std()),
      "accuracy": float(ro.correct_B.mean()),
      "response_len/mean": float(ro.length_B.mean()),
      "response_len/truncated_frac": float(ro.truncated_B.mean()),
      "groups/zero_std_frac": float((r_pg.std(axis=1) == 0).mean()),
  }
