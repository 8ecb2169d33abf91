"""Host-side batching: prompts (left-padded, bucketed widths) and supervised examples (right-padded).

A model sees `[bos] + encode(prompt) + encode(response) + [eos]`. Prompt batches are left-padded to a
width rounded up to a multiple of `PROMPT_BUCKET`, so a run compiles the sampler for a handful of widths
at most, never per step.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rldyn.tasks.base import Problem, Task

PROMPT_BUCKET = 16


def prompt_ids(task: Task, problem: Problem) -> list[int]:
  return [task.tokenizer.bos_id] + task.tokenizer.encode(problem.prompt)


def prompt_batch(task: Task, problems: Sequence[Problem], repeat: int = 1) -> dict[str, np.ndarray]:
  """Left-padded prompts, each repeated `repeat` times in a row (a GRPO group): tokens_BP, mask_BP."""
  ids = [prompt_ids(task, p) for p in problems for _ in range(repeat)]
  width = -(-max(len(x) for x in ids) // PROMPT_BUCKET) * PROMPT_BUCKET
  tokens = np.full((len(ids), width), task.tokenizer.pad_id, np.int32)
  mask = np.zeros((len(ids), width), bool)
  for i, x in enumerate(ids):
    tokens[i, width - len(x):] = x
    mask[i, width - len(x):] = True
  return {"tokens": tokens, "mask": mask}


def supervised_batch(task: Task, problems: Sequence[Problem], responses: Sequence[str], seq_len: int
                     ) -> dict[str, np.ndarray]:
  """Right-padded training sequences: tokens_BT, mask_BT (real tokens), loss_mask_BT.

  loss_mask_BT[b, t] = 1 where tokens[b, t + 1] is a response token or the eos (the model is trained to
  predict the response given the prompt); examples longer than seq_len are cut (their eos is lost).
  """
  tok = task.tokenizer
  tokens = np.full((len(problems), seq_len), tok.pad_id, np.int32)
  mask = np.zeros((len(problems), seq_len), bool)
  loss_mask = np.zeros((len(problems), seq_len), np.float32)
  for i, (p, r) in enumerate(zip(problems, responses)):
    prompt = prompt_ids(task, p)
    seq = (prompt + tok.encode(r) + [tok.eos_id])[:seq_len]
    tokens[i, :len(seq)] = seq
    mask[i, :len(seq)] = True
    loss_mask[i, len(prompt) - 1:len(seq) - 1] = 1.0
  return {"tokens": tokens, "mask": mask, "loss_mask": loss_mask}
