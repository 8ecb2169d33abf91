"""The end-of-run summary a finished RL run prints (and a rerun of a finished run prints again).

Held-out greedy accuracy and sampled pass@1 of the base and of the final policy, the trajectory of
training accuracy, of entropy by token role and of strategy diversity, the phase detector's verdict on the run so far, and where
the run's files are.
"""

from __future__ import annotations

import os

from rldyn import phases
from rldyn.workdir import Workdir


def table(wd: Workdir, points: int = 8) -> str:
  """Base vs final held-out results and `points` rows of the per-step trajectory."""
  evals, rows = wd.read_evals(), wd.read_metrics()
  if not evals or not rows:
    return f"no finished run in {wd.root}"
  base, final = evals[0], evals[-1]
  lines = [
      f"held-out ({base['step']} -> {final['step']} RL steps)   base    final   change",
      f"  greedy accuracy                {base['eval/accuracy']:.3f}   {final['eval/accuracy']:.3f}"
      f"   {final['eval/accuracy'] - base['eval/accuracy']:+.3f}",
      f"  sampled pass@1                 {base['eval/pass@1']:.3f}   {final['eval/pass@1']:.3f}"
      f"   {final['eval/pass@1'] - base['eval/pass@1']:+.3f}",
      "",
  ]
  # gave up: the share of responses that end in `fail` (countdown's procedure/gave_up_rate), shown when the
  # task logs it: what the persist world's RL changes most.
  gave_up = any("procedure/gave_up_rate" in r for r in rows)
  lines.append("  step   train acc   H(execution)   H(planning)   strategy H"
               + ("   gave up" if gave_up else ""))
  idx = sorted({round(i * (len(rows) - 1) / max(points - 1, 1)) for i in range(points)})
  for i in idx:
    r = rows[i]
    # strategy H: the diversity of strategy types the phase detector reads (strategy/entropy; logs written
    # before it existed have only the older semantic_entropy/planning, shown instead).
    strategy = r.get("strategy/entropy", r.get("semantic_entropy/planning"))
    strategy = float("nan") if strategy is None else strategy  # None: no strategy unit in the batch
    line = (f"  {r['step']:4d}   {r['accuracy']:9.3f}   {r['entropy/execution']:12.3f}   "
            f"{r['entropy/planning']:11.3f}   {strategy:10.3f}")
    if gave_up:
      g = r.get("procedure/gave_up_rate")
      line += f"   {float('nan') if g is None else g:7.3f}"
    lines.append(line)
  return "\n".join(lines)


def verdict(wd: Workdir) -> str:
  """The phase detector's verdict on metrics.jsonl (computed, not written; rldyn.phases writes files)."""
  rows = wd.read_metrics()
  if not rows:
    return "no metrics yet"
  return phases.detect([(r["step"], r) for r in rows]).verdict()


def files(wd: Workdir) -> str:
  steps = wd.checkpoint_steps()
  ckpts = f"{len(steps)} kept (steps {', '.join(map(str, steps))})" if steps else "none"
  rel = lambda p: os.path.relpath(p, wd.root)  # noqa: E731
  return "\n".join([
      f"files in {wd.root}:",
      f"  {rel(wd.metrics_path)} (one line per step), {rel(wd.eval_path)}, {rel(wd.events_path)}, "
      f"{rel(wd.samples_path)}",
      f"  checkpoints: {ckpts}",
      f"next: python -m rldyn.phases --workdir={wd.root}   (phases.json, phases.png)",
      f"      python -m rldyn.replay --workdir={wd.root}   (pass@k, sparsity, report.md)",
  ])


def summary(wd: Workdir) -> str:
  return "\n\n".join([table(wd), "Phase detector: " + verdict(wd), files(wd)])
