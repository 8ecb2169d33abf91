"""From a metrics file to phases.json, phases.png and a verdict (what the CLI runs)."""
from __future__ import annotations

import json
import os
from typing import Mapping

from rldyn.phases import io
from rldyn.phases.detect import PhaseConfig, PhaseResult, detect


def write_json_atomic(path: str, obj: object) -> None:
  """Writes JSON via a temporary file and a rename, so readers never see a torn file."""
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, allow_nan=False)
    f.write("\n")
  os.replace(tmp, path)


def analyse(metrics_path: str, out_dir: str, *, keys: Mapping[str, str] | None = None,
            config: PhaseConfig = PhaseConfig(), plot: bool = True
            ) -> tuple[PhaseResult, io.MetricsLog]:
  """Reads a metrics log, detects, writes out_dir/phases.json (and phases.png).

  Args:
    metrics_path: rldyn metrics.jsonl, or a foreign JSONL/CSV file.
    out_dir: where phases.json and phases.png go (created if needed).
    keys: rldyn name -> the log's name, for foreign logs.
    config: detector settings.
    plot: also write phases.png (needs matplotlib).

  Returns:
    The result and the log as read.
  """
  log = io.read_metrics(metrics_path, keys=keys, names=[s.name for s in config.signals])
  result = detect(log.records, config)
  if log.bad_lines or log.no_step or log.step_from_index:
    result.reason += f" Input: {log.summary()}."
  os.makedirs(out_dir, exist_ok=True)
  write_json_atomic(os.path.join(out_dir, "phases.json"), result.to_json())
  if plot:
    from rldyn.phases.plot import plot_phases  # pylint: disable=g-import-not-at-top
    plot_phases(result, os.path.join(out_dir, "phases.png"))
  return result, log
