"""Append-only JSONL logs that never tear and heal when damaged, and an optional TensorBoard mirror.

Each record is serialised first and written with a single `write` of one complete line, then flushed
and fsynced, so a kill leaves either the whole line or none of it. Opening a log repairs it: a torn tail
(a crash in the middle of the OS write) is cut, and lines that cannot be read — damage in the middle of
the file: garbage, NUL blocks, bytes that are not UTF-8, a line that is not a JSON object — are moved to
`<log>.bad` (appended, with their line numbers), keeping every valid line in order. `repaired` says what
happened, so the caller can log an event. With `unique_key` (metrics.jsonl, eval.jsonl: "step") a key
value appears once: a later line of the same step replaces an earlier one. On resume,
`truncate_after(step)` drops lines for steps the restored checkpoint has not reached, so a resumed log
never holds a step twice.
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


def _parse(raw: bytes) -> dict | None:
  """One line as a JSON object, or None when it is not one (bad bytes, bad JSON, not an object)."""
  try:
    obj = json.loads(raw.decode("utf-8"))
  except (UnicodeDecodeError, ValueError, RecursionError):
    return None
  return obj if isinstance(obj, dict) else None


def scan_jsonl(path: str) -> tuple[list[dict], list[tuple[int, bytes]], bool]:
  """(valid records, [(1-based line number, raw bytes)] of unreadable lines, torn tail?)."""
  if not os.path.exists(path):
    return [], [], False
  with open(path, "rb") as f:
    content = f.read()
  lines = content.split(b"\n")
  torn = lines[-1] != b""  # the last line has no newline: cut short by a crash
  records, bad = [], []
  for i, raw in enumerate(lines[:-1]):
    if not raw.strip():
      continue
    obj = _parse(raw)
    if obj is None:
      bad.append((i + 1, raw))
    else:
      records.append(obj)
  return records, bad, torn


def read_jsonl(path: str) -> list[dict]:
  """Every complete, readable line of a JSONL file (damaged lines and a torn tail are skipped)."""
  return scan_jsonl(path)[0]


def _dedupe(records: list[dict], key: str | None) -> list[dict]:
  """The records with each `key` value once (its last line), in the order of their last lines."""
  if key is None:
    return records
  last = {r[key]: i for i, r in enumerate(records) if key in r}
  return [r for i, r in enumerate(records) if key not in r or last[r[key]] == i]


def _rewrite(path: str, records: list[dict]) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in records)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


class JsonlWriter:
  """One JSON object per line; whole lines only. Repairs the file on open (module docstring)."""

  def __init__(self, path: str, unique_key: str | None = None):
    self.path = path
    self.unique_key = unique_key
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    self.repaired = self._repair()
    self._f = open(path, "a")

  def _repair(self) -> dict | None:
    """Cuts a torn tail, sets damaged lines aside, drops duplicate keys; returns what it did (or None)."""
    records, bad, torn = scan_jsonl(self.path)
    kept = _dedupe(records, self.unique_key)
    if not bad and not torn and len(kept) == len(records):
      return None
    if bad:
      with open(self.path + ".bad", "ab") as f:
        for lineno, raw in bad:
          f.write(f"# line {lineno}: ".encode() + raw + b"\n")
    _rewrite(self.path, kept)
    return {"bad_lines": len(bad), "line_numbers": [n for n, _ in bad][:100], "torn_tail": torn,
            "duplicates_dropped": len(records) - len(kept), "set_aside_in": self.path + ".bad" if bad else None}

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
    _rewrite(self.path, keep)
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
