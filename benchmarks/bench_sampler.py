"""The sampler against the matmul bound, before vs after issue #16, and KV-cache vs recompute decoding.

    python benchmarks/bench_sampler.py [--large] [--batch=128] [--new=128]

One process, one model, one batch (the default study's rollout shape: 16 prompts x 8, the demo model):
  * prefill and decode timed apart (decode per step = (time(N) - time(N0)) / (N - N0), so prefill and
    compile drop out), each as GFLOP/s and as a fraction of the matmul bound: what this CPU does on a
    plain jitted chain of matmuls of the same [rows, d_model] x [d_model, d_ff] shape (rows = B * P for
    prefill, B for decode), timed in the same process;
  * the sampler now (rldyn.sampling.generate) and before #16 (`generate_before`, a frozen copy) side by
    side, with whether their tokens and log-probs are bit-identical for the same key;
  * KV-cache decoding vs recomputing the full forward per token (greedy tokens compared);
  * the pretraining step's throughput.
FLOPs are the matmul FLOPs of the model (2 x params x tokens, plus attention over the cache slots).
Timings on a shared CPU move with its load; the ratios within one run are what to compare.
"""

import argparse
import functools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import banner, timeit  # noqa: E402
from rldyn import model as M  # noqa: E402
from rldyn import sampling as S  # noqa: E402


def _stopped_before(history_BH, t, tok_B, scfg: S.SamplingConfig):
  """Whether token t (just written at history column t + pad) ends a stop token or stop sequence."""
  hit = jnp.zeros(tok_B.shape, bool)
  for s in scfg.stop_tokens:
    hit |= tok_B == s
  pad = max((len(s) for s in scfg.stop_sequences), default=1) - 1
  for seq in scfg.stop_sequences:
    m = len(seq)
    window = jax.lax.dynamic_slice_in_dim(history_BH, t + pad - m + 1, m, axis=1)
    hit |= jnp.all(window == jnp.asarray(seq, jnp.int32)[None], axis=1)
  return hit



def generate_before(cfg: M.ModelConfig, scfg: S.SamplingConfig, params, prompt_BP, prompt_mask_BP, key):
  """rldyn.sampling.generate as it was before issue #16 (an N-wide stop history and a carried key mask)."""
  b, p = prompt_BP.shape
  n = scfg.max_new_tokens
  slots = p + n
  prompt_mask_BP = prompt_mask_BP.astype(bool)
  prompt_len_B = prompt_mask_BP.sum(axis=1).astype(jnp.int32)
  # Cast the weights to the compute dtype once, outside the loop: each decode step then reads them at
  # compute width (decoding is bound by reading the weights).
  params = jax.tree.map(lambda x: x.astype(cfg.jnp_dtype), params)
  apply = functools.partial(M.apply, cfg, params)

  # Prefill: the prompt's keys go to slots [0, P); each query sees earlier real prompt tokens.
  cache = M.KVCache.zeros(cfg, b, slots)
  key_valid_BS = jnp.concatenate([prompt_mask_BP, jnp.zeros((b, n), bool)], axis=1)
  causal_PS = jnp.arange(slots)[None, :] <= jnp.arange(p)[:, None]
  mask_BPS = causal_PS[None] & key_valid_BS[:, None, :]
  logits, cache = apply(prompt_BP, M.positions_from_mask(prompt_mask_BP), mask_BPS, cache, 0)
  last_logits_BV = logits[:, -1]

  pad = max((len(s) for s in scfg.stop_sequences), default=1) - 1
  out = dict(
      tokens=jnp.full((b, n), scfg.pad_id, jnp.int32),
      logp=jnp.zeros((b, n), jnp.float32),
      entropy=jnp.zeros((b, n), jnp.float32),
      mask=jnp.zeros((b, n), bool),
  )
  history_BH = jnp.full((b, n + pad), -1, jnp.int32)
  done_B = jnp.zeros((b,), bool)

  def cond(carry):
    t, _, _, _, _, done, _ = carry
    return (t < n) & ~jnp.all(done)

  def body(carry):
    t, cache, logits_BV, out, history, done, key_valid = carry
    tok, logp, ent = S._choose(logits_BV, jax.random.fold_in(key, t), scfg)
    live = ~done
    tok = jnp.where(live, tok, scfg.pad_id)
    out = dict(
        tokens=out["tokens"].at[:, t].set(tok),
        logp=out["logp"].at[:, t].set(jnp.where(live, logp, 0.0)),
        entropy=out["entropy"].at[:, t].set(jnp.where(live, ent, 0.0)),
        mask=out["mask"].at[:, t].set(live),
    )
    history = history.at[:, t + pad].set(tok)
    done = done | (live & _stopped_before(history, t, tok, scfg))
    # Feed the token: it occupies slot P + t at position prompt_len + t.
    key_valid = key_valid.at[:, p + t].set(True)
    logits, cache = apply(tok[:, None], (prompt_len_B + t)[:, None], key_valid[:, None, :], cache, p + t)
    return t + 1, cache, logits[:, 0], out, history, done, key_valid

  carry = (jnp.int32(0), cache, last_logits_BV, out, history_BH, done_B, key_valid_BS)
  _, _, _, out, _, done, _ = jax.lax.while_loop(cond, body, carry)
  out["length"] = out["mask"].sum(axis=1).astype(jnp.int32)
  out["truncated"] = ~done
  return out


