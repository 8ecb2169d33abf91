"""The RL loop: rollouts -> rewards -> advantages -> sharded updates -> metrics -> checkpoints.

    python -m rldyn.main --config=experiments/two_phase.py:smoke --workdir=/tmp/rldyn/two_phase

Step t (0-based) samples `rl.prompts_per_step` training problems from the seeded stream position t,
draws `rl.group_size` responses each with the current policy, scores them, and takes
`rl.updates_per_batch` minibatch updates. Its metrics.jsonl line holds the rollout's statistics
(policy after t updates) and the update's. Held-out `eval/accuracy` (greedy) and `eval/pass@1` are
measured on the policy that produced the step's rollout at t = 0 (the base) and every `eval.every`
steps, and once more after the last update (eval.jsonl has all of them; metrics.jsonl the in-run ones).

Everything random derives from (seed, purpose, step), and the checkpoint stores the step, so a resumed
run continues exactly; on resume, log lines from steps past the checkpoint are dropped (an event says so).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import jax
import numpy as np
from absl import logging

from rldyn import checkpoint as ckpt_lib
from rldyn import data
from rldyn import evaluation
from rldyn import parallel
from rldyn import phases
from rldyn import pretrain
from rldyn import roles as roles_lib
from rldyn import sampling
from rldyn import state as state_lib
from rldyn.config import Config, to_json
from rldyn.metrics import entropy as entropy_lib
from rldyn.metrics.writers import JsonlWriter, TensorBoardWriter, read_jsonl
from rldyn.optim import make_optimizer
from rldyn.rl import advantages as adv_lib
from rldyn.rl import losses
from rldyn.rl import rewards as rewards_lib
from rldyn.rl import step as step_lib
from rldyn.tasks import evalsets
from rldyn.tasks.base import PLANNING, Task

# Key purposes: one base key per purpose, folded with the step (STYLE.md §5).
_ROLLOUT, _EVAL, _INIT = 1, 2, 3
RESPONSE_BUCKET = 32
# Model fields that change parameter shapes (dtypes and the attention kernel may differ from the base's).
SHAPE_KEYS = ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff", "qkv_bias",
              "tie_embeddings")
# Keys whose values depend on wall-clock time (excluded when comparing runs).
TIMING_KEYS = ("time_s", "perf/rollout_tok_s", "perf/update_tok_s", "perf/step_s", "perf/host_s")


class FaultError(RuntimeError):
  """A non-finite update under fault.on_nonfinite=halt."""


@dataclasses.dataclass
class Workdir:
  root: str

  def path(self, *parts: str) -> str:
    return os.path.join(self.root, *parts)


def validate(cfg: Config, mesh) -> None:
  """Registry names and batch/mesh consistency, checked before anything compiles."""
  rewards_lib.REWARDS.get(cfg.reward.name)
  adv_lib.ADVANTAGES.get(cfg.advantage.name)
  adv_lib.check_group_size(cfg.advantage.name, cfg.rl.group_size)
  losses.POLICY_LOSSES.get(cfg.loss.name)
  losses.AGGREGATIONS.get(cfg.loss.aggregation)
  losses.KL_ESTIMATORS.get(cfg.loss.kl_estimator)
  adv_lib.TRANSFORMS.get(cfg.advantage.transform)
  roles_lib.TAGGERS.get(cfg.roles.tagger)
  roles_lib.TAGGERS.get(cfg.roles.placebo_of)
  dp = parallel.data_parallel_size(mesh)
  batch = cfg.rl.prompts_per_step * cfg.rl.group_size
  mb = batch // cfg.rl.updates_per_batch
  if mb % dp:
    raise ValueError(f"each minibatch has {mb} rows (rl.prompts_per_step * rl.group_size / "
                     f"rl.updates_per_batch) but the mesh's data axis (mesh.data * mesh.fsdp) is {dp}: "
                     f"change rl.prompts_per_step or rl.updates_per_batch so {dp} divides it")


def check_workdir_config(cfg: Config, wd: Workdir) -> None:
  """Refuses to mix runs: a workdir belongs to the config that created it (unless resume_anyway)."""
  path = wd.path("config.json")
  mine = json.loads(to_json(cfg))
  if os.path.exists(path):
    with open(path) as f:
      theirs = json.load(f)
    for d in (mine, theirs):
      d.pop("resume_anyway", None)
    if theirs != mine and not cfg.resume_anyway:
      diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
      raise ValueError(f"{wd.root} holds a run with a different config (sections differ: {diff}); use "
                       "another --workdir, or pass --config.resume_anyway=True to continue it anyway")
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(to_json(cfg))
  os.replace(tmp, path)


def load_base(cfg: Config, wd: Workdir, task: Task, mesh, events: JsonlWriter):
  """Base params: WORKDIR/base if trained, else `base_workdir`'s, else pretrain one now."""
  source = wd.root
  if cfg.base_workdir and not os.path.exists(pretrain.base_dir(wd.root)):
    source = cfg.base_workdir
    if not os.path.exists(os.path.join(pretrain.base_dir(source), "info.json")):
      raise ValueError(f"base_workdir={cfg.base_workdir!r} has no trained base model "
                       "(base/info.json); train one with experiments/pretrain.py")
    with open(wd.path("base_pointer.json"), "w") as f:
      json.dump({"base_workdir": os.path.abspath(source)}, f)
  elif not os.path.exists(os.path.join(pretrain.base_dir(wd.root), "info.json")):
    events.write({"event": "pretrain_start", "time": time.time()})
    pretrain.run(cfg, wd.root, task, mesh)
  info = pretrain.read_info(pretrain.base_dir(source))
  mine = dataclasses.asdict(cfg.model)
  differ = {k: (info["model"].get(k), mine[k]) for k in SHAPE_KEYS if info["model"].get(k) != mine[k]}
  if differ:
    raise ValueError(f"the base model in {pretrain.base_dir(source)} has another shape than this config's "
                     f"model: {differ} (base, config); set model.* to match or train a new base")
  return pretrain.load_params(pretrain.base_dir(source), cfg.model, mesh), info


