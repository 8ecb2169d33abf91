"""The RL loop: a run state folded through rollout -> credit -> update -> emission, with checkpoints.

    python -m rldyn.main --config=experiments/two_phase.py:smoke --workdir=/tmp/rldyn/two_phase

Step t (0-based):
  1. held-out evaluation of the current policy at t = 0 (the base) and every `eval.every` steps; then the
     reference reset check (`maybe_reset`: rl.ref_reset_every / rl.ref_reset_patience);
  2. `rollout.rollout`: sample `rl.prompts_per_step` × `rl.group_size` responses and score them (with
     rl.dynamic_sampling, refill rounds until the batch holds informative groups: `sample_batch`);
  3. the reference policy's log-probs of the sampled tokens when anything needs them (`needs_reference`;
     for the kl/* metrics alone, every loss.kl_metrics_every-th step: `reference_due`);
     with reward.kl_coef the rewards the advantages see are penalised by β·Σ_t k1 (`kl_penalised`);
  4. `credit`: group advantages, token roles, role-aware transforms -> the update batch, then
     `step.update_step` (pure, jitted, sharded): `rl.updates_per_batch` minibatch updates, each of
     `rl.micro_batches` accumulated micro-batches;
  5. `emit`: step t's metrics line is written after step t+1's update has been dispatched (the host
     never waits for the device just to log), and before every checkpoint.
With loss.objective = "verifree" steps 3-4 are `verifree_batch`'s instead: the responses are cut at the
task's answer marker, the reference answer appended, one forward of the policy gives VeriFree's reward
R = π_θ(y*|q,z) (the rollout's rewards from then on: reward/mean, samples, groups/*), RLOO weights, and the
update step takes one step on `verifree.surrogate` (docs/objectives.md).
Its metrics line holds the rollout's statistics (policy after t updates) and the update's. After the last
step the policy is evaluated once more (eval.jsonl has every evaluation; metrics.jsonl the in-run ones).

Everything random derives from (seed, purpose, step), and a checkpoint stores the whole `RunState`, so a
resumed run continues exactly. The base model is given: the launcher pretrains it first when needed.

Multi-process runs (`jax.distributed`, one process per host) run this same loop in every process: each
samples, scores and tags its own whole groups (rollout.py), the update is one global sharded step, the
host statistics come from the gathered rollout, so every process computes the same metrics line; only
process 0 writes it (rldyn.metrics.writers.is_writer). A SIGTERM on any process stops all of them at the
same step boundary (`parallel.any_process`), after a checkpoint every process takes part in.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from rldyn import checkpoint as ckpt_lib
from rldyn import evaluation
from rldyn import parallel
from rldyn import roles as roles_lib
from rldyn import runtime
from rldyn import sampling
from rldyn import state as state_lib
from rldyn.config import Config
from rldyn.optim import make_optimizer
from rldyn.rl import credit
from rldyn.rl import emit
from rldyn.rl import rollout as rollout_lib
from rldyn.rl import step as step_lib
from rldyn.rl import verifree
from rldyn.tasks import evalsets
from rldyn.tasks.base import Task
from rldyn.workdir import Workdir

EVAL_PURPOSE = 2  # key purpose of held-out evaluation (rollouts use rollout.ROLLOUT_PURPOSE)


class FaultError(RuntimeError):
  """A non-finite update under fault.on_nonfinite=halt."""


@dataclasses.dataclass(frozen=True)
class RunState:
  """Everything a run carries from one step to the next; checkpointed whole, so resume is exact."""

  params: Any
  opt_state: Any
  ref_params: Any
  step: int  # the next step to run
  nll_exec0: float | None  # step 0's execution-token NLL: the reference of ppl/execution_rel
  evals: tuple[tuple[int, float], ...] = ()  # (step, eval/pass@1) of every in-run evaluation so far
  last_reset: int = 0  # the step of the last reference reset (0: the reference is the base)

  def tree(self) -> dict:
    return {"state": {"params": self.params, "opt_state": self.opt_state}, "ref_params": self.ref_params}

  def meta(self) -> dict:
    return {"step": self.step, "nll_exec0": self.nll_exec0, "evals": [list(e) for e in self.evals],
            "last_reset": self.last_reset}

  @classmethod
  def from_checkpoint(cls, tree: dict, meta: dict) -> RunState:
    # Checkpoints written before reference resets existed have neither key: no history, never reset.
    evals = tuple((int(s), float(v)) for s, v in meta.get("evals", ()))
    return cls(tree["state"]["params"], tree["state"]["opt_state"], tree["ref_params"], int(meta["step"]),
               meta["nll_exec0"], evals, int(meta.get("last_reset", 0)))


@dataclasses.dataclass
class Programs:
  """The compiled pieces of a run: sampler, update step, and one scorer per response width (`ref_logprobs`:
  log π of N response positions under the params it is given, π_ref's or, for VeriFree's reward, π_θ's)."""

  sample: Callable
  update: Callable
  make_ref_logprobs: Callable[[int], Callable]
  at_ref: Callable  # (params, ref_params) -> whether they are equal bit for bit
  _ref: dict = dataclasses.field(default_factory=dict)

  def ref_logprobs(self, n: int) -> Callable:
    if n not in self._ref:
      self._ref[n] = self.make_ref_logprobs(n)
    return self._ref[n]


def initial_state(cfg: Config, base_params, mesh) -> tuple[RunState, Any]:
  """(step-0 state, optimizer): the policy and the reference both start as the base."""
  tx = make_optimizer(cfg.rl.optim, cfg.rl.steps)
  params = jax.tree.map(lambda x: x.copy(), base_params)  # never alias the reference
  return RunState(params, state_lib.init_opt_state(tx, params, mesh), base_params, 0, None), tx


def needs_reference(cfg: Config) -> bool:
  """Whether a step scores its rollout with π_ref: for the update (loss KL term or kl/* metrics,
  `step.needs_reference`) or for the KL reward penalty (reward.kl_coef > 0)."""
  return step_lib.needs_reference(cfg.loss) or cfg.reward.kl_coef > 0


def reference_due(cfg: Config, step: int) -> bool:
  """Whether step `step` scores its rollout with π_ref (given `needs_reference`): every step when a KL term
  is in the loss or the reward; for the kl/* metrics alone, every loss.kl_metrics_every-th step (steps 0,
  N, 2N, ...). On the other steps the update gets the sampler's log-probs in π_ref's place: only the kl/*
  metrics read them (the loss has no KL term), and those are left out of the step's line."""
  if cfg.loss.kl_coef > 0 or cfg.reward.kl_coef > 0:
    return True
  return step % cfg.loss.kl_metrics_every == 0


def compile_programs(cfg: Config, mesh, tx, state: RunState) -> Programs:
  st = {"params": state.params, "opt_state": state.opt_state}
  temp = cfg.sampling.temperature
  return Programs(
      sample=sampling.make_sampler(cfg.model, cfg.sampling),
      update=step_lib.make_update_step(cfg.model, cfg.loss, tx, temp, cfg.rl.updates_per_batch,
                                       cfg.sampling.max_new_tokens, mesh, st,
                                       micro_batches=cfg.rl.micro_batches),
      make_ref_logprobs=lambda n: step_lib.make_ref_logprobs(cfg.model, temp, n, mesh, state.ref_params,
                                                             cfg.loss.logit_chunk),
      at_ref=jax.jit(step_lib.params_equal))


def restore(ckpt: ckpt_lib.Checkpointer, state: RunState) -> tuple[RunState, bool]:
  """(state, restored?): the newest readable checkpoint (unreadable ones set aside), else `state`."""
  restored = ckpt.restore_latest(ckpt_lib.abstract_like(state.tree()))
  if restored is None:
    return state, False
  _, tree, meta = restored
  return RunState.from_checkpoint(tree, meta), True


def evaluate(cfg: Config, task: Task, problems, params, key: jax.Array, step: int) -> dict:
  return evaluation.evaluate(cfg.model, cfg.sampling, params, task, problems,
                             jax.random.fold_in(jax.random.fold_in(key, EVAL_PURPOSE), step), cfg.eval.samples,
                             cfg.eval.temperature)


def check_faults(cfg: Config, out: emit.Emitter, step: int, metrics: dict) -> None:
  bad = float(metrics["fault/nonfinite_updates"])
  if not bad:
    return
  if cfg.fault.on_nonfinite == "halt":
    out.event("nonfinite_halt", step)
    raise FaultError(f"non-finite loss or gradient at RL step {step} (fault.on_nonfinite=halt); the "
                     f"last good checkpoint in {out.wd.checkpoints_dir} is intact")
  out.event("nonfinite_skip", step, skipped_updates=bad)


def metrics_line(step: int, state: RunState, device: dict, host: dict, timing: dict) -> tuple[dict, RunState]:
  """The metrics.jsonl line of a step, and the state with ppl/execution_rel's reference set."""
  m = {k: float(v) for k, v in device.items()}
  if state.nll_exec0 is None:
    state = dataclasses.replace(state, nll_exec0=m["nll/execution"])
  m["ppl/execution_rel"] = float(np.exp(m["nll/execution"] - state.nll_exec0))
  return {"step": step, **host, **m, **timing}, state


@dataclasses.dataclass
class Context:
  """What stays fixed during a run: config, task, mesh, compiled programs, tagger, logs, checkpoints."""

  cfg: Config
  task: Task
  mesh: Any
  key: jax.Array  # the run's base key; every purpose and step folds into it
  tx: Any  # the optimizer (a reference reset re-initialises its state)
  progs: Programs
  tagger: Any
  eval_problems: list
  out: emit.Emitter
  ckpt: ckpt_lib.Checkpointer
  clock: runtime.CompileClock
  t_start: float


def run(cfg: Config, wd: Workdir, task: Task, mesh) -> dict:
  """Runs the RL steps the workdir has not done yet; returns the final held-out results."""
  state, tx = initial_state(cfg, wd.base_params(cfg.model, mesh), mesh)
  r = cfg.roles
  sink = emit.EventSink()
  ckpt = wd.checkpointer(keep=cfg.checkpoint.keep, on_event=sink)
  progs = compile_programs(cfg, mesh, tx, state)
  state, resumed = restore(ckpt, state)
  out = emit.Emitter(cfg, wd, state.step)
  sink.attach(out)
  ctx = Context(
      cfg=cfg, task=task, mesh=mesh, key=jax.random.key(cfg.seed), tx=tx, progs=progs,
      tagger=roles_lib.make_tagger(r.tagger, task, lexicon_path=r.lexicon_path, placebo_of=r.placebo_of,
                                   seed=r.seed, span_patterns=r.span_patterns),
      eval_problems=evalsets.load_eval_set(task, cfg.task.eval_size, cfg.task.eval_seed,
                                           cfg.task.data_dir or None),
      out=out, ckpt=ckpt, clock=runtime.compile_clock(), t_start=time.time())
  if resumed:
    out.event("run_resume", state.step, dropped_metric_lines=out.dropped)
  else:
    out.event("run_start", 0, dropped_metric_lines=out.dropped, devices=len(mesh.devices.flat),
              mesh=dict(mesh.shape))
  pending = None  # (step, device metrics, host metrics, timing) of the step whose line is not written yet
  for step in range(state.step, cfg.rl.steps):
    if parallel.any_process(runtime.stop_requested()):  # every process stops at the same step
      stop(ctx, state, pending)
    state, pending = rl_step(ctx, state, pending, step)
  if pending is not None:
    state = write_line(out, state, pending)
  final = out.final_evaluation()
  if final is None:
    final = evaluate(cfg, task, ctx.eval_problems, state.params, ctx.key, cfg.rl.steps)
    out.evaluation(cfg.rl.steps, final)
  ckpt.close()
  out.event("run_end", cfg.rl.steps, **final)
  out.close()
  return final


def rl_step(ctx: Context, state: RunState, pending: tuple | None, step: int
            ) -> tuple[RunState, tuple | None]:
  """One step: (state after `step` updates, unwritten line) -> (state after step + 1, this step's line)."""
  cfg, clock, out = ctx.cfg, ctx.clock, ctx.out
  t0, c0 = time.time(), clock.seconds
  ev = evaluate(cfg, ctx.task, ctx.eval_problems, state.params, ctx.key, step) if step % cfg.eval.every == 0 \
      else {}
  if ev:
    out.evaluation(step, ev)
  state = maybe_reset(ctx, state, step, ev)
  c_roll = clock.seconds
  ro, sample_host, sampled_tokens = sample_batch(ctx, state, step)
  c_roll = clock.seconds - c_roll
  t_host = time.time()
  # credit.assign on this process's rows (whole groups); the role statistics from the gathered rollout.
  roles = credit.tag_roles(ctx.tagger, ro, step)
  if cfg.loss.objective == "verifree":
    ro, dev, penalty_host = verifree_batch(ctx, state, ro, roles)
  else:
    dev, penalty_host = pg_batch(ctx, state, ro, roles)
  everyone, all_roles = rollout_lib.gather(ro, roles)
  role_host = credit.role_stats(cfg, ctx.task, ctx.tagger, everyone, all_roles)
  host_s = ro.score_s + time.time() - t_host
  t_up, c_up = time.time(), clock.seconds
  new, metrics = ctx.progs.update({"params": state.params, "opt_state": state.opt_state}, state.ref_params,
                                  dev)
  state = dataclasses.replace(state, params=new["params"], opt_state=new["opt_state"], step=step + 1)
  if pending is not None:  # step t-1's line, written after step t's update is dispatched
    state = write_line(out, state, pending)
  metrics = jax.device_get(metrics)
  if not reference_due(cfg, step):  # computed against the stand-in, not π_ref
    metrics = {k: v for k, v in metrics.items() if not k.startswith("kl/")}
  t_end, c_end = time.time(), clock.seconds
  # real (prompt + response) tokens the update processed, over every process
  update_tokens = float(everyone.prompt_mask_BP.sum() + everyone.mask_BN.sum())
  timing = {"perf/update_tok_s": update_tokens / max(t_end - t_up - (c_end - c_up), 1e-9),
            "perf/step_s": t_end - t0 - (c_end - c0), "perf/host_s": host_s, "perf/compile_s": c_end - c0,
            "time_s": t_end - ctx.t_start}
  check_faults(cfg, out, step, metrics)
  out.decoded(step, everyone)
  host = {**role_host, **rollout_lib.rollout_stats(everyone), **penalty_host, **sample_host,
          "perf/rollout_tok_s": (float(everyone.length_B.sum()) if sampled_tokens is None else sampled_tokens)
          / max(ro.sample_s - c_roll, 1e-9), **ev}
  stage = rollout_lib.curriculum_stage(cfg, step)
  if stage is not None:
    host["curriculum/stage"] = float(stage[0])
  pending = (step, metrics, host, timing)
  if state.step % cfg.checkpoint.every == 0 or state.step == cfg.rl.steps:
    state = write_line(out, state, pending)
    ctx.ckpt.save(state.step, state.tree(), state.meta())  # reported saved once it has committed
    pending = None
  return state, pending


def pg_batch(ctx: Context, state: RunState, ro: rollout_lib.Rollout, roles: np.ndarray
             ) -> tuple[dict, dict]:
  """(the update batch on the mesh, host metrics) of the policy-gradient objective: π_ref's log-probs when
  anything needs them, the KL reward penalty (reward.kl_coef), `credit`'s advantages."""
  cfg = ctx.cfg
  tokens = {"tokens_BS": np.concatenate([ro.prompt_tokens_BP, ro.tokens_BN], axis=1),
            "mask_BS": np.concatenate([ro.prompt_mask_BP, ro.mask_BN], axis=1)}
  dev = parallel.place_rows(ctx.mesh, tokens, ro.global_rows)
  ref_logp = None
  if needs_reference(cfg) and reference_due(cfg, state.step):
    ref_logp = ctx.progs.ref_logprobs(ro.tokens_BN.shape[1])(state.ref_params, dev["tokens_BS"],
                                                             dev["mask_BS"])
  penalty_host = {}
  rewarded = ro
  if cfg.reward.kl_coef > 0:
    rewarded, penalty_host = kl_penalised(ctx, state, ro, ref_logp)
  batch = credit.update_batch(cfg, ro, credit.group_advantages(cfg, rewarded), roles)
  dev.update(parallel.place_rows(ctx.mesh, {k: v for k, v in batch.items() if k not in dev}, ro.global_rows))
  if "ref_logp_BN" in step_lib.batch_keys(cfg.loss):
    dev["ref_logp_BN"] = dev["old_logp_BN"] if ref_logp is None else ref_logp  # (reference_due)
  return dev, penalty_host


def _pad_cols(x: np.ndarray, width: int) -> np.ndarray:
  return np.pad(x, [(0, 0), (0, width - x.shape[1])])


def verifree_batch(ctx: Context, state: RunState, ro: rollout_lib.Rollout, roles: np.ndarray
                   ) -> tuple[rollout_lib.Rollout, dict, dict]:
  """(the rollout with VeriFree's rewards R, the update batch on the mesh, host metrics).

  Each response is cut just after its first answer marker (token ids), the problem's reference answer and
  end token appended (`verifree.patch_rows`; response width N + the answer's bucketed width, so the
  scorer and the update compile once per response bucket), and one forward of the policy at θ (the
  scorer `ref_logprobs` compiled for that width, given π_θ's params) gives R_i = exp(Σ log π(y*|q,z_i))
  (0 without a marker) and the RLOO weights. The update trains on the same patched rows: z carries the
  sampler's log-probs, entropies and roles, the answer tokens none. Host metrics: verifree/reward (mean
  R), verifree/reward_std, verifree/marker_frac (rows with a marker), over every row of the step.
  """
  cfg, task = ctx.cfg, ctx.task
  marker = verifree.marker_ids(task)
  answers = {p.uid: verifree.answer_ids(task, p) for p in ro.batch_problems or ro.problems}
  width = ro.tokens_BN.shape[1] + verifree.answer_width(list(answers.values()))  # the same on every process
  rows = verifree.patch_rows(ro.prompt_tokens_BP, ro.prompt_mask_BP, ro.ids, marker,
                             [answers[p.uid] for p in ro.problems], width, cfg.sampling.pad_id)
  dev = parallel.place_rows(ctx.mesh, {"tokens_BS": rows["tokens_BS"], "mask_BS": rows["mask_BS"]},
                            ro.global_rows)
  scorer = ctx.progs.ref_logprobs(width)
  logp = parallel.fetch_rows(scorer(state.params, dev["tokens_BS"], dev["mask_BS"]), ro.rows)
  r = verifree.reward(logp, rows["answer_mask_BM"], rows["has_marker_B"])
  a, w = verifree.weights(r, ro.group_size)
  reason = rows["reason_mask_BM"]
  batch = {"resp_mask_BN": reason, "answer_mask_BN": rows["answer_mask_BM"],
           "old_logp_BN": _pad_cols(ro.logp_BN, width) * reason, "adv_BN": a[:, None] * reason,
           "entropy_BN": _pad_cols(ro.entropy_BN, width) * reason,
           "roles_BN": _pad_cols(roles, width) * reason.astype(np.int32), "reason_w_B": a, "answer_w_B": w}
  dev.update(parallel.place_rows(ctx.mesh, batch, ro.global_rows))
  if "ref_logp_BN" in step_lib.batch_keys(cfg.loss):  # kl/* metrics over z
    dev["ref_logp_BN"] = (scorer(state.ref_params, dev["tokens_BS"], dev["mask_BS"])
                          if reference_due(cfg, state.step) else dev["old_logp_BN"])
  r_all, has_all = parallel.allgather(r), parallel.allgather(rows["has_marker_B"])
  host = {"verifree/reward": float(r_all.mean()), "verifree/reward_std": float(r_all.std()),
          "verifree/marker_frac": float(has_all.mean())}
  return dataclasses.replace(ro, rewards_B=r), dev, host


def maybe_reset(ctx: Context, state: RunState, step: int, ev: dict) -> RunState:
  """ProRL's hard reference reset before step `step`'s rollout, when `credit.should_reset` says so.

  The held-out pass@1 of an evaluation at this step joins the history first. A reset sets π_ref ← π_θ (a
  copy: the update donates the policy's buffers, never the reference's), re-initialises the optimizer
  state (Adam moments and its step count) and writes a `ref_reset` event; the update that follows starts
  at θ = θ_ref, so its KL is exactly 0 (step.py's θ = θ_ref rule).
  """
  rl = ctx.cfg.rl
  if ev:
    state = dataclasses.replace(state, evals=state.evals + ((step, float(ev["eval/pass@1"])),))
  if not credit.should_reset(step, list(state.evals), rl.ref_reset_every, rl.ref_reset_patience,
                             rl.ref_reset_delta, state.last_reset):
    return state
  scheduled = bool(rl.ref_reset_every) and step - state.last_reset >= rl.ref_reset_every
  ctx.out.event("ref_reset", step, reason="schedule" if scheduled else "plateau",
                previous_reset=state.last_reset, **({"eval/pass@1": ev["eval/pass@1"]} if ev else {}))
  return dataclasses.replace(state, ref_params=jax.tree.map(lambda x: x.copy(), state.params),
                             opt_state=state_lib.init_opt_state(ctx.tx, state.params, ctx.mesh),
                             last_reset=step)


def kl_penalised(ctx: Context, state: RunState, ro: rollout_lib.Rollout, ref_logp_BN
                 ) -> tuple[rollout_lib.Rollout, dict]:
  """(the rollout with rewards r − β·Σ_t k1_t for the advantage estimator, {reward/kl_penalty}).

  `credit.kl_reward_penalty` on this process's rows; at θ = θ_ref bit for bit the penalty is exactly 0
  (the reference scorer's log-probs differ from the sampler's only by compilation noise, which the group
  normalisation would otherwise turn into advantages). reward/kl_penalty is the mean of β·Σ_t k1_t over
  every row of the step.
  """
  beta = ctx.cfg.reward.kl_coef
  if bool(ctx.progs.at_ref(state.params, state.ref_params)):
    ref = ro.logp_BN
  else:
    ref = parallel.fetch_rows(ref_logp_BN, ro.rows)
  rewards, kl_B = credit.kl_reward_penalty(ro.rewards_B, ro.logp_BN, ref, ro.mask_BN, beta)
  kl_all = parallel.allgather(kl_B)
  return dataclasses.replace(ro, rewards_B=rewards), {"reward/kl_penalty": float(beta * kl_all.mean())}


def sample_batch(ctx: Context, state: RunState, step: int
                 ) -> tuple[rollout_lib.Rollout, dict, float | None]:
  """(this process's rows of the step's batch, host statistics, response tokens sampled over every process
  in every round: None when that is the batch's own).

  Without rl.dynamic_sampling: the step's rollout. With it (DAPO/ProRL; docs/objectives.md): round 0 is the
  step's rollout; while `credit.dynamic_sampling` says the batch is not full, round r samples
  rl.prompts_per_step more problems from `credit.refill_stream(seed, step, r)` with the sampling key of
  round 0 folded with r. Every round is gathered, so every process decides the same selection from the
  same rewards; the selected groups are concatenated group-major into one rollout of exactly
  rl.prompts_per_step groups (prompts left-padded and responses right-padded to the widest round) and each
  process keeps its own contiguous block of it.
  """
  cfg, g, n_groups = ctx.cfg, ctx.cfg.rl.group_size, ctx.cfg.rl.prompts_per_step
  t0 = time.time()
  roll = lambda r, problems: rollout_lib.rollout(cfg, ctx.task, ctx.mesh, ctx.progs.sample,  # noqa: E731
                                                 state.params, ctx.key, step, round_=r, problems=problems)
  ro = roll(0, None)
  if not cfg.rl.dynamic_sampling:
    return ro, {}, None
  rounds = [rollout_lib.gather(ro)[0]]
  while True:
    selection, done = credit.dynamic_sampling([r.rewards_B.reshape(-1, g) for r in rounds], n_groups,
                                              cfg.rl.refill_rounds)
    if done:
      break
    rng = credit.refill_stream(cfg.seed, step, len(rounds))
    world = rollout_lib.task_at(cfg, ctx.task, step)
    rounds.append(rollout_lib.gather(roll(len(rounds), [world.sample_problem(rng)
                                                        for _ in range(n_groups)]))[0])
  full = rollout_lib.select_groups(rounds, selection, cfg.sampling.pad_id)
  # sampling time: the whole refill loop but its scoring (so the compile time it includes can come off)
  full = dataclasses.replace(full, sample_s=time.time() - t0 - full.score_s)
  informative = [credit.informative_groups(r.rewards_B.reshape(-1, g)) for r in rounds]
  host = {"dynamic/rounds": float(len(rounds)),
          "dynamic/kept_frac": float(np.mean(np.concatenate(informative))),
          "dynamic/padded_groups": float(sum(not informative[r][i] for r, i in selection)),
          "dynamic/accuracy_all": float(np.mean(np.concatenate([r.correct_B for r in rounds])))}
  return (rollout_lib.own_rows(full, ctx.mesh), host,
          float(sum(r.length_B.sum() for r in rounds)))


def stop(ctx: Context, state: RunState, pending: tuple | None) -> None:
  """Preemption at a step boundary: write the last line, checkpoint this step, log it, raise Preempted."""
  if pending is not None:
    state = write_line(ctx.out, state, pending)
  if state.step not in ctx.ckpt.steps():
    ctx.ckpt.save(state.step, state.tree(), state.meta())
  ctx.ckpt.close()
  ctx.out.event("preempted", state.step)
  ctx.out.close()
  raise runtime.Preempted(f"stopped at RL step {state.step} (SIGTERM); the state is checkpointed: rerun "
                          "the same command to resume")


def write_line(out: emit.Emitter, state: RunState, pending: tuple) -> RunState:
  """Writes a pending step's metrics line; returns the state (ppl/execution_rel's reference set)."""
  step, device, host, timing = pending
  line, state = metrics_line(step, state, device, host, timing)
  out.line(line)
  return state
