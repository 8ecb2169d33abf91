"""Did the two-phase arc happen, and when?

    python -m rldyn.phases --workdir=/tmp/rldyn/two_phase
    python -m rldyn.phases --metrics=other_run.csv --out_dir=/tmp/p \
        --keys=step=global_step,entropy/execution=actor/entropy_exec
    python -m rldyn.phases --metrics=verl_console.log --out_dir=/tmp/p --keys=...
    python -m rldyn.phases --metrics=tensorboard_log/run1 --out_dir=/tmp/p --keys=...
    python -m rldyn.phases --metrics=checkpoint-500/trainer_state.json --out_dir=/tmp/p --keys=...
    python -m rldyn.phases --workdir=/tmp/rldyn/two_phase --until_step=200 --out_dir=/tmp/p200
    python -m rldyn.phases --workdir=/tmp/rldyn/rare_long --from_step=80 --until_step=159 --out_dir=/tmp/s2

Reads WORKDIR/metrics.jsonl (or --metrics: JSONL, CSV/TSV, verl console log,
TensorBoard event files, TRL trainer_state.json; see rldyn/phases/io.py), writes
phases.json and phases.png (into --out_dir, default the workdir or the metrics
file's folder) and prints a one-paragraph verdict. Bad content never raises: the
verdict says what was skipped, or why nothing could be concluded.
"""
import dataclasses
import os
from typing import Sequence

from absl import app
from absl import flags

from rldyn import cli
from rldyn import workdir as workdir_lib
from rldyn.phases.detect import PhaseConfig, SignalSpec
from rldyn.phases.io import FORMATS, parse_keys
from rldyn.phases.model import ACCURACY
from rldyn.phases.report import analyse

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory holding metrics.jsonl.")
_METRICS = flags.DEFINE_string(
    "metrics", None, "A metrics log instead: a file, or a folder of TensorBoard event files.")
_FORMAT = flags.DEFINE_enum("format", "auto", FORMATS, "Format of the log (auto: sniffed).")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where to write phases.json / phases.png.")
_KEYS = flags.DEFINE_string(
    "keys", None, "Names in a foreign log: 'rldyn_name=log_name,...' (step=... too) or JSON.")
_PLOT = flags.DEFINE_bool("plot", True, "Write phases.png.")
_WITH_ACCURACY = flags.DEFINE_bool(
    "with_accuracy", False, "Fit accuracy jointly (it must not fall in phase 1).")
_UNTIL_STEP = flags.DEFINE_integer(
    "until_step", None, "Judge the run as of this step: later records are ignored (runs of different "
    "lengths compared at a common step; write to another --out_dir to keep the full run's verdict).")
_FROM_STEP = flags.DEFINE_integer(
    "from_step", None, "Ignore the records before this step (e.g. judge one curriculum stage on its own, "
    "with --until_step at the stage's end).")
_BIC_THRESHOLD = flags.DEFINE_float(
    "bic_threshold", None, "dBIC needed to call two regimes (default: the library's).")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if bool(_WORKDIR.value) == bool(_METRICS.value):
    raise app.UsageError("give exactly one of --workdir or --metrics")
  path = _METRICS.value or os.path.join(_WORKDIR.value, workdir_lib.METRICS)
  if not (os.path.isfile(path) or (_METRICS.value and os.path.isdir(path))):
    raise app.UsageError(f"no metrics file at {path}")
  out_dir = _OUT_DIR.value or _WORKDIR.value or (
      path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path)))
  config = PhaseConfig()
  try:
    keys = parse_keys(_KEYS.value)
    if _WITH_ACCURACY.value:
      config = dataclasses.replace(config, signals=tuple(
          SignalSpec(s.name, ACCURACY) if s.name == "accuracy" else s for s in config.signals))
    if _BIC_THRESHOLD.value is not None:
      config = dataclasses.replace(config, bic_threshold=_BIC_THRESHOLD.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  try:
    result, _ = analyse(path, out_dir, keys=keys, config=config, plot=_PLOT.value,
                        format=_FORMAT.value, until_step=_UNTIL_STEP.value,
                        from_step=_FROM_STEP.value)
  except OSError as e:
    raise SystemExit(f"rldyn.phases: {e.strerror or e} ({e.filename or path})") from None
  print(result.verdict())
  print(f"Wrote {os.path.join(out_dir, workdir_lib.PHASES)}"
        + (f" and {os.path.join(out_dir, 'phases.png')}" if _PLOT.value else "") + ".")


def entry() -> None:
  cli.run(main, __name__, guard=False)  # numpy only: no jax here


if __name__ == "__main__":
  entry()
