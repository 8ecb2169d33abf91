"""The sampler against the matmul bound, now vs before the segmented decode, and KV-cache vs recompute.

    python benchmarks/bench_sampler.py [--large] [--batch=128] [--new=128] [--rounds=5] [--no_pretrain]

One process, one model, one batch (the default study's rollout shape: 16 prompts x 8, the demo model):
  * prefill and decode timed apart (decode per step = (time(N) - time(N0)) / (N - N0), so prefill and
    compile drop out), each as GFLOP/s and as a fraction of the matmul bound: what this CPU does on a
    plain jitted chain of matmuls of the same [rows, d_model] x [d_model, d_ff] shape (rows = B * P for
    prefill, B for decode), timed in the same process;
  * the sampler now (rldyn.sampling.generate: segmented cache, one-query attention) and before
    (`generate_before`: the same function in one full-size segment, with the previous attention patched
    in while it traces) side by
    side, alternating, with best and median times, tokens/s, compile time, whether their outputs are
    bit-identical for the same key, and over several keys how many tokens differ;
  * KV-cache decoding vs recomputing the full forward per token (greedy tokens compared);
  * the pretraining step's throughput.
FLOPs are the useful matmul FLOPs (2 x params x tokens, plus attention over the filled slots only), so a
sampler that attends over empty cache slots gets no credit for them.
Timings on a shared CPU move with its load; the ratios within one run are what to compare.
"""

import argparse
import contextlib
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
from rldyn.model import decoder as D  # noqa: E402


