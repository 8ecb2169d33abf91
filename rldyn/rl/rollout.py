"""Rollout: sample the step's groups with the current policy and score them -> a `Rollout` record.

Step t draws `rl.prompts_per_step` training problems from the seeded stream position (seed, t) (with
`rl.curriculum`, from the task in the world of the stage step t is in: `task_at`), repeats
each `rl.group_size` times (rows are group-major: row b answers problem b // G), samples one response per
row with the KV-cache sampler, decodes the responses, and scores them: `correct` from the task's verifier
(always), `rewards` from the configured reward (which may ignore correctness, as spurious-reward arms do).
Response arrays are trimmed to the longest response rounded up to RESPONSE_BUCKET, so the update costs
what the responses cost and compiles once per bucket.

Multi-process runs: the global batch is the same whatever the process count (problems are a pure function
of (seed, step)); process p owns the contiguous block of whole groups its devices hold
(`parallel.process_rows`), places only those rows, reads back only those rows of the sampler's output, and
decodes, verifies and rewards them. A `Rollout` holds the owned rows; `gather` makes the global view every
process needs for the step's statistics and logged samples.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Callable

import jax
import numpy as np

from rldyn import data
from rldyn import parallel
from rldyn import tasks as tasks_lib
from rldyn.config import Config
from rldyn.config import parse_curriculum
from rldyn.evaluation import decode_rows
from rldyn.rl import rewards as rewards_lib
from rldyn.tasks.base import Problem, Task

ROLLOUT_PURPOSE = 1  # key purpose of rollout sampling (and of the problem stream)
RESPONSE_BUCKET = 32


@dataclasses.dataclass
class Rollout:
  """One step's sampled and scored rows (host numpy arrays; B = this process's rows, N response slots)."""

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
  rows: slice = dataclasses.field(default_factory=lambda: slice(None))  # its rows of the global batch
  global_rows: int = 0  # rows in the step's global batch (0: these rows are the whole batch)
  batch_problems: list[Problem] | None = None  # per row of the step's global batch

  @property
  def ids(self) -> list[list[int]]:
    """Each row's response token ids (length-trimmed)."""
    return [self.tokens_BN[i, :n].tolist() for i, n in enumerate(self.length_B)]


def curriculum_stage(cfg: Config, step: int) -> tuple[int, str, object] | None:
  """(stage index, option key, its value) of `rl.curriculum` at RL step `step`; None without a curriculum."""
  parsed = parse_curriculum(cfg.rl.curriculum)
  if parsed is None:
    return None
  key, stages = parsed
  i = max(k for k, (start, _) in enumerate(stages) if start <= step)
  return i, key, stages[i][1]


@functools.lru_cache(maxsize=16)
def _task_in_world(name: str, options_json: str) -> Task:
  return tasks_lib.make_task(name, **json.loads(options_json))


def task_at(cfg: Config, task: Task, step: int) -> Task:
  """The task RL step `step` draws its problems from: `task` itself, or with `rl.curriculum` the same task
  with the stage's option value (verification, roles and the tokenizer do not depend on it)."""
  stage = curriculum_stage(cfg, step)
  if stage is None:
    return task
  _, key, value = stage
  return _task_in_world(cfg.task.name, json.dumps({**cfg.task.kwargs, key: value}, sort_keys=True))


def step_problems(cfg: Config, task: Task, step: int) -> list[Problem]:
  """The training problems of RL step `step` (a pure function of seed and step)."""
  rng = np.random.default_rng([cfg.seed, ROLLOUT_PURPOSE, step])
  world = task_at(cfg, task, step)
  return [world.sample_problem(rng) for _ in range(cfg.rl.prompts_per_step)]


