"""What changed, checkpoint by checkpoint: pass@k, weight sparsity/rank, probe entropy dynamics.

    python -m rldyn.replay --workdir=/tmp/rldyn/two_phase
    python -m rldyn.replay --workdir=DIR --steps=100,200 --n=64 --probe=128 --k=1,4,16,64
    python -m rldyn.replay --workdir=DIR --compare=OTHER_WORKDIR     # overlap of updated weights
    python -m rldyn.replay --workdir=DIR --max_new_tokens=224         # a longer budget: replay/max_new_tokens_224/

Writes DIR/replay/{replay.jsonl, passk.json, sparsity.json, report.md, *.png}. Results are cached per
checkpoint: a rerun (or a run while training continues) replays only new checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence
import os

from absl import app
from absl import flags
from absl import logging

from rldyn import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "The RL run's workdir.", required=True)
_STEPS = flags.DEFINE_string("steps", "all", "Checkpoint steps to replay, comma-separated, or 'all'.")
_N = flags.DEFINE_integer("n", 64, "Samples per probe problem per checkpoint.")
_K = flags.DEFINE_string("k", "", "pass@k values, comma-separated ('' = 1, 2, 4, ... <= n, and n).")
_PROBE = flags.DEFINE_integer("probe", 128, "Held-out probe problems.")
_PROBE_SEED = flags.DEFINE_integer("probe_seed", None, "Probe set seed (default: task.eval_seed + 1).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling key of the replay (shared by every checkpoint).")
_BATCH = flags.DEFINE_integer("batch_size", 512, "Rows per sampling / scoring call.")
_COMPARE = flags.DEFINE_string("compare", "", "Another run's workdir: overlap of updated weights.")
_PLOTS = flags.DEFINE_bool("plots", True, "Write PNG plots (needs matplotlib).")
_MAX_NEW = flags.DEFINE_integer(
    "max_new_tokens", None, "Generation budget (default: the run's); another budget writes "
    "DIR/replay/max_new_tokens_N/ beside the run's own replay.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar on stderr.")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  from rldyn.replay import runner  # pylint: disable=g-import-not-at-top  (imports jax)
  from rldyn.metrics import passk  # pylint: disable=g-import-not-at-top
  workdir = os.path.abspath(_WORKDIR.value)
  try:
    opts = runner.ReplayOptions(
        steps=runner.parse_ints(_STEPS.value), n=_N.value, ks=runner.parse_ints(_K.value),
        probe=_PROBE.value, probe_seed=_PROBE_SEED.value, seed=_SEED.value, batch_size=_BATCH.value,
        compare=_COMPARE.value, plots=_PLOTS.value, progress=_PROGRESS.value,
        max_new_tokens=_MAX_NEW.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  result = runner.replay(workdir, opts)
  cached = sorted(set(result.records) - set(result.computed))
  print(f"[replay] {len(result.records)} model(s): computed {result.computed or 'none'}, cached "
        f"{cached or 'none'} ({result.seconds:.1f} s)")
  base = result.records.get(runner.BASE_STEP)
  ks = opts.k_grid()
  for step, rec in sorted(result.records.items()):
    curve = passk.pass_at_k_curve(rec["n"], rec["per_problem_correct"], ks)
    name = "base" if step == runner.BASE_STEP else f"step {step}"
    line = " ".join(f"@{k} {v:.3f}" for k, v in curve.items())
    extra = ""
    if base is not None and step != runner.BASE_STEP:
      cmp = passk.compare_to_base(rec["n"], base["per_problem_correct"], rec["per_problem_correct"], ks)
      extra = f"  crossover k {cmp['crossover_k']}  dSE {cmp['delta_se']:+.3f}"
    print(f"  {name:>10}  pass{line}{extra}")
  print(f"Wrote {result.out_dir}/report.md (and passk.json, sparsity.json, plots).")


def entry() -> None:
  cli.run(main, __name__)


if __name__ == "__main__":
  entry()
