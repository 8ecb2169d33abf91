"""Distillation vs RL (Yue et al. 2025): supervised fine-tuning of the RL base on a teacher's traces.

    python -m rldyn.distill --config=experiments/distill.py --workdir=/tmp/rldyn/distill_clean \
        --config.base_workdir=/tmp/rldyn/base --teacher=clean
    python -m rldyn.distill --config=experiments/distill.py --workdir=/tmp/rldyn/distill_rl \
        --config.base_workdir=/tmp/rldyn/base --teacher=samples --teacher_workdir=/tmp/rldyn/two_phase
    python -m rldyn.replay --workdir=/tmp/rldyn/distill_clean       # the same pass@k probe as an RL run

Starts from the same base model an RL arm starts from and fine-tunes it with the pretraining loss
(`rldyn.pretrain.cross_entropy` / `make_train_step`: next-token NLL on response tokens) on teacher traces:

  clean    the task's reference search traces written **without errors** (`error_rate = 0`), kept only
           when they verify: a stronger teacher than the base's imperfect traces. (The countdown task has
           no shortest-path solver; its error-free search traces are the strongest teacher it has.)
  samples  the verified-correct responses of an RL run (`--teacher_workdir`): its samples/samples.jsonl
           rows with correct = true, problems regenerated from that run's config.

The run directory follows the RL workdir contract, so `rldyn.replay`, `rldyn.compare` and `rldyn.phases`
read it as they read an RL run: config.json (the config given; `rl.steps` = SFT steps, `rl.optim` the
optimizer, `pretrain.batch_size` / `pretrain.seq_len` the packed batch shape, `checkpoint.every`,
`eval.every`, `eval.samples`, `log.every`), metrics.jsonl (one line per logged step: `loss`, `tokens`,
`grad_norm`, `param_norm`), eval.jsonl (held-out `eval/accuracy`, `eval/pass@1` at step 0 = the base,
every `eval.every` steps and at the end), events.jsonl (`distill_start` naming the teacher, `run_start`
or `run_resume`, `checkpoint_saved`, `run_end`), checkpoints/<step>/ in the RL layout
({state: {params, opt_state}, ref_params = the base}) and base_pointer.json. Batch i is a pure function
of (seed, i), so a rerun resumes from the newest checkpoint and continues exactly.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence

import jax
import numpy as np

from rldyn import checkpoint as ckpt_lib
from rldyn import data
from rldyn import evaluation
from rldyn import launch
from rldyn import parallel
from rldyn import pretrain
from rldyn import state as state_lib
from rldyn.config import Config, ConfigError
from rldyn.metrics.writers import JsonlWriter
from rldyn.optim import make_optimizer
from rldyn.tasks import evalsets
from rldyn.tasks import make_task
from rldyn.tasks.base import Problem, Task
from rldyn.workdir import Workdir

TEACHERS = ("clean", "samples")
EVAL_PURPOSE = 2  # the held-out evaluation key purpose, as in the RL loop
DISTILL_PURPOSE = 0xD157  # the teacher stream: batch i draws from default_rng([seed, DISTILL_PURPOSE, i])
MAX_DRAWS = 100  # clean teacher: tries per example to find a verifying error-free trace


class CleanTeacher:
  """Error-free reference traces of the task's own training problems, kept when they verify."""

  def __init__(self, task: Task):
    if "error_rate" not in {f.name for f in dataclasses.fields(task.config)}:
      raise ConfigError(f"the clean teacher needs a task with an error_rate option; task {task.name} has none")
    options = {f.name: getattr(task.config, f.name) for f in dataclasses.fields(task.config)}
    self.task = make_task(task.name, **{**options, "error_rate": 0.0})

  def examples(self, rng: np.random.Generator, n: int) -> tuple[list[Problem], list[str]]:
    problems, responses = [], []
    for _ in range(n * MAX_DRAWS):
      if len(problems) == n:
        break
      p = self.task.sample_problem(rng)
      r = self.task.reference_trace(p, rng)
      if self.task.verify(p, r):
        problems.append(p)
        responses.append(r)
    if len(problems) < n:
      raise RuntimeError(f"the clean teacher found {len(problems)} verifying traces in {n * MAX_DRAWS} draws")
    return problems, responses


