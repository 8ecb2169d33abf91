"""DIR/replay/replay.jsonl: one line per replayed checkpoint (and per cross-run comparison).

Every line carries the `settings` it was computed with (probe set, n, sampling config, keys, batch
layout, atols); a rerun reuses the lines whose settings equal its own and computes only what is
missing, so a replay can be rerun while training continues. Lines are appended whole (JsonlWriter), so
a killed replay leaves at most a missing line, never a torn one. Later lines win over earlier ones.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np

from rldyn.metrics.writers import JsonlWriter, read_jsonl

CHECKPOINT, COMPARE = "checkpoint", "compare"


def _finite(obj: Any) -> Any:
  if isinstance(obj, np.generic):
    obj = obj.item()
  if isinstance(obj, float) and not math.isfinite(obj):
    return None  # JSON has no NaN/inf; null marks a value that could not be computed
  if isinstance(obj, dict):
    return {k: _finite(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_finite(v) for v in obj]
  return obj


def canonical(obj: Any) -> Any:
  """A JSON round trip (tuples → lists, NaN → null), so records compare equal to what is read back."""
  return json.loads(json.dumps(_finite(obj), sort_keys=True, allow_nan=False))


class ReplayCache:
  """The cached per-checkpoint records of one workdir, for one set of settings."""

  def __init__(self, path: str, settings: dict):
    self.path = path
    self.settings = canonical(settings)
    os.makedirs(os.path.dirname(path), exist_ok=True)

  def _lines(self) -> list[dict]:
    return [r for r in read_jsonl(self.path) if r.get("settings") == self.settings]

  def checkpoints(self) -> dict[int, dict]:
    """{step: record} of checkpoint records (step 0 = the base) with these settings."""
    return {int(r["step"]): r for r in self._lines() if r.get("kind") == CHECKPOINT}

  def comparisons(self, other: str) -> dict[int, dict]:
    """{step: record} of overlap records against the run at `other` with these settings."""
    return {int(r["step"]): r for r in self._lines()
            if r.get("kind") == COMPARE and r.get("other") == other}

  def stale(self) -> int:
    """How many lines were computed with other settings (ignored)."""
    return len(read_jsonl(self.path)) - len(self._lines())

  def append(self, record: dict) -> dict:
    record = canonical({**record, "settings": self.settings})
    writer = JsonlWriter(self.path)
    try:
      writer.write(record)
    finally:
      writer.close()
    return record
