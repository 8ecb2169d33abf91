"""Host-side batching: prompts (left-padded, bucketed widths) and packed supervised sequences.

A model sees `task.prompt_ids(problem) + encode(response) + [eos]` (synthetic tasks:
`[bos] + encode(prompt)`). Prompt batches are left-padded to a bucketed width (`bucket_width`: a multiple
of `PROMPT_BUCKET`, coarser past 128 tokens), so a run compiles the sampler for a handful of widths at
most, never per step.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rldyn.tasks.base import Problem, Task

PROMPT_BUCKET = 16


def prompt_ids(task: Task, problem: Problem) -> list[int]:
  """What the model sees before the response (`Task.prompt_ids`: [bos] + encode(prompt), or a chat
  template rendered for a checkpoint's tokenizer)."""
  return task.prompt_ids(problem)


def bucket_width(n: int) -> int:
  """A prompt batch's padded width: `n` rounded up to a multiple of PROMPT_BUCKET, or, past 128 tokens,
  of a quarter of the octave n lies in (≤ 25% padding), so long real-data prompts (100-400 tokens) take 9
  widths instead of 19. Synthetic prompts (< 128 tokens) get the multiples of PROMPT_BUCKET."""
  step = max(PROMPT_BUCKET, 1 << max(0, (n - 1).bit_length() - 3))
  return -(-n // step) * step


def prompt_batch(task: Task, problems: Sequence[Problem], repeat: int = 1) -> dict[str, np.ndarray]:
  """Left-padded prompts, each repeated `repeat` times in a row (a GRPO group): tokens_BP, mask_BP."""
  ids = [prompt_ids(task, p) for p in problems for _ in range(repeat)]
  width = bucket_width(max(len(x) for x in ids))
  tokens = np.full((len(ids), width), task.tokenizer.pad_id, np.int32)
  mask = np.zeros((len(ids), width), bool)
  for i, x in enumerate(ids):
    tokens[i, width - len(x):] = x
    mask[i, width - len(x):] = True
  return {"tokens": tokens, "mask": mask}


def packed_batch(task: Task, problems: Sequence[Problem], responses: Sequence[str], rows: int,
                 seq_len: int) -> tuple[dict[str, np.ndarray], int]:
  """Examples packed end to end into `rows` sequences of `seq_len` tokens (no padding waste).

  Returns (batch, examples used). batch: tokens_BT, segment_BT (1, 2, ... per example in the row;
  0 = padding), loss_mask_BT (1.0 where the next token is a response token or the eos: the model
  learns the response given the prompt). An example that does not fit in the remaining
  space of a row starts the next row; one longer than seq_len is cut.
  """
  tok = task.tokenizer
  tokens = np.full((rows, seq_len), tok.pad_id, np.int32)
  segment = np.zeros((rows, seq_len), np.int32)
  loss_mask = np.zeros((rows, seq_len), np.float32)
  row, col, seg, used = 0, 0, 1, 0
  for p, r in zip(problems, responses):
    prompt = prompt_ids(task, p)
    seq = (prompt + tok.encode(r) + [tok.eos_id])[:seq_len]
    if col + len(seq) > seq_len:
      row, col, seg = row + 1, 0, 1
      if row == rows:
        break
    tokens[row, col:col + len(seq)] = seq
    segment[row, col:col + len(seq)] = seg
    loss_mask[row, col + len(prompt) - 1:col + len(seq) - 1] = 1.0
    col, seg, used = col + len(seq), seg + 1, used + 1
  return {"tokens": tokens, "segment": segment, "loss_mask": loss_mask}, used