class SamplesTeacher:
  """The verified-correct responses an RL run logged (samples/samples.jsonl), drawn with replacement."""

  def __init__(self, task: Task, teacher_workdir: str):
    from rldyn import oneshot  # pylint: disable=g-import-not-at-top
    twd = Workdir(teacher_workdir)
    if not os.path.exists(twd.config_path):
      raise ConfigError(f"--teacher_workdir={teacher_workdir!r} has no config.json: not an RL workdir")
    tcfg, ttask = twd.load_config()
    if ttask.name != task.name or ttask.problem_config() != task.problem_config():
      raise ConfigError(f"--teacher_workdir={teacher_workdir!r} trained on another task or problem world "
                        f"({ttask.name} {ttask.problem_config()}) than this config's")
    rows = [r for r in twd.read_samples() if r.get("correct") is True and isinstance(r.get("response"), str)]
    if not rows:
      raise ConfigError(f"{twd.samples_path} has no correct samples to distill")
    cache: dict[int, dict[str, Problem]] = {}
    self.pairs = []
    for r in rows:
      step = int(r["step"])
      if step not in cache:
        cache[step] = {p.uid: p for p in oneshot.step_problems(tcfg, ttask, step)}
      p = cache[step].get(r["problem"])
      if p is not None and task.verify(p, r["response"]):
        self.pairs.append((p, r["response"]))
    if not self.pairs:
      raise ConfigError(f"none of the correct samples in {twd.samples_path} could be matched to its problem")

  def examples(self, rng: np.random.Generator, n: int) -> tuple[list[Problem], list[str]]:
    idx = rng.integers(0, len(self.pairs), n)
    return [self.pairs[i][0] for i in idx], [self.pairs[i][1] for i in idx]


def make_teacher(name: str, task: Task, teacher_workdir: str = ""):
  if name == "clean":
    return CleanTeacher(task)
  if name == "samples":
    if not teacher_workdir:
      raise ConfigError("--teacher=samples needs --teacher_workdir=RL_RUN")
    return SamplesTeacher(task, teacher_workdir)
  raise ConfigError(f"--teacher={name!r}; valid: {', '.join(TEACHERS)}")


def batch(task: Task, teacher, seed: int, index: int, rows: int, seq_len: int) -> dict[str, np.ndarray]:
  """Supervised batch `index`: teacher examples packed into rows × seq_len (a pure function of seed, index)."""
  rng = np.random.default_rng([seed, DISTILL_PURPOSE, index])
  problems, responses = [], []
  while True:
    p, r = teacher.examples(rng, rows)
    problems += p
    responses += r
    out, used = data.packed_batch(task, problems, responses, rows, seq_len)
    if used < len(problems):
      return out


def run(config_dict, workdir: str, teacher_name: str, teacher_workdir: str = "") -> dict:
  """Fine-tunes the base on the teacher's traces into `workdir`; returns the final held-out evaluation."""
  if teacher_name not in TEACHERS:
    raise ConfigError(f"--teacher={teacher_name!r}; valid: {', '.join(TEACHERS)}")
  cfg, task, mesh, wd = launch.prepare(config_dict, workdir)
  source = wd if wd.has_base() else (Workdir(cfg.base_workdir) if cfg.base_workdir else None)
  if source is None:
    raise ConfigError("distillation fine-tunes an existing base: pass --config.base_workdir=DIR (a workdir "
                      "with base/, e.g. from experiments/pretrain.py)")
  launch.check_base(cfg, source)
  teacher = make_teacher(teacher_name, task, teacher_workdir)
  wd.ensure()
  with wd.lock():
    launch.check_workdir(cfg, wd)  # again, now that the workdir is ours
    wd.write_config(cfg)
    if source is not wd:
      wd.point_base_to(source)
    return _train(cfg, task, mesh, wd, teacher, teacher_name, teacher_workdir)


