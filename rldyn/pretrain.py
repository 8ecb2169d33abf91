"""Supervised training of the base model from scratch on generated traces (also the distillation baseline).

    python -m rldyn.main --config=experiments/pretrain.py:smoke --workdir=/tmp/rldyn/base

Loss: next-token cross-entropy on response tokens (and the eos) given the prompt. AdamW with warmup and
cosine decay; the step is jitted with explicit shardings on the same (data, fsdp, tensor) mesh as RL.
Writes WORKDIR/base/: `params/` (orbax), `info.json` (model config, eval results), `metrics.jsonl`
(one line per log interval) and `checkpoints/` (resumable training state).
"""

from __future__ import annotations

import dataclasses
import functools
import queue
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from rldyn import checkpoint as ckpt_lib
from rldyn import data
from rldyn import evaluation
from rldyn import model as model_lib
from rldyn import parallel
from rldyn import runtime
from rldyn import state as state_lib
from rldyn import tasks
from rldyn.config import Config
from rldyn.metrics import writers
from rldyn.metrics.writers import JsonlWriter
from rldyn.optim import make_optimizer
from rldyn.tasks import evalsets
from rldyn.tasks.base import Task
from rldyn.workdir import Workdir


def cross_entropy(model_cfg: model_lib.ModelConfig, params, batch):
  """Next-token NLL averaged with the weights of loss_mask (1 per response token; decision tokens may weigh
  more: pretrain.decision_weight); returns (loss, count of predicted tokens)."""
  tokens, segment = batch["tokens"], batch["segment"]
  logits, _ = model_lib.apply(model_cfg, params, tokens, model_lib.segment_positions(segment),
                              model_lib.segment_mask(segment))
  logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
  nll = -jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
  w = batch["loss_mask"][:, :-1]
  return (nll * w).sum() / jnp.maximum(w.sum(), 1.0), (w > 0).sum().astype(jnp.float32)


def train_step(model_cfg: model_lib.ModelConfig, tx: optax.GradientTransformation, params, opt_state, batch):
  """One supervised update: (params, opt_state, batch) -> (params, opt_state, metrics)."""
  (loss, n), grads = jax.value_and_grad(functools.partial(cross_entropy, model_cfg), has_aux=True)(
      params, batch)
  updates, opt_state = tx.update(grads, opt_state, params)
  params = optax.apply_updates(params, updates)
  metrics = {"loss": loss, "tokens": n, "grad_norm": state_lib.tree_norm(grads),
             "param_norm": state_lib.tree_norm(params)}
  return params, opt_state, metrics


def make_train_step(model_cfg, tx, mesh, params, opt_state):
  p_sh = jax.tree.map(lambda x: x.sharding, params)
  o_sh = jax.tree.map(lambda x: x.sharding, opt_state)
  b_sh = parallel.batch_sharding(mesh, 2)
  return jax.jit(functools.partial(train_step, model_cfg, tx),
                 in_shardings=(p_sh, o_sh, {"tokens": b_sh, "segment": b_sh, "loss_mask": b_sh}),
                 out_shardings=(p_sh, o_sh, parallel.replicated(mesh)),
                 donate_argnums=(0, 1))