class Trainer:
  """Holds the compiled pieces and the run's state; `run()` executes the remaining steps."""

  def __init__(self, cfg: Config, workdir: str, task: Task, mesh):
    self.cfg, self.task, self.mesh = cfg, task, mesh
    self.wd = Workdir(os.path.abspath(workdir))
    os.makedirs(self.wd.path("samples"), exist_ok=True)
    validate(cfg, mesh)
    check_workdir_config(cfg, self.wd)
    self.events = JsonlWriter(self.wd.path("events.jsonl"))
    self.metrics = JsonlWriter(self.wd.path("metrics.jsonl"))
    self.evals = JsonlWriter(self.wd.path("eval.jsonl"))
    self.samples = JsonlWriter(self.wd.path("samples", "samples.jsonl"))
    self.tb = TensorBoardWriter(self.wd.path("tensorboard")) if cfg.log.tensorboard else None
    self.key = jax.random.key(cfg.seed)

    base_params, self.base_info = load_base(cfg, self.wd, task, mesh, self.events)
    self.ref_params = base_params
    self.tx = make_optimizer(cfg.rl.optim, cfg.rl.steps)
    params = jax.tree.map(lambda x: x.copy(), base_params)  # never alias the reference
    self.state = {"params": params, "opt_state": state_lib.init_opt_state(self.tx, params, mesh)}
    r = cfg.roles
    self.tagger = roles_lib.make_tagger(r.tagger, task, lexicon_path=r.lexicon_path,
                                        placebo_of=r.placebo_of, seed=r.seed, span_patterns=r.span_patterns)
    self.sample = sampling.make_sampler(cfg.model, cfg.sampling)
    n = cfg.sampling.max_new_tokens
    self.update = step_lib.make_update_step(cfg.model, cfg.loss, self.tx, cfg.sampling.temperature,
                                            cfg.rl.updates_per_batch, n, mesh, self.state)
    self._ref_fns = {}  # one compiled reference scorer per response width bucket
    self.eval_problems = evalsets.load_eval_set(task, cfg.task.eval_size, cfg.task.eval_seed,
                                                cfg.task.data_dir or None)
    self.ckpt = ckpt_lib.Checkpointer(self.wd.path("checkpoints"), keep=cfg.checkpoint.keep)
    self.start_step, self.nll_exec0 = 0, None
    self._restore()
    self.phase_detector = None
    if cfg.phases.online:
      self.phase_detector = phases.OnlinePhaseDetector(refit_every=cfg.phases.refit_every)
      history = [(r["step"], r) for r in read_jsonl(self.metrics.path)]
      if history:
        self.phase_detector.warm_start(history)

  # ---- checkpoints -------------------------------------------------------------------------------
  def _ckpt_tree(self):
    return {"state": self.state, "ref_params": self.ref_params}

  def _restore(self):
    def fallback(step, err):
      self.events.write({"event": "checkpoint_unreadable", "step": step, "error": repr(err)[:500],
                         "time": time.time()})
      logging.warning("checkpoint %d unreadable (%s); falling back", step, err)

    restored = self.ckpt.restore_latest(ckpt_lib.abstract_like(self._ckpt_tree()), fallback)
    if restored is not None:
      _, tree, meta = restored
      self.state, self.ref_params = tree["state"], tree["ref_params"]
      self.start_step, self.nll_exec0 = int(meta["step"]), meta["nll_exec0"]
    # Lines from steps the restored state has not reached (all of them, without a checkpoint) go: the
    # rerun writes them again, identically.
    dropped = self.metrics.truncate_after(self.start_step)
    # A finished run keeps its final evaluation (step == rl.steps); otherwise evals from step start_step
    # on are redone by the loop.
    self.evals.truncate_after(self.start_step + (self.start_step >= self.cfg.rl.steps))
    self.samples.truncate_after(self.start_step)
    if restored is None:
      self.events.write({"event": "run_start", "step": 0, "time": time.time(), "dropped_metric_lines": dropped,
                         "devices": len(self.mesh.devices.flat), "mesh": dict(self.mesh.shape)})
    else:
      self.events.write({"event": "run_resume", "step": self.start_step, "time": time.time(),
                         "dropped_metric_lines": dropped})

  def _save(self, step: int):
    self.ckpt.save(step, self._ckpt_tree(), {"step": step, "nll_exec0": self.nll_exec0})
    self.events.write({"event": "checkpoint_saved", "step": step, "time": time.time()})

  # ---- one step's host work ----------------------------------------------------------------------
  def rollout(self, step: int):
    """Samples the step's groups and scores them; returns (device batch, host stats, texts)."""
    cfg = self.cfg
    g = cfg.rl.group_size
    rng = np.random.default_rng([cfg.seed, _ROLLOUT, step])
    problems = [self.task.sample_problem(rng) for _ in range(cfg.rl.prompts_per_step)]
    prompts = data.prompt_batch(self.task, problems, repeat=g)
    t0 = time.time()
    dev_prompts = parallel.shard_batch(self.mesh, prompts)
    out = self.sample(self.state["params"], dev_prompts["tokens"], dev_prompts["mask"],
                      jax.random.fold_in(jax.random.fold_in(self.key, _ROLLOUT), step))
    out = jax.device_get(out)
    t_roll = time.time() - t0
    t1 = time.time()
    rows = [p for p in problems for _ in range(g)]
    texts = evaluation.decode_rows(self.task, out["tokens"], out["length"])
    correct = rewards_lib.verify_all(self.task, rows, texts)
    rewards = rewards_lib.compute(rewards_lib.RewardContext(
        self.task, rows, texts, correct, g, step, cfg.reward))
    r_pg = rewards.reshape(-1, g)
    adv = np.asarray(adv_lib.ADVANTAGES.get(cfg.advantage.name)(
        r_pg, eps=cfg.advantage.eps, ddof=cfg.advantage.std_ddof), np.float32).reshape(-1)
    # Trim the response width to the longest row, rounded up to a bucket: the update then costs what the
    # responses cost, and compiles once per bucket (at most max_new_tokens / RESPONSE_BUCKET times).
    n = min(out["tokens"].shape[1], -(-int(out["length"].max()) // RESPONSE_BUCKET) * RESPONSE_BUCKET)
    out = {k: (v[:, :n] if v.ndim == 2 else v) for k, v in out.items()}
    ids_list = [out["tokens"][i, :length].tolist() for i, length in enumerate(out["length"])]
    roles = np.zeros_like(out["tokens"], np.int32)
    for i, r in enumerate(self.tagger(ids_list, texts, step)):
      roles[i, :len(r)] = r
    host = {}
    if hasattr(self.tagger, "group_uses"):  # strategic-gram groups (lexicon tagger)
      uses = self.tagger.group_uses(texts)
    else:  # the task's planning units stand in for gram groups
      uses = [u for i, ids in enumerate(ids_list) for u in entropy_lib.planning_units(ids, roles[i])]
    if self.cfg.roles.tagger != "structural":  # how the configured tagger agrees with the ground truth
      truth = np.concatenate([self.task.token_roles(ids) for ids in ids_list] or [np.zeros(0)])
      pred = np.concatenate([roles[i, :len(ids)] for i, ids in enumerate(ids_list)] or [np.zeros(0)])
      tp = float(((pred == PLANNING) & (truth == PLANNING)).sum())
      host["roles/precision"] = tp / max(float((pred == PLANNING).sum()), 1.0)
      host["roles/recall"] = tp / max(float((truth == PLANNING).sum()), 1.0)
    resp_mask = out["mask"].astype(np.float32)
    adv_BN = np.asarray(adv_lib.TRANSFORMS.get(cfg.advantage.transform)(
        adv[:, None] * resp_mask, roles, cfg.advantage.hicra_alpha), np.float32)
    batch = {
        "tokens_BS": np.concatenate([prompts["tokens"], out["tokens"]], axis=1),
        "mask_BS": np.concatenate([prompts["mask"], out["mask"]], axis=1),
        "resp_mask_BN": resp_mask,
        "old_logp_BN": out["logp"],
        "adv_BN": adv_BN,
        "entropy_BN": out["entropy"],
        "roles_BN": roles,
    }
    host.update({
        "reward/mean": float(rewards.mean()),
        "reward/std": float(rewards.std()),
        "accuracy": float(correct.mean()),
        "response_len/mean": float(out["length"].mean()),
        "response_len/truncated_frac": float(out["truncated"].mean()),
        "groups/zero_std_frac": float((r_pg.std(axis=1) == 0).mean()),
        "semantic_entropy/planning": entropy_lib.semantic_entropy(uses),
        "perf/rollout_tok_s": float(out["length"].sum()) / max(t_roll, 1e-9),
    })
    host["_host_s"] = time.time() - t1
    return batch, host, texts, rows, rewards, correct

  def ref_logprobs(self, n: int):
    if n not in self._ref_fns:
      self._ref_fns[n] = step_lib.make_ref_logprobs(self.cfg.model, self.cfg.sampling.temperature, n,
                                                    self.mesh, self.ref_params)
    return self._ref_fns[n]

  def evaluate(self, step: int) -> dict:
    res = evaluation.evaluate(self.cfg.model, self.cfg.sampling, self.state["params"], self.task,
                              self.eval_problems, jax.random.fold_in(jax.random.fold_in(self.key, _EVAL),
                                                                     step), self.cfg.eval.samples)
    self.evals.write({"step": step, **res})
    return res

  # ---- the loop -----------------------------------------------------------------------------------
  def run(self) -> dict:
    cfg = self.cfg
    t_start = time.time()
    pending = None  # (step, device metrics, host metrics, timings)
    for step in range(self.start_step, cfg.rl.steps):
      t0 = time.time()
      ev = self.evaluate(step) if step % cfg.eval.every == 0 else {}
      batch, host, texts, rows, rewards, correct = self.rollout(step)
      dev = parallel.shard_batch(self.mesh, batch)
      dev["ref_logp_BN"] = self.ref_logprobs(batch["resp_mask_BN"].shape[1])(
          self.ref_params, dev["tokens_BS"], dev["mask_BS"])
      t_up = time.time()
      self.state, metrics = self.update(self.state, self.ref_params, dev)
      if pending is not None:  # step t-1's metrics, fetched after step t's update is dispatched
        self._emit(*pending)
        pending = None
      metrics = jax.device_get(metrics)
      t_end = time.time()
      update_tokens = float(batch["mask_BS"].sum())  # real (prompt + response) tokens the update processed
      timing = {"perf/update_tok_s": update_tokens / max(t_end - t_up, 1e-9), "perf/step_s": t_end - t0,
                "perf/host_s": host.pop("_host_s"), "time_s": t_end - t_start}
      self._check_faults(step, metrics)
      if step % cfg.log.every == 0 or step == cfg.rl.steps - 1:
        for i in range(min(cfg.log.samples, len(texts))):
          self.samples.write({"step": step, "problem": rows[i].uid, "prompt": rows[i].prompt,
                              "response": texts[i], "reward": float(rewards[i]),
                              "correct": bool(correct[i])})
      pending = (step, metrics, {**host, **ev}, timing)
      if (step + 1) % cfg.checkpoint.every == 0 or step + 1 == cfg.rl.steps:
        self._emit(*pending)
        pending = None
        self._save(step + 1)
    if pending is not None:
      self._emit(*pending)
    final = self._final_eval()
    self.ckpt.close()
    self.events.write({"event": "run_end", "step": cfg.rl.steps, "time": time.time(), **final})
    return final

  def _final_eval(self) -> dict:
    """Held-out results after the last update (computed once; a rerun of a finished run reads them)."""
    for r in read_jsonl(self.evals.path):
      if r.get("step") == self.cfg.rl.steps:
        return {k: v for k, v in r.items() if k != "step"}
    return self.evaluate(self.cfg.rl.steps)

  def _check_faults(self, step: int, metrics: dict) -> None:
    bad = float(metrics["fault/nonfinite_updates"])
    if not bad:
      return
    if self.cfg.fault.on_nonfinite == "halt":
      self.events.write({"event": "nonfinite_halt", "step": step, "time": time.time()})
      raise FaultError(f"non-finite loss or gradient at RL step {step} (fault.on_nonfinite=halt); the "
                       f"last good checkpoint in {self.wd.path('checkpoints')} is intact")
    self.events.write({"event": "nonfinite_skip", "step": step, "skipped_updates": bad,
                       "time": time.time()})

  def _emit(self, step: int, metrics: dict, host: dict, timing: dict) -> None:
    m = {k: float(v) for k, v in metrics.items()}
    if self.nll_exec0 is None:
      self.nll_exec0 = m["nll/execution"]
    m["ppl/execution_rel"] = float(np.exp(m["nll/execution"] - self.nll_exec0))
    line = {"step": step, **host, **m, **timing}
    self.metrics.write(line)
    if self.phase_detector is not None:
      event = self.phase_detector.update(step, line)
      if event is not None:
        self.events.write({**event, "time": time.time()})
    if self.tb is not None:
      self.tb.write(step, line)
    cfg = self.cfg
    if step % cfg.log.every == 0 or step == cfg.rl.steps - 1:
      done = step + 1 - self.start_step
      eta = timing["time_s"] / max(done, 1) * (cfg.rl.steps - step - 1)
      ev = f" eval_acc {host['eval/accuracy']:.3f}" if "eval/accuracy" in host else ""
      print(f"[rl] step {step}/{cfg.rl.steps} reward {line['reward/mean']:.3f} acc {line['accuracy']:.3f}"
            f"{ev} H_plan {line['entropy/planning']:.3f} H_exec {line['entropy/execution']:.3f} "
            f"rollout {line['perf/rollout_tok_s']:.0f} tok/s update {line['perf/update_tok_s']:.0f} tok/s "
            f"step {line['perf/step_s']:.2f}s ETA {eta / 60:.1f} min", flush=True)


def run(cfg: Config, workdir: str, task: Task, mesh) -> dict:
  trainer = Trainer(cfg, workdir, task, mesh)
  return trainer.run()
