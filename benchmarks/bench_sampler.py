"""KV-cache decoding vs recompute-everything decoding, and the pretraining step's throughput.

    python benchmarks/bench_sampler.py [--large]

Both decoders run in one jitted loop on the same model, batch and key; the recompute decoder runs the
full forward over the whole (prompt + N) buffer at every step, as a cache-free implementation must.
Prints tokens/s and the ratio (higher = the KV cache helps more).
"""

import argparse
import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import banner, timeit  # noqa: E402
from rldyn import model as M  # noqa: E402
from rldyn import sampling as S  # noqa: E402


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


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--large", action="store_true", help="a ~100M model (accelerators)")
  ap.add_argument("--batch", type=int, default=16)
  ap.add_argument("--new", type=int, default=128)
  args = ap.parse_args()
  banner("sampler")
  if args.large:
    cfg = M.ModelConfig(vocab_size=32000, d_model=768, n_layers=12, n_heads=12, n_kv_heads=4, head_dim=64,
                        d_ff=2048, dtype="bfloat16")
  else:
    cfg = M.ModelConfig(vocab_size=33, d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, head_dim=32,
                        d_ff=384)
  params = M.init_params(cfg, jax.random.key(0))
  prompt = jax.random.randint(jax.random.key(1), (args.batch, 16), 3, cfg.vocab_size)
  mask = jnp.ones(prompt.shape, bool)
  n = args.new
  kv = S.make_sampler(cfg, S.SamplingConfig(max_new_tokens=n, greedy=True))
  t_kv, out = timeit(kv, params, prompt, mask, jax.random.key(2))
  rec = jax.jit(functools.partial(recompute_decode, cfg, n))
  t_rec, toks = timeit(rec, params, prompt, jax.random.key(2), repeat=1)
  same = float(np.mean(np.asarray(out["tokens"]) == np.asarray(toks)))
  tokens = args.batch * n
  print(f"model {cfg.num_params() / 1e6:.2f}M params, batch {args.batch}, {n} new tokens")
  print(f"kv-cache decode:  {tokens / t_kv:10.0f} tok/s")
  print(f"recompute decode: {tokens / t_rec:10.0f} tok/s")
  print(f"ratio kv/recompute: {t_rec / t_kv:.1f}x   (greedy tokens identical: {same:.3f})")
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
