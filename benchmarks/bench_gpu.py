"""Accelerator benchmarks: train-step MFU of a ~0.9B Llama-style model, KV-cache decode bandwidth.

    python benchmarks/bench_gpu.py [--quick]

MFU = (6·N_matmul + 12·L·H·D·T) · tokens / step_time / peak, the PaLM formula (N_matmul: parameters
that take part in matmuls, i.e. all but the input embedding table; the attention term counts the full
T×T score matrix). Peak bf16 dense: H100/H200 989 TFLOP/s.
Decode: one greedy token per row per step at batch 64; the fraction of memory bandwidth counts the bytes
a step must read — the bf16 weights once plus the keys/values written so far — over the peak
(H100 3.35 TB/s, H200 4.8 TB/s).
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
import optax  # noqa: E402

from rldyn import model as M  # noqa: E402
from rldyn import sampling as S  # noqa: E402

PEAK_FLOPS = {"H100": 989e12, "H200": 989e12}
PEAK_BW = {"H100": 3.35e12, "H200": 4.8e12}


def _kind():
  k = jax.devices()[0].device_kind
  for name in PEAK_FLOPS:
    if name in k:
      return name
  return None


def llama_09b(attention: str) -> M.ModelConfig:
  return M.ModelConfig(vocab_size=32000, d_model=2048, n_layers=16, n_heads=16, n_kv_heads=8, head_dim=128,
                       d_ff=5632, max_seq_len=4096, tie_embeddings=False, param_dtype="float32",
                       dtype="bfloat16", attention=attention)


def train_step(cfg, tx, params, opt_state, tokens_BT):
  def loss_fn(p):
    t = tokens_BT.shape[1]
    pos = jnp.broadcast_to(jnp.arange(t)[None], tokens_BT.shape)
    logits, _ = M.apply(cfg, p, tokens_BT, pos, None)  # plain causal: the fused-attention fast path
    logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
    return -jnp.take_along_axis(logp, tokens_BT[:, 1:, None], axis=-1).mean()

  loss, grads = jax.value_and_grad(loss_fn)(params)
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss


def bench_train(attention: str, batch: int, seq: int, iters: int):
  cfg = llama_09b(attention)
  params = jax.jit(functools.partial(M.init_params, cfg))(jax.random.key(0))
  tx = optax.adamw(1e-4, b1=0.9, b2=0.95, weight_decay=0.0)
  opt_state = jax.jit(tx.init)(params)
  step = jax.jit(functools.partial(train_step, cfg, tx), donate_argnums=(0, 1))
  tokens = jax.random.randint(jax.random.key(1), (batch, seq), 0, cfg.vocab_size)
  t0 = time.perf_counter()
  params, opt_state, loss = step(params, opt_state, tokens)
  jax.block_until_ready(loss)
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(iters):
    params, opt_state, loss = step(params, opt_state, tokens)
  jax.block_until_ready(loss)
  dt = (time.perf_counter() - t0) / iters
  n_total = cfg.num_params()
  n_matmul = n_total - cfg.vocab_size * cfg.d_model
  flops_tok = 6 * n_matmul + 12 * cfg.n_layers * cfg.n_heads * cfg.head_dim * seq
  mfu = flops_tok * batch * seq / dt / PEAK_FLOPS.get(_kind(), 989e12)
  print(f"train  attention={attention:5s} params {n_total / 1e9:.3f}B  batch {batch}x{seq}  "
        f"step {dt * 1e3:8.1f} ms  {batch * seq / dt:9.0f} tok/s  MFU {mfu:.3f}  (compile {compile_s:.0f}s, "
        f"loss {float(loss):.3f})", flush=True)
  del params, opt_state
  return mfu


def bench_decode(batch: int, prompt: int, new: int, attention: str = "xla"):
  cfg = llama_09b(attention)
  params = jax.jit(functools.partial(M.init_params, cfg))(jax.random.key(0))
  params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
  sample = S.make_sampler(cfg, S.SamplingConfig(max_new_tokens=new, greedy=True))
  toks = jax.random.randint(jax.random.key(1), (batch, prompt), 0, cfg.vocab_size)
  mask = jnp.ones(toks.shape, bool)
  jax.block_until_ready(sample(params, toks, mask, jax.random.key(0)))
  # Time prefill alone (1 new token) to subtract it.
  one = S.make_sampler(cfg, S.SamplingConfig(max_new_tokens=1, greedy=True))
  jax.block_until_ready(one(params, toks, mask, jax.random.key(0)))
  reps = 3
  t0 = time.perf_counter()
  for _ in range(reps):
    jax.block_until_ready(one(params, toks, mask, jax.random.key(0)))
  t_prefill = (time.perf_counter() - t0) / reps
  t0 = time.perf_counter()
  for _ in range(reps):
    out = jax.block_until_ready(sample(params, toks, mask, jax.random.key(0)))
  t_all = (time.perf_counter() - t0) / reps
  per_step = (t_all - t_prefill) / (new - 1)
  w_bytes = sum(x.size * 2 for x in jax.tree.leaves(params)) - cfg.vocab_size * cfg.d_model * 2
  kv_tok = cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * 2 * 2  # k and v, bf16
  avg_ctx = prompt + new / 2
  needed = w_bytes + batch * avg_ctx * kv_tok
  read = w_bytes + batch * (prompt + new) * kv_tok  # what a full-cache attention reads
  bw = PEAK_BW.get(_kind(), 3.35e12)
  print(f"decode batch {batch} prompt {prompt} new {new}: {per_step * 1e3:.3f} ms/step  "
        f"{batch / per_step:8.0f} tok/s  needed-bytes BW fraction {needed / per_step / bw:.3f}  "
        f"(full-cache bytes {read / per_step / bw:.3f}; prefill {t_prefill * 1e3:.1f} ms; "
        f"rows stopped early: {int((~out['truncated']).sum())})", flush=True)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--quick", action="store_true")
  ap.add_argument("--only", default="train,decode")
  args = ap.parse_args()
  d = jax.devices()[0]
  print(f"== {jax.device_count()} x {d.device_kind}; jax {jax.__version__} ==", flush=True)
  if d.platform == "cpu":
    print("no accelerator: skipping (a 0.9B train step does not fit a CPU benchmark)")
    return
  if "train" in args.only:
    for attention, batch, seq in (("cudnn", 8, 2048), ("cudnn", 16, 2048), ("xla", 8, 2048)):
      try:
        bench_train(attention, batch, seq, iters=3 if args.quick else 8)
      except Exception as e:  # noqa: BLE001  (report and go on to the next variant)
        print(f"train attention={attention} batch {batch}: FAILED {type(e).__name__}: {str(e)[:300]}")
  if "decode" in args.only:
    for batch in (64,):
      try:
        bench_decode(batch, 128, 256)
      except Exception as e:  # noqa: BLE001
        print(f"decode batch {batch}: FAILED {type(e).__name__}: {str(e)[:300]}")


if __name__ == "__main__":
  main()
