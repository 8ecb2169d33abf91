"""One RL step of the demo-size model on CPU: rollout and update throughput, and what the role-split
metrics cost.

    python benchmarks/bench_rl_step.py [--prompts=16 --group=8 --new=96]

Prints rollout tokens/s, update tokens/s, each phase's fraction of this CPU's matmul bound (useful matmul
FLOPs per second over what a jitted loop of the MLP's matmul shapes reaches in the same run:
bench_sampler.matmul_bound), and two ratios measured side by side in one process:
  update with role-split metrics / update without them           (target <= 1.05)
  (update + host role tagging and semantic entropy) / update     (the host side of the same metrics)
then the float32 log-prob/entropy chunking (loss.logit_chunk) on the demo model's shape with a real-size
vocabulary (--vocab, random weights and tokens): update time and compiled peak memory
(`memory_analysis()`: arguments + outputs - aliased + temporaries) with the whole [B, N, V] logits at
once (logit_chunk = N) and in chunks (--chunk; 0 = auto), side by side.
"""

import argparse
import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.bench_sampler import matmul_bound, matmul_flops  # noqa: E402
from benchmarks.common import banner, best_of  # noqa: E402
from rldyn import config as config_lib, data, launch, parallel, sampling, state as state_lib  # noqa: E402
from rldyn.metrics import entropy as entropy_lib  # noqa: E402
from rldyn.optim import make_optimizer  # noqa: E402
from rldyn.rl import step as step_lib  # noqa: E402


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--prompts", type=int, default=16)
  ap.add_argument("--group", type=int, default=8)
  ap.add_argument("--new", type=int, default=96)
  ap.add_argument("--vocab", type=int, default=32768, help="vocabulary of the chunking comparison")
  ap.add_argument("--chunk", type=int, default=16, help="chunk of the comparison (0 = auto)")
  ap.add_argument("--only_chunking", action="store_true", help="skip the rollout and role-metric parts")
  args = ap.parse_args()
  if args.only_chunking:
    chunking(args)
    return
  banner("rl step")
  c = config_lib.default()
  c.sampling.max_new_tokens = args.new
  cfg, task, mesh, _ = launch.prepare(c, "/tmp/rldyn/bench_rl_step")
  params = state_lib.init_params(cfg.model, mesh, jax.random.key(0))
  tx = make_optimizer(cfg.rl.optim, 100)
  rng = np.random.default_rng(0)
  problems = [task.sample_problem(rng) for _ in range(args.prompts)]
  prompts = data.prompt_batch(task, problems, repeat=args.group)
  sample = sampling.make_sampler(cfg.model, cfg.sampling)
  # Rollout: the untrained model never stops, so every row generates max_new_tokens.
  out = {}

  def rollout():
    out.update(jax.device_get(sample(params, prompts["tokens"], prompts["mask"], jax.random.key(1))))

  t_roll = best_of(rollout, repeat=2)
  n_tok = float(out["length"].sum())
  b, n = out["tokens"].shape
  roles = np.stack([task.token_roles(r.tolist()) for r in out["tokens"]]).astype(np.int32)
  batch = {
      "tokens_BS": np.concatenate([prompts["tokens"], out["tokens"]], 1),
      "mask_BS": np.concatenate([prompts["mask"], out["mask"]], 1),
      "resp_mask_BN": out["mask"].astype(np.float32), "old_logp_BN": out["logp"],
      "ref_logp_BN": out["logp"], "adv_BN": rng.normal(size=(b, 1)).astype(np.float32) * out["mask"],
      "entropy_BN": out["entropy"], "roles_BN": roles}
  dev = parallel.shard_batch(mesh, batch)
  times = {}
  for with_roles in (True, False, True, False):
    st = {"params": jax.tree.map(lambda x: x.copy(), params),
          "opt_state": state_lib.init_opt_state(tx, params, mesh)}
    fn = step_lib.make_update_step(cfg.model, cfg.loss, tx, 1.0, cfg.rl.updates_per_batch, n, mesh, st,
                                   role_metrics=with_roles)
    holder = {"st": st}

    def update():
      holder["st"], m = fn(holder["st"], params, dev)
      jax.block_until_ready(m)

    t = best_of(update)
    times[with_roles] = min(t, times.get(with_roles, float("inf")))

  def host_roles():
    ids = [out["tokens"][i, :out["length"][i]].tolist() for i in range(b)]
    rs = [task.token_roles(x) for x in ids]
    entropy_lib.semantic_entropy([u for x, r in zip(ids, rs) for u in entropy_lib.planning_units(x, r)])

  t_host = best_of(host_roles)
  upd_tokens = float(batch["mask_BS"].sum())
  print(f"batch {args.prompts} prompts x {args.group} = {b} rows, {n} new tokens, "
        f"{cfg.model.num_params() / 1e6:.2f}M params")
  print(f"rollout: {n_tok / t_roll:9.0f} generated tok/s ({t_roll:.2f}s)")
  print(f"update:  {upd_tokens / times[True]:9.0f} tok/s ({times[True]:.2f}s, "
        f"{cfg.rl.updates_per_batch} minibatch updates)")
  # Useful matmul FLOPs: the rollout's prefill (P tokens attending to P/2 keys on average) and decode (each
  # new token attends to the prompt and half the response on average); the update's forward + backward
  # (3x a forward) over every row's P + N tokens.
  p = prompts["tokens"].shape[1]
  f_roll = matmul_flops(cfg.model, b * p, p / 2) + matmul_flops(cfg.model, n_tok, p + n / 2)
  f_upd = 3 * matmul_flops(cfg.model, b * (p + n), (p + n) / 2)
  bound_dec = matmul_bound(b, cfg.model.d_model, cfg.model.d_ff)
  bound_upd = matmul_bound(b * (p + n) // cfg.rl.updates_per_batch, cfg.model.d_model, cfg.model.d_ff)
  print(f"matmul bound: {bound_dec / 1e9:.1f} GFLOP/s at [{b}, {cfg.model.d_model}] (decode rows), "
        f"{bound_upd / 1e9:.1f} GFLOP/s at [{b * (p + n) // cfg.rl.updates_per_batch}, {cfg.model.d_model}] "
        f"(a minibatch's tokens)")
  print(f"rollout: {f_roll / t_roll / 1e9:.1f} GFLOP/s = {f_roll / t_roll / bound_dec:.2f} of the decode bound")
  print(f"update:  {f_upd / times[True] / 1e9:.1f} GFLOP/s = {f_upd / times[True] / bound_upd:.2f} of the "
        f"minibatch bound")
  print(f"role-split metrics in the jitted step: ratio {times[True] / times[False]:.3f} (with / without)")
  print(f"host role tagging + semantic entropy: {t_host * 1e3:.1f} ms, "
        f"ratio {(times[True] + t_host) / times[True]:.3f} of the update")
  chunking(args)


def chunking(args):
  """Whole vs chunked float32 log-probs/entropies in the update: time and compiled peak memory."""
  c = config_lib.default()
  c.sampling.max_new_tokens = args.new
  cfg, _, mesh, _ = launch.prepare(c, "/tmp/rldyn/bench_rl_step")
  mcfg = dataclasses.replace(cfg.model, vocab_size=args.vocab)
  b, n, p = args.prompts * args.group, args.new, 32
  rng = np.random.default_rng(0)
  mask = np.ones((b, n), np.float32)
  batch = {"tokens_BS": rng.integers(0, args.vocab, (b, p + n)).astype(np.int32),
           "mask_BS": np.ones((b, p + n), bool), "resp_mask_BN": mask,
           "old_logp_BN": np.full((b, n), -np.log(args.vocab), np.float32),
           "ref_logp_BN": np.full((b, n), -np.log(args.vocab), np.float32),
           "adv_BN": rng.normal(size=(b, 1)).astype(np.float32) * mask,
           "entropy_BN": np.zeros((b, n), np.float32), "roles_BN": rng.integers(0, 3, (b, n)).astype(np.int32)}
  dev = parallel.shard_batch(mesh, batch)
  params = state_lib.init_params(mcfg, mesh, jax.random.key(0))
  tx = make_optimizer(cfg.rl.optim, 100)
  rows = {}
  for name, chunk in (("whole", n), ("chunked", args.chunk)):
    lcfg = dataclasses.replace(cfg.loss, logit_chunk=chunk)
    st = {"params": jax.tree.map(lambda x: x.copy(), params),
          "opt_state": state_lib.init_opt_state(tx, params, mesh)}
    fn = step_lib.make_update_step(mcfg, lcfg, tx, 1.0, cfg.rl.updates_per_batch, n, mesh, st)
    mem = fn.lower(st, params, dev).compile().memory_analysis()
    peak = (mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
            + mem.temp_size_in_bytes)
    holder = {"st": st}

    def update(fn=fn, holder=holder):
      holder["st"], m = fn(holder["st"], params, dev)
      jax.block_until_ready(m)

    rows[name] = (best_of(update), peak, mem.temp_size_in_bytes)
  mb = b // cfg.rl.updates_per_batch
  auto = step_lib.auto_chunk(mb, n, args.vocab, args.chunk)
  print(f"chunked log-probs: {b} rows ({mb} per minibatch) x {n} response tokens, vocab {args.vocab}, "
        f"{mcfg.num_params() / 1e6:.1f}M params; chunk {auto} vs whole ({n})")
  for name, (t, peak, temp) in rows.items():
    print(f"  {name:<8} update {t:7.3f}s   peak {peak / 2**20:8.1f} MiB per device "
          f"(temporaries {temp / 2**20:8.1f} MiB)")
  (tw, pw, _), (tc, pc, _) = rows["whole"], rows["chunked"]
  print(f"  chunked / whole: time {tc / tw:.3f}, peak memory {pc / pw:.3f}")


if __name__ == "__main__":
  main()
