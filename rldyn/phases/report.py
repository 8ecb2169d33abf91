"""From a metrics log to phases.json, phases.png and a verdict (what the CLI runs)."""
from __future__ import annotations

import os
from typing import Mapping

from rldyn import workdir as workdir_lib
from rldyn.phases import io
from rldyn.phases.detect import PhaseConfig, PhaseResult, detect
from rldyn.phases.model import FIT_ROLES


def write_json_atomic(path: str, obj: object) -> None:
  """Strict JSON, whole or not at all, by the workdir's single writer (local or gs:// paths)."""
  workdir_lib.write_json_atomic(path, obj, indent=2, strict=True)


def analyse(metrics_path: str, out_dir: str, *, keys: Mapping[str, str] | None = None,
            config: PhaseConfig = PhaseConfig(), plot: bool = True, format: str = "auto",  # pylint: disable=redefined-builtin
            until_step: int | None = None, from_step: int | None = None
            ) -> tuple[PhaseResult, io.MetricsLog]:
  """Reads a metrics log, detects, writes out_dir/phases.json (and phases.png).

  Args:
    metrics_path: rldyn metrics.jsonl, or another trainer's log (io.FORMATS).
    out_dir: where phases.json and phases.png go (created if needed).
    keys: rldyn name -> the log's name, for foreign logs.
    config: detector settings.
    plot: also write phases.png (needs matplotlib).
    format: one of io.FORMATS ("auto" sniffs the file).
    until_step: judge the run as of this step (later records are ignored), e.g. to compare runs of
      different lengths at a common step.
    from_step: ignore the records before this step, e.g. to judge one curriculum stage on its own.

  Returns:
    The result and the log as read.
  """
  log = io.read_metrics(metrics_path, keys=keys, names=config.read_names(),
                        format=format)
  records = [r for r in log.records
             if (until_step is None or r[0] <= until_step) and (from_step is None or r[0] >= from_step)]
  result = detect(records, config)
  wanted = [s.name for s in config.signals if s.role in FIT_ROLES]
  if all(f.n == 0 for f in result.signals.values() if f.role in FIT_ROLES) and log.fields:
    shown = ", ".join(log.fields[:30]) + (", ..." if len(log.fields) > 30 else "")
    result.reason += (f" The log's numeric fields are: {shown}. Name the phase signals with "
                      f"--keys, e.g. --keys={wanted[0]}=<field>.")
  if log.noteworthy:
    result.reason += f" Input: {log.summary()}."
  os.makedirs(out_dir, exist_ok=True)
  write_json_atomic(os.path.join(out_dir, workdir_lib.PHASES), result.to_json())
  if plot:
    from rldyn.phases.plot import plot_phases  # pylint: disable=g-import-not-at-top
    plot_phases(result, os.path.join(out_dir, workdir_lib.PHASES_PLOT))
  return result, log
