"""Held-out evaluation: greedy accuracy and sampled pass@1 (mean correctness over n samples).

Prompts are sharded over the data-parallel devices; in a multi-process run each process reads back,
decodes and verifies only the rows its devices hold, and the correctness counts are summed over processes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np

from rldyn import data
from rldyn import model as model_lib
from rldyn import parallel
from rldyn import sampling
from rldyn.tasks.base import Problem, Task


def decode_rows(task: Task, tokens_BN: np.ndarray, length_B: np.ndarray) -> list[str]:
  return [task.tokenizer.decode(tokens_BN[i, :length_B[i]].tolist()) for i in range(len(length_B))]


def generate_texts(model_cfg: model_lib.ModelConfig, scfg: sampling.SamplingConfig, params, task: Task,
                   problems: Sequence[Problem], key: jax.Array, repeat: int = 1, batch_size: int = 256
                   ) -> tuple[list[int], list[str], dict[str, np.ndarray]]:
  """Samples `repeat` responses per problem, in batches sharded over the data-parallel devices.

  Returns (row indices, texts, stacked sampler output) of the rows this process's devices hold: all of
  them in a single-process run; each process its own contiguous block in a multi-process run (rows index
  `[p for p in problems for _ in range(repeat)]`).
  """
  sample = sampling.make_sampler(model_cfg, scfg)
  mesh = parallel.mesh_of(params)
  dp = parallel.data_parallel_size(mesh)
  rows = [p for p in problems for _ in range(repeat)]
  width = min(batch_size, len(rows))
  width = -(-width // dp) * dp  # whole rows per data-parallel device (the same shape every call)
  index, texts, outs = [], [], []
  for start in range(0, len(rows), batch_size):
    chunk = rows[start:start + batch_size]
    padded = list(chunk) + [chunk[-1]] * (width - len(chunk))
    mine = parallel.process_rows(mesh, width)
    batch = parallel.shard_batch(mesh, data.prompt_batch(task, padded))
    out = sample(params, batch["tokens"], batch["mask"], jax.random.fold_in(key, start))
    keep = [i for i in range(mine.start, mine.stop) if i < len(chunk)]  # real rows, not the padding
    out = {k: parallel.fetch_rows(v, mine)[:len(keep)] for k, v in out.items()}
    index += [start + i for i in keep]
    texts += decode_rows(task, out["tokens"], out["length"])
    outs.append(out)
  return index, texts, {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


def _mean_correct(task: Task, rows: Sequence[Problem], index: list[int], texts: list[str]) -> float:
  """Mean verifier correctness over every process's rows (each verifies its own; counts are summed)."""
  mine = np.array([task.verify(rows[i], t) for i, t in zip(index, texts)], bool)
  total = parallel.allgather(np.array([[mine.sum(), mine.size]], np.int64)).sum(axis=0)
  return float(total[0] / total[1])


def evaluate(model_cfg: model_lib.ModelConfig, scfg: sampling.SamplingConfig, params, task: Task,
             problems: Sequence[Problem], key: jax.Array, samples: int,
             temperature: float = 0.0) -> dict[str, float]:
  """{'eval/accuracy': greedy accuracy, 'eval/pass@1': mean sampled correctness} on `problems`.

  Samples at `temperature` (0 = scfg's own), so a run whose rollouts sample cooler still reports pass@1
  of the same distribution as its base's (config `eval.temperature`)."""
  greedy = dataclasses.replace(scfg, greedy=True)
  if temperature:
    scfg = dataclasses.replace(scfg, temperature=temperature)
  index, texts, _ = generate_texts(model_cfg, greedy, params, task, problems, key)
  acc = _mean_correct(task, list(problems), index, texts)
  index, texts, _ = generate_texts(model_cfg, scfg, params, task, problems, jax.random.fold_in(key, 1),
                                   samples)
  pass1 = _mean_correct(task, [p for p in problems for _ in range(samples)], index, texts)
  return {"eval/accuracy": acc, "eval/pass@1": pass1}