def recompute_decode(cfg, n, params, prompt_BP, key):
  """Greedy decoding with no cache: a full forward over the whole buffer per generated token."""
  b, p = prompt_BP.shape
  buf = jnp.concatenate([prompt_BP, jnp.zeros((b, n), jnp.int32)], axis=1)

  def body(t, buf):
    mask = jnp.arange(p + n)[None, :] < p + t
    mask = jnp.broadcast_to(mask, buf.shape)
    logits, _ = M.apply(cfg, params, buf, M.positions_from_mask(mask), M.causal_mask(mask))
    tok = jnp.argmax(logits[:, p + t - 1], axis=-1).astype(jnp.int32)
    return buf.at[:, p + t].set(tok)

  return jax.lax.fori_loop(0, n, body, buf)[:, p:]


def matmul_flops(cfg, tokens: int, slots: int) -> float:
  """Matmul FLOPs of a forward over `tokens` tokens that each attend to `slots` keys."""
  e, h, k, d, f, v, layers = (cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_ff,
                              cfg.vocab_size, cfg.n_layers)
  per_layer = e * h * d * 2 + e * k * d * 2 + 3 * e * f + 2 * h * d * slots
  return 2.0 * tokens * (layers * per_layer + e * v)


def matmul_bound(rows: int, e: int, f: int) -> float:
  """FLOP/s of a jitted loop of [rows, e] x [e, f] and [rows, f] x [f, e] matmuls (the MLP's shapes)."""
  x = jax.random.normal(jax.random.key(0), (rows, e))
  w1 = jax.random.normal(jax.random.key(1), (e, f)) * e ** -0.5
  w2 = jax.random.normal(jax.random.key(2), (f, e)) * f ** -0.5
  reps = max(4, int(2e9 // (4 * rows * e * f)))
  fn = jax.jit(lambda x, w1, w2: jax.lax.fori_loop(0, reps, lambda i, x: jnp.tanh((x @ w1) @ w2), x))
  t, _ = timeit(fn, x, w1, w2)
  return reps * 4.0 * rows * e * f / t


def bench_phases(cfg, params, prompt, mask, n: int, n0: int = 8, rounds: int = 5):
  """(prefill s, decode s/step, outputs) for the current and the pre-#16 sampler.

  The two samplers run alternately, `rounds` times each, and each keeps its best time: on a shared CPU
  both then see the same load.
  """
  b, p = prompt.shape
  gens = {"now": S.generate, "before #16": generate_before}
  fns = {(name, m): jax.jit(functools.partial(gen, cfg, S.SamplingConfig(max_new_tokens=m, stop_tokens=(2,))))
         for name, gen in gens.items() for m in (n0, n)}
  args = (params, prompt, mask, jax.random.key(2))
  outs = {k: jax.block_until_ready(f(*args)) for k, f in fns.items()}  # compile
  best = dict.fromkeys(fns, float("inf"))
  for _ in range(rounds):
    for k, f in fns.items():
      t0 = time.perf_counter()
      jax.block_until_ready(f(*args))
      best[k] = min(best[k], time.perf_counter() - t0)
  res = {name: ((best[name, n0] * n - best[name, n] * n0) / (n - n0), (best[name, n] - best[name, n0]) / (n - n0),
                outs[name, n]) for name in gens}
  # Prefill alone: one forward over the prompt into the cache.
  def prefill(params, prompt, mask):
    cache = M.KVCache.zeros(cfg, b, p + n)
    kv = jnp.concatenate([mask, jnp.zeros((b, n), bool)], axis=1)
    causal = jnp.arange(p + n)[None, :] <= jnp.arange(p)[:, None]
    return M.apply(cfg, params, prompt, M.positions_from_mask(mask), causal[None] & kv[:, None, :], cache, 0)
  t_pre, _ = timeit(jax.jit(prefill), params, prompt, mask)
  return t_pre, res


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--large", action="store_true", help="a ~100M model (accelerators)")
  ap.add_argument("--batch", type=int, default=128, help="rows (the default study: 16 prompts x 8)")
  ap.add_argument("--prompt", type=int, default=16, help="prompt width")
  ap.add_argument("--new", type=int, default=128)
  args = ap.parse_args()
  banner("sampler")
  if args.large:
    cfg = M.ModelConfig(vocab_size=32000, d_model=768, n_layers=12, n_heads=12, n_kv_heads=4, head_dim=64,
                        d_ff=2048, dtype="bfloat16")
  else:
    cfg = M.ModelConfig(vocab_size=33)  # the demo model
  params = M.init_params(cfg, jax.random.key(0))
  b, p, n = args.batch, args.prompt, args.new
  prompt = jax.random.randint(jax.random.key(1), (b, p), 3, cfg.vocab_size)
  mask = jnp.ones(prompt.shape, bool)
  print(f"model {cfg.num_params() / 1e6:.2f}M params, batch {b}, prompt {p}, {n} new tokens "
        f"(random weights, so no row stops early: every step runs)")

  t_pre, res = bench_phases(cfg, params, prompt, mask, n)
  bound_pre = matmul_bound(b * p, cfg.d_model, cfg.d_ff)
  bound_dec = matmul_bound(b, cfg.d_model, cfg.d_ff)
  f_pre = matmul_flops(cfg, b * p, p + n)
  f_dec = matmul_flops(cfg, b, p + n)
  print(f"matmul bound: {bound_pre / 1e9:6.1f} GFLOP/s at [{b * p}, {cfg.d_model}] rows (prefill), "
        f"{bound_dec / 1e9:6.1f} GFLOP/s at [{b}, {cfg.d_model}] (decode)")
  print(f"{'phase':24s} {'time':>10s} {'GFLOP/s':>8s} {'of bound':>8s}")
  print(f"{'prefill':24s} {t_pre * 1e3:8.1f}ms {f_pre / t_pre / 1e9:8.1f} {f_pre / t_pre / bound_pre:8.2f}")
  for name, (_, t_step, _) in res.items():
    print(f"{'decode step, ' + name:24s} {t_step * 1e3:8.2f}ms {f_dec / t_step / 1e9:8.1f} "
          f"{f_dec / t_step / bound_dec:8.2f}")
  new, old = res["now"][2], res["before #16"][2]
  same = all(np.array_equal(np.asarray(new[k]), np.asarray(old[k])) for k in new)
  print(f"decode step before/now: {res['before #16'][1] / res['now'][1]:.2f}x   "
        f"(outputs bit-identical for the same key: {same})")

  kv = S.make_sampler(cfg, S.SamplingConfig(max_new_tokens=n, greedy=True))
  t_kv, out = timeit(kv, params, prompt, mask, jax.random.key(2))
  rec = jax.jit(functools.partial(recompute_decode, cfg, n))
  t_rec, toks = timeit(rec, params, prompt, jax.random.key(2), repeat=1)
  agree = float(np.mean(np.asarray(out["tokens"]) == np.asarray(toks)))
  print(f"kv-cache decode:  {b * n / t_kv:10.0f} tok/s")
  print(f"recompute decode: {b * n / t_rec:10.0f} tok/s")
  print(f"ratio kv/recompute: {t_rec / t_kv:.1f}x   (greedy tokens identical: {agree:.3f})")
  if not args.large:
    bench_pretrain_step()


def bench_pretrain_step():
  """Tokens/s of the default pretraining step (packed countdown traces, the demo model)."""
  from rldyn import config as config_lib, launch, parallel, pretrain, state as state_lib  # pylint: disable=g-import-not-at-top
  from rldyn.optim import make_optimizer  # pylint: disable=g-import-not-at-top
  c = config_lib.default()
  c.stage = "pretrain"
  cfg, task, mesh, _ = launch.prepare(c, "/tmp/rldyn/bench_sampler")
  tx = make_optimizer(cfg.pretrain.optim, cfg.pretrain.steps)
  params = state_lib.init_params(cfg.model, mesh, jax.random.key(0))
  opt = state_lib.init_opt_state(tx, params, mesh)
  step = pretrain.make_train_step(cfg.model, tx, mesh, params, opt)
  stream = pretrain.TraceStream(task, 0, cfg.pretrain.batch_size, cfg.pretrain.seq_len, 0)
  batches = [parallel.shard_batch(mesh, next(stream)) for _ in range(6)]
  stream.close()
  params, opt, m = step(params, opt, batches[0])
  jax.block_until_ready(m)
  import time  # pylint: disable=g-import-not-at-top
  t0 = time.perf_counter()
  loss_tokens = 0.0
  for b in batches[1:]:
    params, opt, m = step(params, opt, b)
    loss_tokens += float(m["tokens"])
  dt = (time.perf_counter() - t0) / (len(batches) - 1)
  total = cfg.pretrain.batch_size * cfg.pretrain.seq_len
  print(f"pretrain step (batch {cfg.pretrain.batch_size} x {cfg.pretrain.seq_len} packed): {dt * 1e3:.0f} ms, "
        f"{total / dt:.0f} tok/s ({loss_tokens / (len(batches) - 1) / dt:.0f} response tok/s)")


if __name__ == "__main__":
  main()
