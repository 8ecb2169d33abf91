"""Reading metrics logs: rldyn metrics.jsonl, or other trainers' logs as they come.

Formats (`read_metrics(..., format=...)`, default "auto" sniffs the file):

* `jsonl`: one JSON object per line (rldyn, and most custom loggers);
* `csv` / `tsv`: a table with a header row;
* `verl`: verl's console log, lines `step:N - key:value - key:value ...` (other
  lines, e.g. Ray's banners, are skipped; a `(TaskRunner pid=..)` prefix is fine;
  values printed as `np.float64(0.5)` are unwrapped);
* `tensorboard`: TensorBoard event files (a file, or a folder searched for
  `*tfevents*` files), read without TensorFlow (`rldyn.phases.tfevents`);
* `trl`: a Hugging Face `trainer_state.json`, whose `log_history` list holds
  one object per logging step.

A foreign log is mapped onto rldyn names with `keys` (rldyn name -> the log's
name), e.g. `parse_keys("step=global_step,entropy/execution=actor/ent_exec")`.
Reading never raises on bad content: non-UTF-8 bytes are replaced, torn,
unparsable or absurdly nested lines are skipped and counted, huge CSV fields and
400-digit numbers become missing values; missing, null, non-numeric and
non-finite values are skipped by the detector.
"""
from __future__ import annotations

import csv
import dataclasses
import io as _io
import json
import math
import os
import re
from typing import Any, Iterator, Mapping

from rldyn.phases import tfevents

Record = tuple[int, dict[str, float]]
FORMATS = ("auto", "jsonl", "csv", "tsv", "verl", "tensorboard", "trl")
_MAX_FIELDS = 200          # numeric field names remembered for hints
_SNIFF_BYTES = 1 << 16
# verl's console logger: f"step:{step}" then " - ".join(f"{k}:{v}") on one line.
_VERL_LINE = re.compile(r"(?:^|[\s)\]|])step:\s*(-?\d+)((?: - \S[^\n]*)?)$")
_WRAPPED = re.compile(r"^[A-Za-z_][\w.]{0,40}\((.{0,100})\)$")  # np.float64(0.5), tensor(0.5)


@dataclasses.dataclass
class MetricsLog:
  """Records read from a file, with what had to be skipped."""
  path: str
  records: list[Record]
  format: str = "jsonl"       # the format it was read as
  bad_lines: int = 0          # lines / records that could not be parsed
  no_step: int = 0            # records without a usable step
  step_from_index: bool = False  # no record had a step: line order was used
  undecodable: int = 0        # lines with bytes that are not UTF-8 (replaced)
  fields: list[str] = dataclasses.field(default_factory=list)  # numeric names seen
  error: str = ""             # why nothing could be read, if so

  def summary(self) -> str:
    parts = [f"{len(self.records)} records from {self.path} (read as {self.format})"]
    if self.error:
      parts.append(self.error)
    if self.bad_lines:
      parts.append(f"{self.bad_lines} unparsable lines skipped")
    if self.undecodable:
      parts.append(f"{self.undecodable} lines with non-UTF-8 bytes (replaced)")
    if self.no_step:
      parts.append(f"{self.no_step} records without a step skipped")
    if self.step_from_index:
      parts.append("no step column: line order used as step")
    return "; ".join(parts)

  @property
  def noteworthy(self) -> bool:
    return bool(self.error or self.bad_lines or self.no_step or self.step_from_index
                or self.undecodable)


def parse_keys(spec: str | None) -> dict[str, str]:
  """`"a=b,c=d"` or a JSON object -> {rldyn name: log name}."""
  if not spec:
    return {}
  spec = spec.strip()
  if spec.startswith("{"):
    try:
      mapping = json.loads(spec)
    except ValueError as e:
      raise ValueError(f"--keys is not valid JSON: {e}") from None
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
  if isinstance(v, str):
    v = v.strip()
    m = _WRAPPED.match(v)
    if m:
      v = m.group(1)
  try:
    return float(v)
  except (TypeError, ValueError, OverflowError):  # OverflowError: a 400-digit integer
    return math.nan


