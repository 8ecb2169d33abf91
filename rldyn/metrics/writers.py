"""Append-only JSONL logs that never tear, and an optional TensorBoard mirror.

Each record is serialised first and written with a single `write` of one complete line, then flushed
and fsynced, so a kill leaves either the whole line or none of it. A torn tail (from a crash in the
middle of the OS write) is detected and cut on open. On resume, `truncate_after(step)` drops lines for
steps the restored checkpoint has not reached, so a resumed log never duplicates a step.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any


def _clean(v: Any) -> Any:
  if isinstance(v, float) and not math.isfinite(v):
    return None  # JSON has no NaN/inf; null marks a non-finite value
  return v


def read_jsonl(path: str) -> list[dict]:
  """All complete, parseable lines of a JSONL file (a torn last line is ignored)."""
  if not os.path.exists(path):
    return []
  out = []
  with open(path) as f:
    for line in f:
      if not line.endswith("\n"):
        break
      try:
        out.append(json.loads(line))
      except json.JSONDecodeError:
        break
  return out


class JsonlWriter:
  """One JSON object per line; whole lines only."""

  def __init__(self, path: str):
    self.path = path
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    self._repair()
    self._f = open(path, "a")

  def _repair(self) -> None:
    if not os.path.exists(self.path):
      return
    with open(self.path, "rb") as f:
      content = f.read()
    good = content[:content.rfind(b"\n") + 1]
    if len(good) != len(content):
      with open(self.path, "wb") as f:
        f.write(good)

  def write(self, record: dict) -> None:
    line = json.dumps({k: _clean(v) for k, v in record.items()}, sort_keys=False) + "\n"
    self._f.write(line)
    self._f.flush()
    os.fsync(self._f.fileno())

  def truncate_after(self, step: int) -> int:
    """Drops records with record['step'] >= step; returns how many were dropped."""
    records = read_jsonl(self.path)
    keep = [r for r in records if r.get("step", -1) < step]
    if len(keep) == len(records):
      return 0
    self._f.close()
    tmp = self.path + ".tmp"
    with open(tmp, "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in keep)
    os.replace(tmp, self.path)
    self._f = open(self.path, "a")
    return len(records) - len(keep)

  def close(self) -> None:
    self._f.close()


class TensorBoardWriter:
  """Scalars to TensorBoard through tensorboardX (imported only when enabled)."""

  def __init__(self, logdir: str):
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self._w = SummaryWriter(logdir)

  def write(self, step: int, scalars: dict) -> None:
    for k, v in scalars.items():
      if isinstance(v, (int, float)) and k != "step" and math.isfinite(v):
        self._w.add_scalar(k, v, step)
    self._w.flush()

  def close(self) -> None:
    self._w.close()