class TraceStream:
  """Background thread producing supervised batches from a seeded problem/trace stream.

  Batch i is a pure function of (seed, i), so a resumed run sees the same data. With `easy=(task2,
  fraction)`, each problem comes from task2 (the same task in an easier world, e.g. fewer numbers) with
  probability `fraction`; every trace is written by `task` (pretrain.easy_fraction, easy_options).
  """

  def __init__(self, task: Task, seed: int, batch_size: int, seq_len: int, start: int, prefetch: int = 4,
               easy: tuple[Task, float] | None = None, decision_weight: float = 1.0):
    self._task, self._seed, self._bs, self._len = task, seed, batch_size, seq_len
    self._decision = (np.array([task.tokenizer.token_to_id(w) for w in task.decision_words], np.int32),
                      decision_weight) if decision_weight != 1.0 and task.decision_words else None
    self._easy = easy if easy and easy[1] > 0 else None
    self._q: queue.Queue = queue.Queue(maxsize=prefetch)
    self._next = start
    self._stop = False
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._thread.start()

  def make(self, index: int) -> dict[str, np.ndarray]:
    """Batch `index`: traces packed into batch_size rows of seq_len tokens."""
    rng = np.random.default_rng([self._seed, index])
    problems, responses = [], []
    while True:
      more = [self._problem(rng) for _ in range(self._bs)]
      problems += more
      responses += [self._task.reference_trace(p, rng) for p in more]
      batch, used = data.packed_batch(self._task, problems, responses, self._bs, self._len)
      if used < len(problems):  # every row is full
        return self._weighted(batch)

  def _weighted(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """loss_mask[:, j] weights the prediction of token j + 1: decision tokens get decision_weight."""
    if self._decision is None:
      return batch
    ids, weight = self._decision
    judged = np.zeros_like(batch["loss_mask"], bool)
    judged[:, :-1] = np.isin(batch["tokens"][:, 1:], ids)
    batch["loss_mask"] = np.where(judged & (batch["loss_mask"] > 0), batch["loss_mask"] * weight,
                                  batch["loss_mask"]).astype(np.float32)
    return batch

  def _problem(self, rng: np.random.Generator):
    if self._easy is not None and rng.random() < self._easy[1]:
      return self._easy[0].sample_problem(rng)
    return self._task.sample_problem(rng)

  def _run(self):
    i = self._next
    while not self._stop:
      self._q.put(self.make(i))
      i += 1

  def __next__(self) -> dict[str, np.ndarray]:
    return self._q.get()

  def close(self):
    self._stop = True
    try:
      while True:
        self._q.get_nowait()
    except queue.Empty:
      pass


def run(cfg: Config, wd: Workdir, task: Task, mesh) -> dict:
  """Pretrains the base model into WORKDIR/base unless it is already complete; returns its info."""
  if wd.has_base():
    logging.info("base model already trained in %s", wd.base_dir)
    return wd.base_info()
  if writers.is_writer():  # (a multi-process run: process 0 writes, every process trains its rows)
    writers.makedirs(wd.base_dir)
  pc = cfg.pretrain
  # Materialise the held-out set first: a config that cannot make one fails before any training.
  problems = evalsets.load_eval_set(task, cfg.task.eval_size, cfg.task.eval_seed, cfg.task.data_dir or None)
  if pc.batch_size % parallel.data_parallel_size(mesh):
    raise ValueError(f"pretrain.batch_size={pc.batch_size} must be divisible by the mesh's data-parallel "
                     f"size {parallel.data_parallel_size(mesh)} (mesh.data * mesh.fsdp)")
  tx = make_optimizer(pc.optim, pc.steps)
  key = jax.random.key(cfg.seed)
  params = state_lib.init_params(cfg.model, mesh, jax.random.fold_in(key, 0))
  opt_state = state_lib.init_opt_state(tx, params, mesh)
  ckpt = ckpt_lib.Checkpointer(wd.base_checkpoints_dir, keep=1,
                               on_event=lambda name, step, **f: wd.event(f"pretrain_{name}", step, **f))
  start = 0
  restored = ckpt.restore_latest(ckpt_lib.abstract_like({"params": params, "opt_state": opt_state}))
  if restored is not None:
    start, st, _ = restored
    params, opt_state = st["params"], st["opt_state"]
    logging.info("resuming pretraining at step %d", start)
  step_fn = make_train_step(cfg.model, tx, mesh, params, opt_state)
  stream = TraceStream(task, cfg.seed, pc.batch_size, pc.seq_len, start, easy=easy_task(cfg),
                       decision_weight=pc.decision_weight)
  log = _Logger(wd.base_metrics_path, pc, start)
  t0 = time.time()
  done, pending = start, None
  try:
    for step in range(start, pc.steps):
      if parallel.any_process(runtime.stop_requested()):  # preempted (any process): all stop here, save
        if pending is not None:
          log(*pending, force=True)
        if step not in ckpt.steps():
          ckpt.save(step, {"params": params, "opt_state": opt_state}, {"step": step})
        ckpt.close()
        wd.event("preempted", step, stage="pretrain")
        raise runtime.Preempted(f"pretraining stopped at step {step} (SIGTERM); rerun to resume")
      batch = parallel.shard_batch(mesh, next(stream))
      params, opt_state, metrics = step_fn(params, opt_state, batch)
      if pending is not None:  # fetch the previous step's metrics after dispatching this one
        log(*pending)
      pending, done = (step, metrics), step + 1
      if (step + 1) % pc.checkpoint_every == 0:
        ckpt.save(step + 1, {"params": params, "opt_state": opt_state}, {"step": step + 1})
      if pc.eval_every and (step + 1) % pc.eval_every == 0 and step + 1 < pc.steps:
        ev = evaluation.evaluate(cfg.model, cfg.sampling, params, task, problems,
                                 jax.random.fold_in(key, 1), pc.eval_samples, cfg.eval.temperature)
        log.write_eval(step + 1, ev)
      if pc.time_budget_s and time.time() - t0 > pc.time_budget_s:
        logging.info("pretrain time budget reached at step %d", step + 1)
        break
  finally:
    stream.close()
  if pending is not None:
    log(*pending, force=True)
  train_s = time.time() - t0
  ckpt.close()
  ev = evaluation.evaluate(cfg.model, cfg.sampling, params, task, problems, jax.random.fold_in(key, 1),
                           pc.eval_samples, cfg.eval.temperature)
  info = {"model": dataclasses.asdict(cfg.model), "task": cfg.task.name, "steps": done,
          "train_s": train_s, **ev}
  wd.write_base(params, info)
  logging.info("base model: %s", info)
  print(f"[pretrain] {done} steps in {train_s:.0f}s: held-out greedy accuracy "
        f"{ev['eval/accuracy']:.3f}, sampled pass@1 {ev['eval/pass@1']:.3f}", flush=True)
  return info


def easy_task(cfg: Config) -> tuple[Task, float] | None:
  """(the task in the world of pretrain.easy_options, pretrain.easy_fraction), or None when off."""
  pc = cfg.pretrain
  if not pc.easy_fraction:
    return None
  try:
    return tasks.make_task(cfg.task.name, **{**cfg.task.kwargs, **dict(pc.easy_options)}), pc.easy_fraction
  except (ValueError, TypeError) as e:
    raise ValueError(f"pretrain.easy_options={dict(pc.easy_options)} do not fit task {cfg.task.name!r} ({e}); "
                     "fix them or set pretrain.easy_fraction=0") from e


class _Logger:
  """Writes one JSONL line and one progress line per log interval (lines past a resume point go)."""

  def __init__(self, path: str, pc, start: int):
    self.pc = pc
    self.writer = JsonlWriter(path)
    self.writer.truncate_after(start + 1)  # lines are numbered by steps done (1-based)
    self.tokens, self.last_time, self.last_tokens = 0.0, time.time(), 0.0

  def write_eval(self, step: int, ev: dict) -> None:
    self.writer.write({"step": step, **ev})
    print(f"[pretrain] step {step} held-out greedy accuracy {ev['eval/accuracy']:.3f}, "
          f"sampled pass@1 {ev['eval/pass@1']:.3f}", flush=True)

  def __call__(self, step: int, metrics, force: bool = False):
    self.tokens += float(metrics["tokens"])
    if not force and (step + 1) % self.pc.log_every:
      return
    m = {k: float(v) for k, v in jax.device_get(metrics).items()}
    now = time.time()
    tok_s = (self.tokens - self.last_tokens) / max(now - self.last_time, 1e-9)
    self.last_time, self.last_tokens = now, self.tokens
    self.writer.write({"step": step + 1, **m, "tokens_seen": self.tokens, "perf/tok_s": tok_s})
    print(f"[pretrain] step {step + 1}/{self.pc.steps} loss {m['loss']:.4f} "
          f"grad_norm {m['grad_norm']:.3f} {tok_s:.0f} loss-tokens/s", flush=True)