class _Reader:
  """Rows (dict per record, None for an unparsable one) of one file, per format."""

  def __init__(self, log: MetricsLog, step_key: str):
    self.log = log
    self.step_key = step_key

  def _lines(self, path: str) -> Iterator[str]:
    with open(path, "rb") as f:
      for raw in f:
        try:
          yield raw.decode("utf-8")
        except UnicodeDecodeError:
          self.log.undecodable += 1
          yield raw.decode("utf-8", errors="replace")

  def jsonl(self, path: str) -> Iterator[dict | None]:
    for line in self._lines(path):
      line = line.strip()
      if not line:
        continue
      try:
        obj = json.loads(line)  # accepts NaN / Infinity tokens
      except (ValueError, RecursionError):  # RecursionError: 10^5 nested '['
        yield None
        continue
      yield obj if isinstance(obj, dict) else None

  def table(self, path: str, delimiter: str) -> Iterator[dict | None]:
    with open(path, "rb") as f:
      text = _io.TextIOWrapper(f, encoding="utf-8", errors="replace", newline="")
      reader = csv.reader(text, delimiter=delimiter)
      header = None
      while True:
        try:
          row = next(reader)
        except StopIteration:
          return
        except csv.Error:  # a field over csv's 131,072-character limit, ...
          if header is not None:
            yield None
          continue
        if header is None:
          header = row
          continue
        if row:
          yield dict(zip(header, row))

  def verl(self, path: str) -> Iterator[dict | None]:
    for line in self._lines(path):
      m = _VERL_LINE.search(line.rstrip("\r\n"))
      if m is None:
        continue  # console noise, not a metrics line
      row: dict[str, Any] = {self.step_key: m.group(1)}
      for item in m.group(2).split(" - ")[1:]:
        key, sep, value = item.rpartition(":")
        if sep and key:
          row[key.strip()] = value
      yield row

  def trl(self, path: str) -> Iterator[dict | None]:
    with open(path, "rb") as f:
      text = f.read().decode("utf-8", errors="replace")
    try:
      doc = json.loads(text)
    except (ValueError, RecursionError) as e:
      self.log.error = f"not a JSON document ({type(e).__name__})"
      return
    history = doc.get("log_history") if isinstance(doc, dict) else doc
    if not isinstance(history, list):
      self.log.error = "a JSON document without a 'log_history' list"
      return
    for entry in history:
      yield entry if isinstance(entry, dict) else None

  def tensorboard(self, path: str) -> Iterator[dict | None]:
    events, stats = tfevents.read_scalars(path)
    for step, scalars in events:
      yield {self.step_key: step, **scalars}
    self.log.bad_lines += stats.bad_records + stats.truncated
    if not stats.files:
      self.log.error = "no event files (*tfevents*) found"
    elif not stats.events:
      self.log.error = f"no TensorBoard events in {stats.files} file(s)"


def sniff_format(path: str) -> str:
  """The format of path, from its name and first bytes (see FORMATS)."""
  if os.path.isdir(path) or "tfevents" in os.path.basename(path):
    return "tensorboard"
  lower = os.fspath(path).lower()
  for ext, fmt in ((".csv", "csv"), (".tsv", "tsv")):
    if lower.endswith(ext):
      return fmt
  with open(path, "rb") as f:
    head = f.read(_SNIFF_BYTES)
  if tfevents.looks_like_tfrecord(head):
    return "tensorboard"
  text = head.decode("utf-8", errors="replace")
  lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
  if lines and (lines[0] in ("{", "[") or
                (lines[0].startswith("{") and '"log_history"' in lines[0])):
    return "trl"  # one JSON document (trainer_state.json is pretty-printed)
  if any(_VERL_LINE.search(ln) for ln in lines[:200]):
    return "verl"
  return "jsonl"


def read_metrics(path: str, keys: Mapping[str, str] | None = None,
                 names: list[str] | None = None, format: str = "auto"  # pylint: disable=redefined-builtin
                 ) -> MetricsLog:
  """Reads a metrics log in any of FORMATS.

  Args:
    path: the file (or, for TensorBoard, a folder of event files).
    keys: rldyn name -> name in the file (include `step` if the step column
      has another name). Unmapped names are looked up as they are.
    names: rldyn names to keep (default: every numeric field).
    format: one of FORMATS; "auto" guesses from the name and the first bytes.

  Returns:
    A MetricsLog whose records use rldyn names; values are floats (NaN where
    missing or unparsable). Bad content is counted, never raised; an
    unreadable path (missing, no permission) raises OSError.
  """
  if format not in FORMATS:
    raise ValueError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
  keys = dict(keys or {})
  step_key = keys.pop("step", "step")
  reverse = {v: k for k, v in keys.items()}
  fmt = sniff_format(path) if format == "auto" else format
  log = MetricsLog(path=os.fspath(path), records=[], format=fmt)
  reader = _Reader(log, step_key)
  rows_of = {"jsonl": reader.jsonl, "verl": reader.verl, "trl": reader.trl,
             "tensorboard": reader.tensorboard,
             "csv": lambda p: reader.table(p, ","), "tsv": lambda p: reader.table(p, "\t")}
  seen: dict[str, None] = {}
  rows: list[tuple[float | None, dict[str, float]]] = []
  for row in rows_of[fmt](path):
    if row is None:
      log.bad_lines += 1
      continue
    if len(seen) < _MAX_FIELDS:
      for k, v in row.items():
        if isinstance(k, str) and k != step_key and k not in seen and math.isfinite(_to_float(v)):
          seen[k] = None
    if names is None:
      rec = {reverse.get(k, k): _to_float(v) for k, v in row.items()
             if isinstance(k, str) and k != step_key}
    else:
      rec = {n: _to_float(row.get(keys.get(n, n))) for n in names}
    rows.append((_to_float(row[step_key]) if step_key in row else None, rec))
  log.fields = list(seen)
  if rows and all(step is None for step, _ in rows):
    log.step_from_index = True
    log.records = [(i, rec) for i, (_, rec) in enumerate(rows)]
    return log
  for step, rec in rows:
    if step is not None and math.isfinite(step):
      log.records.append((int(round(step)), rec))
    else:
      log.no_step += 1
  if not rows and not log.error:
    log.error = "no records found"
  return log
