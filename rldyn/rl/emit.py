"""Emission: everything the RL loop writes about itself (metrics, events, evals, samples, progress).

One `Emitter` per run owns the workdir's logs (docs/workdir.md): metrics.jsonl (one line per step, every
key in docs/metrics.md), eval.jsonl, events.jsonl, samples/samples.jsonl, the optional TensorBoard mirror,
the online phase detector (which turns metric lines into phase_boundary events) and the console progress
line. On a resume it first drops log lines from steps the restored checkpoint has not reached, so a
resumed log never holds a step twice.

In a multi-process run every process holds an Emitter fed the same lines, but only the writing process
(`writers.is_writer`: process 0) writes files or prints: the logs' writers are read-only elsewhere, and
`line` stops there for the others (no detector, TensorBoard or console line).
"""

from __future__ import annotations

import os
import time

from rldyn import phases
from rldyn.config import Config
from rldyn.metrics.writers import JsonlWriter, TensorBoardWriter, is_writer, read_jsonl
from rldyn.rl.rollout import Rollout
from rldyn.workdir import Workdir

# Keys whose values depend on wall-clock time (excluded when comparing runs).
TIMING_KEYS = ("time_s", "perf/rollout_tok_s", "perf/update_tok_s", "perf/step_s", "perf/host_s",
               "perf/compile_s")


class Emitter:
  """Writes a run's logs; `start_step` is where the (restored) run continues."""

  def __init__(self, cfg: Config, wd: Workdir, start_step: int):
    self.cfg, self.wd, self.start_step = cfg, wd, start_step
    self.writer = is_writer()
    self.events = JsonlWriter(wd.events_path)
    self.metrics = JsonlWriter(wd.metrics_path, unique_key="step")
    self.evals = JsonlWriter(wd.eval_path, unique_key="step")
    self.samples = JsonlWriter(wd.samples_path)
    for w in (self.events, self.metrics, self.evals, self.samples):
      if w.repaired:  # damage found on open: say how many lines went where
        self.event("log_repaired", start_step, log=os.path.relpath(w.path, wd.root), **w.repaired)
    self.tb = TensorBoardWriter(wd.tensorboard_dir) if cfg.log.tensorboard and self.writer else None
    # Lines from steps the restored state has not reached (all of them, without a checkpoint) go: the
    # rerun writes them again, identically. A finished run keeps its final evaluation (step == rl.steps).
    self.dropped = self.metrics.truncate_after(start_step)
    self.evals.truncate_after(start_step + (start_step >= cfg.rl.steps))
    self.samples.truncate_after(start_step)
    self.detector = None
    if cfg.phases.online and self.writer:
      self.detector = phases.OnlinePhaseDetector(refit_every=cfg.phases.refit_every)
      history = [(r["step"], r) for r in read_jsonl(self.metrics.path)]
      if history:
        self.detector.warm_start(history)
    self._step_s: list[float] = []

  def event(self, name: str, step: int, **fields) -> None:
    self.events.write({"event": name, "step": step, "time": time.time(), **fields})

  def evaluation(self, step: int, results: dict) -> None:
    self.evals.write({"step": step, **results})

  def final_evaluation(self) -> dict | None:
    """The held-out results after the last update, if a previous launch already computed them."""
    for r in read_jsonl(self.evals.path):
      if r.get("step") == self.cfg.rl.steps:
        return {k: v for k, v in r.items() if k != "step"}
    return None

  def decoded(self, step: int, ro: Rollout) -> None:
    """A few decoded rollouts of a logged step, for reading what the model does."""
    if not self.logged(step):
      return
    for i in range(min(self.cfg.log.samples, len(ro.texts))):
      self.samples.write({"step": step, "problem": ro.problems[i].uid, "prompt": ro.problems[i].prompt,
                          "response": ro.texts[i], "reward": float(ro.rewards_B[i]),
                          "correct": bool(ro.correct_B[i])})

  def logged(self, step: int) -> bool:
    return step % self.cfg.log.every == 0 or step == self.cfg.rl.steps - 1

  def line(self, line: dict) -> None:
    """One step's metrics.jsonl line; feeds the phase detector, TensorBoard and the progress line."""
    step = line["step"]
    if not self.writer:
      return
    self.metrics.write(line)
    if self.detector is not None:
      event = self.detector.update(step, line)
      if event is not None:
        self.events.write({**event, "time": time.time()})
    if self.tb is not None:
      self.tb.write(step, line)
    self._step_s.append(line["perf/step_s"])
    if self.logged(step):
      print(self.progress(line), flush=True)

  def progress(self, line: dict) -> str:
    """The console line: rewards, accuracy, entropies, throughput; compile time apart from the ETA."""
    step, steps = line["step"], self.cfg.rl.steps
    recent = self._step_s[-20:] or [line["perf/step_s"]]
    eta = sum(recent) / len(recent) * (steps - step - 1)
    ev = f" eval_acc {line['eval/accuracy']:.3f}" if "eval/accuracy" in line else ""
    compile_s = line.get("perf/compile_s", 0.0)
    comp = f" (+{compile_s:.1f}s compile)" if compile_s >= 0.05 else ""
    return (f"[rl] step {step}/{steps} reward {line['reward/mean']:.3f} acc {line['accuracy']:.3f}{ev} "
            f"H_plan {line['entropy/planning']:.3f} H_exec {line['entropy/execution']:.3f} "
            f"rollout {line['perf/rollout_tok_s']:.0f} tok/s update {line['perf/update_tok_s']:.0f} tok/s "
            f"step {line['perf/step_s']:.2f}s{comp} ETA {eta / 60:.1f} min")

  def close(self) -> None:
    for w in (self.events, self.metrics, self.evals, self.samples):
      w.close()
    if self.tb is not None:
      self.tb.close()


class EventSink:
  """on_event for pieces that report before the Emitter exists (the checkpointer during restore)."""

  def __init__(self):
    self.out: Emitter | None = None
    self.held: list[tuple] = []

  def __call__(self, name: str, step: int, **fields) -> None:
    if self.out is None:
      self.held.append((name, step, fields))
    else:
      self.out.event(name, step, **fields)

  def attach(self, out: Emitter) -> None:
    self.out = out
    for name, step, fields in self.held:
      out.event(name, step, **fields)
    self.held = []