def _train(cfg: Config, task: Task, mesh, wd: Workdir, teacher, teacher_name: str, teacher_workdir: str) -> dict:
  steps, pc = cfg.rl.steps, cfg.pretrain
  problems = evalsets.load_eval_set(task, cfg.task.eval_size, cfg.task.eval_seed, cfg.task.data_dir or None)
  base = wd.base_params(cfg.model, mesh)
  params = jax.tree.map(lambda x: x.copy(), base)
  tx = make_optimizer(cfg.rl.optim, steps)
  opt_state = state_lib.init_opt_state(tx, params, mesh)
  ckpt = wd.checkpointer(keep=cfg.checkpoint.keep, on_event=lambda name, step, **f: wd.event(name, step, **f))
  restored = ckpt.restore_latest(ckpt_lib.abstract_like(
      {"state": {"params": params, "opt_state": opt_state}, "ref_params": base}))
  start = 0
  if restored is not None:
    start, tree, _ = restored
    params, opt_state = tree["state"]["params"], tree["state"]["opt_state"]
  metrics_log, eval_log = JsonlWriter(wd.metrics_path), JsonlWriter(wd.eval_path)
  metrics_log.truncate_after(start)
  eval_log.truncate_after(start)
  wd.event("distill_start", start, teacher=teacher_name, teacher_workdir=os.path.abspath(teacher_workdir)
           if teacher_workdir else "")
  wd.event("run_resume" if start else "run_start", start)
  step_fn = pretrain.make_train_step(cfg.model, tx, mesh, params, opt_state)
  key = jax.random.fold_in(jax.random.key(cfg.seed), EVAL_PURPOSE)

  def evaluate(step: int) -> dict:
    ev = evaluation.evaluate(cfg.model, cfg.sampling, params, task, problems, jax.random.fold_in(key, step),
                             cfg.eval.samples)
    eval_log.write({"step": step, **ev})
    print(f"[distill] step {step}: held-out greedy accuracy {ev['eval/accuracy']:.3f}, sampled pass@1 "
          f"{ev['eval/pass@1']:.3f}", flush=True)
    return ev

  def save(step: int) -> None:
    ckpt.save(step, {"state": {"params": params, "opt_state": opt_state}, "ref_params": base},
              {"step": step, "nll_exec0": None})

  t0 = time.time()
  ev = evaluate(0) if start == 0 else None
  for step in range(start, steps):
    if step and step % cfg.eval.every == 0:
      ev = evaluate(step)
    b = parallel.shard_batch(mesh, batch(task, teacher, cfg.seed, step, pc.batch_size, pc.seq_len))
    params, opt_state, m = step_fn(params, opt_state, b)
    if (step + 1) % cfg.log.every == 0 or step + 1 == steps:
      metrics_log.write({"step": step, **{k: float(v) for k, v in jax.device_get(m).items()},
                         "time_s": time.time() - t0})
    if (step + 1) % cfg.checkpoint.every == 0 and step + 1 < steps:
      save(step + 1)
  if steps not in ckpt.steps():
    save(steps)
  if not eval_log_has(wd, steps):
    ev = evaluate(steps)
  else:
    ev = {k: v for k, v in wd.read_evals()[-1].items() if k.startswith("eval/")}
  ckpt.close()
  metrics_log.close()
  eval_log.close()
  wd.event("run_end", steps, **ev)
  return ev


def eval_log_has(wd: Workdir, step: int) -> bool:
  return any(e.get("step") == step for e in wd.read_evals())


def main(argv: Sequence[str]) -> None:
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  ev = run(f.config, f.workdir, f.teacher, f.teacher_workdir)
  print(f"[distill] done: held-out greedy accuracy {ev['eval/accuracy']:.3f}, sampled pass@1 "
        f"{ev['eval/pass@1']:.3f}. Next: python -m rldyn.replay --workdir={f.workdir}", flush=True)


def entry() -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  from rldyn import cli  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file("config", None, "Config file `path.py[:variant]` (experiments/distill.py).",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Directory of the distillation run (a rerun resumes it).")
  flags.DEFINE_string("teacher", "clean", f"Teacher traces: one of {', '.join(TEACHERS)}.")
  flags.DEFINE_string("teacher_workdir", "", "--teacher=samples: the RL run whose correct samples to use.")
  flags.mark_flags_as_required(["config", "workdir"])
  cli.run(main, __name__)


if __name__ == "__main__":
  entry()
