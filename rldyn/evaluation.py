"""Held-out evaluation: greedy accuracy and sampled pass@1 (mean correctness over n samples)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np

from rldyn import data
from rldyn import model as model_lib
from rldyn import sampling
from rldyn.tasks.base import Problem, Task


def decode_rows(task: Task, tokens_BN: np.ndarray, length_B: np.ndarray) -> list[str]:
  return [task.tokenizer.decode(tokens_BN[i, :length_B[i]].tolist()) for i in range(len(length_B))]


def generate_texts(model_cfg: model_lib.ModelConfig, scfg: sampling.SamplingConfig, params, task: Task,
                   problems: Sequence[Problem], key: jax.Array, repeat: int = 1, batch_size: int = 256
                   ) -> tuple[list[str], dict[str, np.ndarray]]:
  """Samples `repeat` responses per problem, in batches; returns texts and the stacked sampler output."""
  sample = sampling.make_sampler(model_cfg, scfg)
  rows = [p for p in problems for _ in range(repeat)]
  texts, outs = [], []
  for start in range(0, len(rows), batch_size):
    chunk = rows[start:start + batch_size]
    # Pad the last chunk to the batch size so every call has the same shape (no recompiles).
    padded = list(chunk) + [chunk[-1]] * (min(batch_size, len(rows)) - len(chunk))
    batch = data.prompt_batch(task, padded)
    out = jax.device_get(sample(params, batch["tokens"], batch["mask"], jax.random.fold_in(key, start)))
    out = {k: v[:len(chunk)] for k, v in out.items()}
    texts += decode_rows(task, out["tokens"], out["length"])
    outs.append(out)
  return texts, {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


def evaluate(model_cfg: model_lib.ModelConfig, scfg: sampling.SamplingConfig, params, task: Task,
             problems: Sequence[Problem], key: jax.Array, samples: int) -> dict[str, float]:
  """{'eval/accuracy': greedy accuracy, 'eval/pass@1': mean sampled correctness} on `problems`."""
  greedy = dataclasses.replace(scfg, greedy=True)
  texts, _ = generate_texts(model_cfg, greedy, params, task, problems, key)
  acc = np.mean([task.verify(p, t) for p, t in zip(problems, texts)])
  texts, _ = generate_texts(model_cfg, scfg, params, task, problems, jax.random.fold_in(key, 1), samples)
  rows = [p for p in problems for _ in range(samples)]
  pass1 = np.mean([task.verify(p, t) for p, t in zip(rows, texts)])
  return {"eval/accuracy": float(acc), "eval/pass@1": float(pass1)}
