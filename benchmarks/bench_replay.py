"""Replay time per checkpoint: sampling, scoring, host work (verify, roles) and weight statistics.

    python benchmarks/bench_replay.py                          # demo-size model, 128 problems × 64
    python benchmarks/bench_replay.py --size=smoke --probe=32 --n=16
    python benchmarks/bench_replay.py --workdir=/tmp/rldyn/two_phase    # an existing run (copy kept)

Without --workdir it builds a throwaway run of the chosen size (a few pretraining steps, two RL steps
with a random reward, checkpoints 1 and 2). An untrained model rarely stops early, so every response
runs to max_new_tokens: the sampling time is the worst case for that size. With --workdir the replay
goes to a copy of the run's replay/ (the run's own cache is left alone). A second, fully cached replay
is timed as well.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import banner  # noqa: E402
from rldyn import config as config_lib  # noqa: E402
from rldyn import launch  # noqa: E402
from rldyn.replay import runner  # noqa: E402
from rldyn.workdir import Workdir  # noqa: E402


def build_run(size: str, root: str) -> str:
  workdir = os.path.join(root, f"run_{size}")
  c = config_lib.default()
  if size == "smoke":
    config_lib.shrink(c)
  c.pretrain.steps = 10
  c.pretrain.eval_samples = 1
  c.task.eval_size = 16
  c.rl.steps = 2
  c.rl.prompts_per_step = 8
  c.rl.group_size = 4
  c.checkpoint.every = 1
  c.eval.every = 2
  c.eval.samples = 1
  c.reward.name = "random"  # moves the weights without a trained base
  launch.run(c, workdir)
  return workdir


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--workdir", default="", help="an existing RL run (its replay/ is not touched)")
  ap.add_argument("--size", default="demo", choices=("demo", "smoke"))
  ap.add_argument("--probe", type=int, default=128)
  ap.add_argument("--n", type=int, default=64)
  ap.add_argument("--batch_size", type=int, default=512)
  args = ap.parse_args()
  banner("replay")
  root = tempfile.mkdtemp(prefix="bench_replay_")
  try:
    if args.workdir:
      workdir = os.path.join(root, "run")
      shutil.copytree(args.workdir, workdir, ignore=shutil.ignore_patterns("replay"), symlinks=True)
    else:
      t0 = time.time()
      workdir = build_run(args.size, root)
      print(f"built a {args.size} run in {time.time() - t0:.0f} s", flush=True)
    opts = runner.ReplayOptions(n=args.n, probe=args.probe, batch_size=args.batch_size, progress=False)
    cfg = Workdir(workdir).load_config()[0]
    print(f"model d={cfg.model.d_model} layers={cfg.model.n_layers}, max_new_tokens="
          f"{cfg.sampling.max_new_tokens}; probe {args.probe} problems × n {args.n} = "
          f"{args.probe * args.n} responses per checkpoint, batch {args.batch_size}", flush=True)
    res = runner.replay(workdir, opts)
    print(f"\nfirst replay: {res.seconds:.1f} s for {len(res.computed)} models "
          f"(compilations: {res.compiled})")
    print(f"{'model':>8} {'sample s':>9} {'score s':>8} {'host s':>7} {'weights s':>9} {'total s':>8} "
          f"{'resp tok':>9} {'tok/s':>8}")
    for step in res.computed:
      rec = res.records[step]
      t = rec["time_s"]
      tokens = rec["probe"]["response_len/mean"] * rec["n"] * rec["problems"]
      name = "base" if step == 0 else f"step {step}"
      print(f"{name:>8} {t.get('sample', 0):9.1f} {t.get('score', 0):8.1f} {t.get('host', 0):7.1f} "
            f"{t.get('weights', 0):9.2f} {t['total']:8.1f} {tokens:9.0f} {tokens / t['sample']:8.0f}")
    again = runner.replay(workdir, opts)
    print(f"\ncached rerun: {again.seconds:.2f} s (computed {again.computed or 'nothing'})")
  finally:
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
  main()
