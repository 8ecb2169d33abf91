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

Single writer: in a multi-process run only process 0 writes (`is_writer`, the one place that rule lives);
on the other processes a JsonlWriter reads but writes nothing. Paths may be any `etils.epath` URI
(gs://...): object stores cannot append, so a remote log is rewritten whole, as one object, per line.
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any


def is_writer() -> bool:
  """Whether this process writes the workdir: the only process, or process 0 of a multi-process run."""
  jax = sys.modules.get("jax")  # (no jax imported: a numpy-only tool, a single process)
  return jax is None or jax.process_index() == 0


def is_local(path: str) -> bool:
  """A filesystem path (not a URI such as gs://bucket/dir, which goes through etils.epath)."""
  return "://" not in str(path)


def _epath(path: str):
  from etils import epath  # pylint: disable=g-import-not-at-top
  return epath.Path(path)


def exists(path: str) -> bool:
  return os.path.exists(path) if is_local(path) else _epath(path).exists()


def read_bytes(path: str) -> bytes:
  if is_local(path):
    with open(path, "rb") as f:
      return f.read()
  return _epath(path).read_bytes()


def write_bytes_atomic(path: str, data: bytes) -> None:
  """Readers see the old content or the new, never half (local: tmp + fsync + rename; remote: one object)."""
  if not is_local(path):
    p = _epath(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def makedirs(path: str) -> None:
  if is_local(path):
    os.makedirs(path, exist_ok=True)
  else:
    _epath(path).mkdir(parents=True, exist_ok=True)


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
  if not exists(path):
    return [], [], False
  content = read_bytes(path)
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
  write_bytes_atomic(path, "".join(json.dumps(r) + "\n" for r in records).encode())


class JsonlWriter:
  """One JSON object per line; whole lines only. Repairs the file on open (module docstring)."""

  def __init__(self, path: str, unique_key: str | None = None):
    self.path = path
    self.unique_key = unique_key
    self.writer = is_writer()
    self.repaired = None
    self._f = None
    self._remote: bytes | None = None  # a remote log's content (rewritten whole on each line)
    if not self.writer:
      return
    makedirs(os.path.dirname(os.path.abspath(path)) if is_local(path) else str(_epath(path).parent))
    self.repaired = self._repair()
    self._open()

  def _open(self) -> None:
    if is_local(self.path):
      self._f = open(self.path, "a")
    else:
      self._remote = read_bytes(self.path) if exists(self.path) else b""

  def _repair(self) -> dict | None:
    """Cuts a torn tail, sets damaged lines aside, drops duplicate keys; returns what it did (or None)."""
    records, bad, torn = scan_jsonl(self.path)
    kept = _dedupe(records, self.unique_key)
    if not bad and not torn and len(kept) == len(records):
      return None
    if bad:
      old = read_bytes(self.path + ".bad") if exists(self.path + ".bad") else b""
      write_bytes_atomic(self.path + ".bad", old + b"".join(f"# line {lineno}: ".encode() + raw + b"\n"
                                                           for lineno, raw in bad))
    _rewrite(self.path, kept)
    return {"bad_lines": len(bad), "line_numbers": [n for n, _ in bad][:100], "torn_tail": torn,
            "duplicates_dropped": len(records) - len(kept), "set_aside_in": self.path + ".bad" if bad else None}

  def write(self, record: dict) -> None:
    if not self.writer:
      return
    line = json.dumps({k: _clean(v) for k, v in record.items()}, sort_keys=False) + "\n"
    if self._f is None:
      self._remote += line.encode()
      write_bytes_atomic(self.path, self._remote)
      return
    self._f.write(line)
    self._f.flush()
    os.fsync(self._f.fileno())

  def truncate_after(self, step: int) -> int:
    """Drops records with record['step'] >= step; returns how many were dropped."""
    records = read_jsonl(self.path)
    keep = [r for r in records if r.get("step", -1) < step]
    if len(keep) == len(records) or not self.writer:
      return len(records) - len(keep)
    self.close()
    _rewrite(self.path, keep)
    self._open()
    return len(records) - len(keep)

  def close(self) -> None:
    if self._f is not None:
      self._f.close()
      self._f = None


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
