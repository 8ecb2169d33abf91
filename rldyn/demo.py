"""`make demo`: the default study end to end on CPU, then a short table of what happened.

    python -m rldyn.demo --workdir=runs/demo

Runs experiments/two_phase.py (countdown; pretrains the base model, then GRPO), prints base vs final
held-out accuracy and pass@1, the trajectory of execution- and planning-token entropy, and the
phase detector's verdict. Rerunning resumes (or just reprints, if the run is complete).
"""

from __future__ import annotations

import os
import sys

from absl import app
from absl import flags
from absl import logging

_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Where the demo run lives.")
_VARIANT = flags.DEFINE_string("variant", "", "experiments/two_phase.py variant ('' or smoke).")


def summary(workdir: str, points: int = 8) -> str:
  """The demo table from a finished run's eval.jsonl and metrics.jsonl."""
  from rldyn.metrics.writers import read_jsonl  # pylint: disable=g-import-not-at-top
  evals = read_jsonl(os.path.join(workdir, "eval.jsonl"))
  rows = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  if not evals or not rows:
    return f"no finished run in {workdir}"
  base, final = evals[0], evals[-1]
  lines = [
      f"held-out ({base['step']} -> {final['step']} RL steps)   base    final   change",
      f"  greedy accuracy                {base['eval/accuracy']:.3f}   {final['eval/accuracy']:.3f}"
      f"   {final['eval/accuracy'] - base['eval/accuracy']:+.3f}",
      f"  sampled pass@1                 {base['eval/pass@1']:.3f}   {final['eval/pass@1']:.3f}"
      f"   {final['eval/pass@1'] - base['eval/pass@1']:+.3f}",
      "",
      "  step   train acc   H(execution)   H(planning)   semantic H(planning)",
  ]
  idx = sorted({round(i * (len(rows) - 1) / max(points - 1, 1)) for i in range(points)})
  for i in idx:
    r = rows[i]
    lines.append(f"  {r['step']:4d}   {r['accuracy']:9.3f}   {r['entropy/execution']:12.3f}   "
                 f"{r['entropy/planning']:11.3f}   {r['semantic_entropy/planning']:20.3f}")
  return "\n".join(lines)


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  from rldyn import launch  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.getcwd())
  from experiments import two_phase  # pylint: disable=g-import-not-at-top
  workdir = os.path.abspath(_WORKDIR.value)
  launch.print_devices()
  launch.run(two_phase.get_config(_VARIANT.value), workdir)
  print("\n" + summary(workdir), flush=True)
  from rldyn.phases import report  # pylint: disable=g-import-not-at-top
  result, _ = report.analyse(os.path.join(workdir, "metrics.jsonl"), workdir)
  print("\nPhase detector (python -m rldyn.phases; wrote phases.json, phases.png):\n" + result.verdict(),
        flush=True)


if __name__ == "__main__":
  app.run(main)