def grouped_attention_before(q_BTHD, keys, values, mask_BTS, kv_layout: str):
  """rldyn.model.decoder.grouped_attention before the segmented sampler (decoding used the T axis too)."""
  b, t, h, d = q_BTHD.shape
  k = keys.shape[kv_layout.index("k")]
  q = q_BTHD.reshape(b, t, k, h // k, d)
  scores = jnp.einsum(f"btkgd,{kv_layout}->bkgts", q, keys).astype(jnp.float32) * d ** -0.5
  scores = jnp.where(mask_BTS[:, None, None, :, :], scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1).astype(q_BTHD.dtype)
  return jnp.einsum(f"bkgts,{kv_layout}->btkgd", probs, values).reshape(b, t, h, d)


@contextlib.contextmanager
def _attention_before():
  """Traces the decoder with grouped_attention_before (the frozen pre-change attention)."""
  saved = D.grouped_attention
  D.grouped_attention = grouped_attention_before
  try:
    yield
  finally:
    D.grouped_attention = saved


def generate_before(cfg: M.ModelConfig, scfg: S.SamplingConfig, params, prompt_BP, prompt_mask_BP, key):
  """rldyn.sampling.generate before the segmented decode: one segment (one while loop over a P + N slot
  cache that every step attends over in full), traced with the previous T-axis attention."""
  with _attention_before():
    return S.generate(cfg, scfg, params, prompt_BP, prompt_mask_BP, key, decode_block=scfg.max_new_tokens)


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


def matmul_flops(cfg, tokens: int, slots: float) -> float:
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
  """(prefill s, {name: (decode s/step, outputs)}) for the current and the previous sampler.

  The two samplers run alternately, `rounds` times each, and each keeps its median and best time: on a
  shared CPU both then see the same load. Decode per step = (time(N) - time(N0)) / (N - N0).
  """
  b, p = prompt.shape
  gens = {"now": S.generate, "before": generate_before}
  fns = {(name, m): jax.jit(functools.partial(gen, cfg, S.SamplingConfig(max_new_tokens=m, stop_tokens=(2,))))
         for name, gen in gens.items() for m in (n0, n)}
  args = (params, prompt, mask, jax.random.key(2))
  compile_s = {}
  for k, f in fns.items():
    t0 = time.perf_counter()
    fns[k] = f.lower(*args).compile()
    compile_s[k] = time.perf_counter() - t0
  outs = {k: jax.block_until_ready(f(*args)) for k, f in fns.items()}
  times = {k: [] for k in fns}
  for _ in range(rounds):
    for k, f in fns.items():
      t0 = time.perf_counter()
      jax.block_until_ready(f(*args))
      times[k].append(time.perf_counter() - t0)
  res = {}
  for name in gens:
    best = {m: min(times[name, m]) for m in (n0, n)}
    med = {m: float(np.median(times[name, m])) for m in (n0, n)}
    res[name] = dict(step=(best[n] - best[n0]) / (n - n0), step_median=(med[n] - med[n0]) / (n - n0),
                     total=best[n], total_median=med[n], compile=compile_s[name, n], out=outs[name, n])

  # Prefill alone: one forward over the prompt into a cache of the first segment's size.
  slots = S.decode_schedule(p, n)[0][1]

  def prefill(params, prompt, mask):
    cache = M.KVCache.zeros(cfg, b, slots)
    kv = jnp.concatenate([mask, jnp.zeros((b, slots - p), bool)], axis=1)
    causal = jnp.arange(slots)[None, :] <= jnp.arange(p)[:, None]
    return M.apply(cfg, params, prompt, M.positions_from_mask(mask), causal[None] & kv[:, None, :], cache, 0)
  t_pre, _ = timeit(jax.jit(prefill), params, prompt, mask, repeat=rounds)
  return t_pre, res


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--large", action="store_true", help="a ~100M model (accelerators)")
  ap.add_argument("--batch", type=int, default=128, help="rows (the default study: 16 prompts x 8)")
  ap.add_argument("--prompt", type=int, default=16, help="prompt width")
  ap.add_argument("--new", type=int, default=128)
  ap.add_argument("--rounds", type=int, default=5, help="alternating timing rounds per sampler")
  ap.add_argument("--keys", type=int, default=4, help="sampling keys compared between the two samplers")
  ap.add_argument("--no_pretrain", action="store_true", help="skip the pretraining-step timing")
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
        f"(random weights, so no row stops early: every step runs); decode segments "
        f"{[s for _, s in S.decode_schedule(p, n)]} slots")

  t_pre, res = bench_phases(cfg, params, prompt, mask, n, rounds=args.rounds)
  bound_pre = matmul_bound(b * p, cfg.d_model, cfg.d_ff)
  bound_dec = matmul_bound(b, cfg.d_model, cfg.d_ff)
  # Useful FLOPs: prefill queries attend to the prompt (P keys), decode step t to the P + t + 1 filled slots
  # (on average P + (N + 1) / 2); a sampler that reads more slots does not get credit for them.
  f_pre = matmul_flops(cfg, b * p, p)
  f_dec = matmul_flops(cfg, b, p + (n + 1) / 2)
  print(f"matmul bound: {bound_pre / 1e9:6.1f} GFLOP/s at [{b * p}, {cfg.d_model}] rows (prefill), "
        f"{bound_dec / 1e9:6.1f} GFLOP/s at [{b}, {cfg.d_model}] (decode)")
  print(f"{'phase':20s} {'time':>10s} {'median':>10s} {'GFLOP/s':>8s} {'of bound':>8s} {'tok/s':>8s} {'compile':>8s}")
  print(f"{'prefill':20s} {t_pre * 1e3:8.1f}ms {'':10s} {f_pre / t_pre / 1e9:8.1f} {f_pre / t_pre / bound_pre:8.2f}")
  for name, r in res.items():
    print(f"{'decode step, ' + name:20s} {r['step'] * 1e3:8.2f}ms {r['step_median'] * 1e3:8.2f}ms "
          f"{f_dec / r['step'] / 1e9:8.1f} {f_dec / r['step'] / bound_dec:8.2f} {b / r['step']:8.0f} "
          f"{r['compile']:7.1f}s")
  for name, r in res.items():
    print(f"{'sample(), ' + name:20s} {r['total'] * 1e3:8.1f}ms {r['total_median'] * 1e3:8.1f}ms "
          f"{'':8s} {'':8s} {b * n / r['total']:8.0f}")
  now, before = res["now"], res["before"]
  print(f"decode step before/now: {before['step'] / now['step']:.2f}x (best), "
        f"{before['step_median'] / now['step_median']:.2f}x (median); whole sample() "
        f"{before['total'] / now['total']:.2f}x")
  same = {k: bool(np.array_equal(np.asarray(now["out"][k]), np.asarray(before["out"][k]))) for k in now["out"]}
  print(f"bit-identical for the same key: {same}")
  compare_keys(cfg, params, prompt, mask, n, args.keys)

  kv = S.make_sampler(cfg, S.SamplingConfig(max_new_tokens=n, greedy=True))
  t_kv, out = timeit(kv, params, prompt, mask, jax.random.key(2))
  rec = jax.jit(functools.partial(recompute_decode, cfg, n))
  t_rec, toks = timeit(rec, params, prompt, jax.random.key(2), repeat=1)
  agree = float(np.mean(np.asarray(out["tokens"]) == np.asarray(toks)))
  print(f"kv-cache decode:  {b * n / t_kv:10.0f} tok/s")
  print(f"recompute decode: {b * n / t_rec:10.0f} tok/s")
  print(f"ratio kv/recompute: {t_rec / t_kv:.1f}x   (greedy tokens identical: {agree:.3f})")
  if not args.large and not args.no_pretrain:
    bench_pretrain_step()