def truncate(task: Task, tokens_BN: np.ndarray, mask_BN: np.ndarray, length_B: np.ndarray,
             truncated_B: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(mask, lengths, truncated) after the task's `truncate_responses` (text tasks cut at stop strings).

  A task without the method keeps its responses; a response cut short has stopped (not truncated).
  """
  cut = getattr(task, "truncate_responses", None)
  if cut is None:
    return mask_BN, length_B, truncated_B
  new = np.asarray(cut(tokens_BN, mask_BN), bool)
  if new.shape != mask_BN.shape or (new & ~mask_BN).any():
    raise ValueError(f"{type(task).__name__}.truncate_responses must return a mask of shape {mask_BN.shape} "
                     "that is never longer than the sampler's")
  length = new.sum(axis=1).astype(length_B.dtype)
  return new, length, truncated_B & (length == length_B)


def _in_global_batch(local: list, rows: slice, n: int, blank) -> list:
  """`local` at positions `rows` of an n-long list, `blank` elsewhere (scoring keeps global row indices)."""
  out = [blank] * n
  out[rows] = local
  return out


# Refill round r >= 1 of step t scores its rewards as reward step t + r·REFILL_REWARD_STEP, so a reward
# with a per-step stream (random) draws afresh in every round instead of repeating round 0's values.
REFILL_REWARD_STEP = 2**32


def rollout(cfg: Config, task: Task, mesh, sample: Callable, params, key: jax.Array, step: int,
            round_: int = 0, problems: list[Problem] | None = None) -> Rollout:
  """Samples and scores this process's rows of step `step`'s groups (key: the run's base key).

  round_ > 0 is a dynamic-sampling refill round (rldyn.rl.loop.sample_batch): `problems` are its
  problems, its sampling key is round 0's folded with round_, its rewards see REFILL_REWARD_STEP.
  """
  g = cfg.rl.group_size
  if (round_ == 0) != (problems is None):
    raise ValueError(f"round 0 samples the step's own problems, a refill round ({round_}) is given its own")
  problems = step_problems(cfg, task, step) if problems is None else problems
  prompts = data.prompt_batch(task, problems, repeat=g)  # every row: the global padded width
  if prompts["tokens"].shape[1] + cfg.sampling.max_new_tokens > cfg.model.max_seq_len:
    raise ValueError(f"step {step}: prompts of {prompts['tokens'].shape[1]} tokens plus "
                     f"sampling.max_new_tokens={cfg.sampling.max_new_tokens} exceed model.max_seq_len="
                     f"{cfg.model.max_seq_len}")
  n_rows = len(problems) * g
  rows = parallel.process_rows(mesh, n_rows, multiple=g)
  t0 = time.time()
  dev = parallel.place_rows(mesh, {k: v[rows] for k, v in prompts.items()}, n_rows)
  step_key = jax.random.fold_in(jax.random.fold_in(key, ROLLOUT_PURPOSE), step)
  out = sample(params, dev["tokens"], dev["mask"],
               jax.random.fold_in(step_key, round_) if round_ else step_key)
  out = {k: parallel.fetch_rows(v, rows) for k, v in out.items()}
  t1 = time.time()
  mask, length, truncated = truncate(task, out["tokens"], out["mask"], out["length"], out["truncated"])
  all_rows = [p for p in problems for _ in range(g)]
  mine = all_rows[rows]
  texts = decode_rows(task, out["tokens"], length)
  correct = rewards_lib.verify_all(task, mine, texts)
  # Rewards see the global batch's row indices (a per-batch stream, e.g. the random reward, draws the same
  # values whatever the process count); rows other processes own are blank and not read back.
  ctx = rewards_lib.RewardContext(task, all_rows, _in_global_batch(texts, rows, n_rows, ""),
                                  np.array(_in_global_batch(list(correct), rows, n_rows, False), bool), g,
                                  step + round_ * REFILL_REWARD_STEP, cfg.reward)
  rewards = rewards_lib.compute(ctx)[rows]
  longest = int(parallel.allgather(np.array([length.max(initial=0)])).max())  # the same width everywhere
  n = min(out["tokens"].shape[1], -(-longest // RESPONSE_BUCKET) * RESPONSE_BUCKET)
  return Rollout(
      problems=mine, prompt_tokens_BP=prompts["tokens"][rows], prompt_mask_BP=prompts["mask"][rows],
      tokens_BN=out["tokens"][:, :n], mask_BN=mask[:, :n], logp_BN=out["logp"][:, :n],
      entropy_BN=out["entropy"][:, :n], length_B=length, truncated_B=truncated, texts=texts,
      correct_B=correct, rewards_B=rewards, group_size=g, sample_s=t1 - t0, score_s=time.time() - t1,
      rows=rows, global_rows=n_rows, batch_problems=all_rows)


def gather(ro: Rollout, roles_BN: np.ndarray | None = None) -> tuple[Rollout, np.ndarray | None]:
  """(the step's whole rollout, its roles) on every process, from each process's rows (identity on one)."""
  if jax.process_count() == 1:
    return ro, roles_BN
  arrays = parallel.allgather({
      "prompt_tokens_BP": ro.prompt_tokens_BP, "prompt_mask_BP": ro.prompt_mask_BP, "tokens_BN": ro.tokens_BN,
      "mask_BN": ro.mask_BN, "logp_BN": ro.logp_BN, "entropy_BN": ro.entropy_BN, "length_B": ro.length_B,
      "truncated_B": ro.truncated_B, "correct_B": ro.correct_B, "rewards_B": ro.rewards_B,
      **({} if roles_BN is None else {"roles": roles_BN})})
  if len(arrays["length_B"]) != ro.global_rows:
    raise ValueError(f"gathered {len(arrays['length_B'])} rows, the step has {ro.global_rows}")
  roles = arrays.pop("roles", None)
  texts = parallel.allgather_objects(ro.texts)
  return dataclasses.replace(ro, **arrays, problems=list(ro.batch_problems), texts=texts, rows=slice(None),
                             global_rows=0), roles


def _pad_to(x: np.ndarray, width: int, value, left: bool) -> np.ndarray:
  pad = [(0, 0)] * x.ndim
  pad[1] = (width - x.shape[1], 0) if left else (0, width - x.shape[1])
  return np.pad(x, pad, constant_values=value)


def select_groups(rounds: list[Rollout], selection: list[tuple[int, int]], pad_id: int) -> Rollout:
  """One whole rollout of the selected (round, group) pairs, in selection order (group-major rows).

  rounds: whole (gathered) rollouts of one step. Prompts are left-padded (pad_id, mask off) to the widest
  round's prompt width, responses right-padded (pad_id, mask off, log-prob and entropy 0) to the widest
  response width; sampling and scoring times are the rounds' sums.
  """
  g = rounds[0].group_size
  p_w = max(r.prompt_tokens_BP.shape[1] for r in rounds)
  n_w = max(r.tokens_BN.shape[1] for r in rounds)
  rows = [(r, np.arange(i * g, (i + 1) * g)) for r, i in selection]

  def cat(name: str, width: int = 0, value=0, left: bool = False) -> np.ndarray:
    parts = [getattr(rounds[r], name)[idx] for r, idx in rows]
    return np.concatenate([_pad_to(x, width, value, left) if width else x for x in parts])

  problems = [rounds[r].problems[j] for r, idx in rows for j in idx]
  return Rollout(
      problems=problems, prompt_tokens_BP=cat("prompt_tokens_BP", p_w, pad_id, True),
      prompt_mask_BP=cat("prompt_mask_BP", p_w, False, True), tokens_BN=cat("tokens_BN", n_w, pad_id),
      mask_BN=cat("mask_BN", n_w, False), logp_BN=cat("logp_BN", n_w, 0.0),
      entropy_BN=cat("entropy_BN", n_w, 0.0), length_B=cat("length_B"), truncated_B=cat("truncated_B"),
      texts=[rounds[r].texts[j] for r, idx in rows for j in idx], correct_B=cat("correct_B"),
      rewards_B=cat("rewards_B"), group_size=g, sample_s=sum(r.sample_s for r in rounds),
      score_s=sum(r.score_s for r in rounds), batch_problems=problems)


def own_rows(whole: Rollout, mesh) -> Rollout:
  """This process's contiguous block of whole groups (`parallel.process_rows`) of a whole rollout."""
  n = len(whole.length_B)
  rows = parallel.process_rows(mesh, n, multiple=whole.group_size)
  arrays = {f.name: getattr(whole, f.name)[rows] for f in dataclasses.fields(Rollout)
            if isinstance(getattr(whole, f.name), np.ndarray)}
  return dataclasses.replace(whole, **arrays, problems=whole.problems[rows], texts=whole.texts[rows],
                             rows=rows, global_rows=n, batch_problems=list(whole.problems))


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
