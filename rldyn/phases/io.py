"""Reading metrics logs: rldyn metrics.jsonl, or JSONL / CSV from other trainers.

A foreign log is mapped onto rldyn names with `keys` (rldyn name -> the log's
name), e.g. `parse_keys("step=global_step,entropy/execution=actor/ent_exec")`.
Reading never raises on bad content: torn or unparsable lines, missing, null,
non-numeric and non-finite values are skipped and counted.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from typing import Any, Iterator, Mapping

Record = tuple[int, dict[str, float]]


@dataclasses.dataclass
class MetricsLog:
  """Records read from a file, with what had to be skipped."""
  path: str
  records: list[Record]
  bad_lines: int = 0          # lines that were not a JSON object / CSV row
  no_step: int = 0            # records without a usable step
  step_from_index: bool = False  # no record had a step: line order was used

  def summary(self) -> str:
    parts = [f"{len(self.records)} records from {self.path}"]
    if self.bad_lines:
      parts.append(f"{self.bad_lines} unparsable lines skipped")
    if self.no_step:
      parts.append(f"{self.no_step} records without a step skipped")
    if self.step_from_index:
      parts.append("no step column: line order used as step")
    return "; ".join(parts)


def parse_keys(spec: str | None) -> dict[str, str]:
  """`"a=b,c=d"` or a JSON object -> {rldyn name: log name}."""
  if not spec:
    return {}
  spec = spec.strip()
  if spec.startswith("{"):
    mapping = json.loads(spec)
    if not isinstance(mapping, dict):
      raise ValueError(f"--keys JSON must be an object, got {spec!r}")
    return {str(k): str(v) for k, v in mapping.items()}
  out = {}
  for item in spec.split(","):
    item = item.strip()
    if not item:
      continue
    if "=" not in item:
      raise ValueError(f"--keys item {item!r} is not NAME=LOG_NAME")
    k, v = item.split("=", 1)
    out[k.strip()] = v.strip()
  return out


def _to_float(v: Any) -> float:
  if v is None or isinstance(v, bool):
    return math.nan
  try:
    return float(v)
  except (TypeError, ValueError):
    return math.nan


def _rows(path: str) -> Iterator[dict[str, Any] | None]:
  """Dict per line/row; None for a line that cannot be parsed."""
  if path.endswith(".csv") or path.endswith(".tsv"):
    with open(path, newline="") as f:
      reader = csv.DictReader(f, delimiter="\t" if path.endswith(".tsv") else ",")
      for row in reader:
        yield row
    return
  with open(path) as f:
    for line in f:
      line = line.strip()
      if not line:
        continue
      try:
        obj = json.loads(line)  # accepts NaN / Infinity tokens
      except ValueError:
        yield None
        continue
      yield obj if isinstance(obj, dict) else None


def read_metrics(path: str, keys: Mapping[str, str] | None = None,
                 names: list[str] | None = None) -> MetricsLog:
  """Reads a JSONL (one object per line) or CSV/TSV metrics file.

  Args:
    path: the file; `.csv`/`.tsv` are read as tables, anything else as JSONL.
    keys: rldyn name -> name in the file (include `step` if the step column
      has another name). Unmapped names are looked up as they are.
    names: rldyn names to keep (default: every numeric field).

  Returns:
    A MetricsLog whose records use rldyn names; values are floats (NaN where
    missing or unparsable).
  """
  keys = dict(keys or {})
  step_key = keys.pop("step", "step")
  reverse = {v: k for k, v in keys.items()}
  log = MetricsLog(path=os.fspath(path), records=[])
  rows: list[tuple[float, dict[str, float]]] = []
  for row in _rows(path):
    if row is None:
      log.bad_lines += 1
      continue
    if names is None:
      rec = {reverse.get(k, k): _to_float(v) for k, v in row.items() if k != step_key}
    else:
      rec = {n: _to_float(row.get(keys.get(n, n))) for n in names}
    rows.append((_to_float(row[step_key]) if step_key in row else None, rec))
  if rows and all(step is None for step, _ in rows):
    log.step_from_index = True
    log.records = [(i, rec) for i, (_, rec) in enumerate(rows)]
    return log
  for step, rec in rows:
    if step is not None and math.isfinite(step):
      log.records.append((int(round(step)), rec))
    else:
      log.no_step += 1
  return log