def compare_keys(cfg, params, prompt, mask, n: int, keys: int):
  """Tokens and log-probs of the two samplers over `keys` sampling keys and greedy: how many tokens
  differ (a float-rounding change flips a token only where two choices tie to ~1e-6) and the largest
  log-prob difference on the tokens before a row's first difference."""
  for greedy in (False, True):
    scfg = S.SamplingConfig(max_new_tokens=n, stop_tokens=(2,), greedy=greedy)
    now = jax.jit(functools.partial(S.generate, cfg, scfg))
    before = jax.jit(functools.partial(generate_before, cfg, scfg))
    diff_tok = diff_rows = total = 0
    dlogp = 0.0
    for i in range(1 if greedy else keys):
      a, c = (jax.device_get(f(params, prompt, mask, jax.random.key(100 + i))) for f in (now, before))
      neq = a["tokens"] != c["tokens"]
      diff_tok += int(neq.sum())
      diff_rows += int(neq.any(axis=1).sum())
      total += neq.size
      same_prefix = np.cumsum(neq, axis=1) == 0
      dlogp = max(dlogp, float(np.abs(np.where(same_prefix, a["logp"] - c["logp"], 0)).max()))
    print(f"{'greedy' if greedy else f'sampled ({keys} keys)'}: {diff_tok} of {total} tokens differ "
          f"({diff_rows} rows); max |logp now - before| {dlogp:.1e}")


def pretrain_step_time(c, calls: int = 5):
  """(seconds per pretraining step after a compile call, cfg, task, mesh, params) for the ConfigDict c
  (packed traces, its model; timed over `calls` steps)."""
  from rldyn import launch, parallel, pretrain, state as state_lib  # pylint: disable=g-import-not-at-top
  from rldyn.optim import make_optimizer  # pylint: disable=g-import-not-at-top
  c.stage = "pretrain"
  cfg, task, mesh, _ = launch.prepare(c, "/tmp/rldyn/bench_sampler")
  tx = make_optimizer(cfg.pretrain.optim, cfg.pretrain.steps)
  params = state_lib.init_params(cfg.model, mesh, jax.random.key(0))
  opt = state_lib.init_opt_state(tx, params, mesh)
  step = pretrain.make_train_step(cfg.model, tx, mesh, params, opt)
  stream = pretrain.TraceStream(task, 0, cfg.pretrain.batch_size, cfg.pretrain.seq_len, 0)
  batches = [parallel.shard_batch(mesh, next(stream)) for _ in range(calls + 1)]
  stream.close()
  params, opt, m = step(params, opt, batches[0])
  jax.block_until_ready(m)
  t0 = time.perf_counter()
  for b in batches[1:]:
    params, opt, m = step(params, opt, b)
  jax.block_until_ready(m)
  return (time.perf_counter() - t0) / calls, cfg, task, mesh, params


def bench_pretrain_step():
  """Tokens/s of the default pretraining step (packed countdown traces, the demo model)."""
  from rldyn import config as config_lib  # pylint: disable=g-import-not-at-top
  dt, cfg, *_ = pretrain_step_time(config_lib.default())
  total = cfg.pretrain.batch_size * cfg.pretrain.seq_len
  print(f"pretrain step (batch {cfg.pretrain.batch_size} x {cfg.pretrain.seq_len} packed): {dt * 1e3:.0f} ms, "
        f"{total / dt:.0f} tok/s")


if __name__ == "__main__":
  main()
