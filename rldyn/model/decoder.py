"""A Llama/Qwen2/Qwen3-style decoder in Flax NNX, with an explicit KV cache.

RMSNorm, RoPE (with optional "linear" or Llama-3 "llama3" frequency scaling), SwiGLU, grouped-query
attention, optional q/k/v biases (Qwen2), optional per-head q/k RMSNorm before RoPE (Qwen3), tied or
untied embeddings, separate parameter and compute dtypes. Every weight carries `logical_axes` metadata
(`vocab`, `embed`, `mlp`, `heads`, `kv_heads`, `head_dim`); `rldyn.parallel` maps them to a mesh.

Parameter names follow Hugging Face's Llama/Qwen2/Qwen3 checkpoints one to one (`rldyn.model.hf`
reads and writes them); only the layouts differ (HF stores `[out, in]` matrices, we store `[in, out]`
with the head axes split out):

    HF name                                     rldyn path                                   rldyn layout
    model.embed_tokens.weight [V, E]            embed_tokens/embedding                       [V, E]
    model.layers.i.self_attn.q_proj.weight      layers/i/self_attn/q_proj/kernel             [E, H, D]
    model.layers.i.self_attn.q_proj.bias        layers/i/self_attn/q_proj/bias               [H, D]
    model.layers.i.self_attn.{k,v}_proj.*       layers/i/self_attn/{k,v}_proj/{kernel,bias}  [E, K, D], [K, D]
    model.layers.i.self_attn.o_proj.weight      layers/i/self_attn/o_proj/kernel             [H, D, E]
    model.layers.i.self_attn.{q,k}_norm.weight  layers/i/self_attn/{q,k}_norm/scale          [D] (qk_norm)
    model.layers.i.mlp.{gate,up}_proj.weight    layers/i/mlp/{gate,up}_proj/kernel           [E, F]
    model.layers.i.mlp.down_proj.weight         layers/i/mlp/down_proj/kernel                [F, E]
    model.layers.i.input_layernorm.weight       layers/i/input_layernorm/scale               [E]
    model.layers.i.post_attention_layernorm     layers/i/post_attention_layernorm/scale      [E]
    model.norm.weight                           norm/scale                                   [E]
    lm_head.weight [V, E]                       lm_head/kernel (untied only)                 [E, V]

The forward pass is pure in its inputs: `model(tokens_BT, positions_BT, attn_mask_BTS, cache)` returns
`(logits_BTV, cache)`; the cache is an explicit pytree (`KVCache`), so a jitted sampler can carry it in
a `lax.while_loop`. `model.hidden(...)` stops before the output projection (the final-normed float32
hidden states, for callers that project only some positions, in chunks: `rldyn.rl.step`), and
`output_logits` is that projection, always in float32 (float32 operands, HIGHEST precision), so logits,
log-probs and entropies are float32-exact whatever the compute dtype of the layers.

Numerics and memory options (ModelConfig):
  dtype="auto"        bfloat16 compute on GPU/TPU backends, float32 on CPU (decided in `resolve_dtype`)
  scan_layers=True    the layers run under one `jax.lax.scan` over stacked parameters: every layer
                      parameter gets a leading [L] axis and its path loses the layer number
                      (`layers/self_attn/q_proj/kernel` [L, E, H, D]), and the KV cache is one
                      [L, B, K, S, D] buffer per k and v; compile time no longer grows with depth.
                      `rldyn.model.stack_layers` / `unstack_layers` convert parameter trees between the
                      two layouts; `hf.load(..., scan_layers=True)` reads a checkpoint straight into it.
  remat               per-layer rematerialisation in the backward pass (`REMAT_POLICIES`): none (keep
                      every activation) | full (keep only each layer's input) | dots (keep matmul
                      outputs) | dots_no_batch (keep matmul outputs without batch dims: weights-like)

Letters: B batch, T query positions, S key positions (cache slots), E embed, H query
heads, K kv heads, G = H // K, D head dim, F mlp, V vocab, L layers.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
ROPE_SCALINGS = ("default", "linear", "llama3")
# model.remat -> the jax.checkpoint policy of each layer (None: no rematerialisation).
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
ACCELERATORS = ("gpu", "cuda", "rocm", "tpu")


def resolve_dtype(name: str):
  """A dtype name -> jnp dtype; "auto" is bfloat16 when JAX's default backend is a GPU or TPU, else
  float32. This is the one place the accelerator default for compute is decided."""
  if name == "auto":
    return jnp.bfloat16 if jax.default_backend() in ACCELERATORS else jnp.float32
  return _DTYPES[name]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Decoder shape and numerics. Validates itself."""

  vocab_size: int
  d_model: int = 128
  n_layers: int = 4
  n_heads: int = 4
  n_kv_heads: int = 2
  head_dim: int = 32
  d_ff: int = 384
  max_seq_len: int = 256
  rope_theta: float = 10000.0
  norm_eps: float = 1e-6
  qkv_bias: bool = False
  qk_norm: bool = False  # Qwen3: RMSNorm over head_dim on each query and key head, before RoPE
  tie_embeddings: bool = True
  rope_scaling: str = "default"  # default: plain RoPE | linear: positions / factor | llama3: Llama 3.1
  rope_factor: float = 1.0  # linear, llama3: how much the context was stretched
  rope_low_freq_factor: float = 1.0  # llama3: wavelengths above original_max_len / this are divided by factor
  rope_high_freq_factor: float = 4.0  # llama3: wavelengths below original_max_len / this are kept
  rope_original_max_len: int = 8192  # llama3: the context length the model was pretrained at
  rope_hf_freqs: bool = False  # RoPE frequencies as Hugging Face computes them, 1/θ^(2i/d) (hf.load sets
  #   it); False: θ^(-2i/d), which rldyn's own models were trained with (1 ulp apart on a few frequencies)
  param_dtype: str = "float32"
  dtype: str = "float32"  # compute dtype (auto: bfloat16 on GPU/TPU, float32 on CPU); the output
  #   projection and logits are always float32
  attention: str = "xla"  # xla: einsum attention | cudnn: fused (flash) attention, GPU + bf16 only
  scan_layers: bool = False  # layers under lax.scan over stacked [L, ...] params (compile time flat in depth)
  remat: str = "none"  # per-layer rematerialisation in the backward pass: none | full | dots | dots_no_batch

  def __post_init__(self):
    for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff",
                 "max_seq_len"):
      if getattr(self, name) <= 0:
        raise ValueError(f"model.{name} must be positive, got {getattr(self, name)}")
    if self.n_heads % self.n_kv_heads:
      raise ValueError(f"model.n_heads ({self.n_heads}) must be a multiple of model.n_kv_heads "
                       f"({self.n_kv_heads}) for grouped-query attention")
    if self.attention not in ("xla", "cudnn"):
      raise ValueError(f"model.attention={self.attention!r}; valid: cudnn, xla")
    if self.param_dtype not in _DTYPES:
      raise ValueError(f"model.param_dtype={self.param_dtype!r}; valid: {sorted(_DTYPES)}")
    if self.dtype not in _DTYPES and self.dtype != "auto":
      raise ValueError(f"model.dtype={self.dtype!r}; valid: {sorted(_DTYPES) + ['auto']}")
    if self.remat not in REMAT_POLICIES:
      raise ValueError(f"model.remat={self.remat!r}; valid: {', '.join(REMAT_POLICIES)}")
    if self.head_dim % 2:
      raise ValueError(f"model.head_dim must be even for RoPE, got {self.head_dim}")
    if self.rope_scaling not in ROPE_SCALINGS:
      raise ValueError(f"model.rope_scaling={self.rope_scaling!r}; valid: {', '.join(ROPE_SCALINGS)}")
    if self.rope_scaling != "default" and not self.rope_factor > 0:
      raise ValueError(f"model.rope_factor must be > 0, got {self.rope_factor}")
    if self.rope_scaling == "llama3" and not (
        0 < self.rope_low_freq_factor < self.rope_high_freq_factor and self.rope_original_max_len > 0):
      raise ValueError("llama3 RoPE scaling needs 0 < model.rope_low_freq_factor < "
                       f"model.rope_high_freq_factor and model.rope_original_max_len > 0, got "
                       f"{self.rope_low_freq_factor}, {self.rope_high_freq_factor}, "
                       f"{self.rope_original_max_len}")

  @property
  def jnp_param_dtype(self):
    return _DTYPES[self.param_dtype]

  @property
  def jnp_dtype(self):
    return resolve_dtype(self.dtype)

  def num_params(self) -> int:
    e, f, h, k, d = self.d_model, self.d_ff, self.n_heads, self.n_kv_heads, self.head_dim
    attn = (e * h * d * 2 + e * k * d * 2 + (h * d + 2 * k * d if self.qkv_bias else 0)
            + (2 * d if self.qk_norm else 0))
    layer = attn + 3 * e * f + 2 * e
    head = 0 if self.tie_embeddings else e * self.vocab_size
    return self.vocab_size * e + self.n_layers * layer + e + head


class KVCache(NamedTuple):
  """Preallocated keys and values: one k_BKSD and one v_BKSD buffer per layer.

  Separate buffers per layer (not one stacked [L, ...] array) let XLA update each in place inside the
  decode loop and read it without slicing a copy out of a larger buffer; the [B, K, S, D] layout is the
  one the batched attention matmuls want, so no step transposes the cache.

  With `scan_layers`, k and v are single [L, B, K, S, D] arrays instead (the scan carries them and
  updates layer i's slots in place).
  """

  k: tuple[jax.Array, ...] | jax.Array
  v: tuple[jax.Array, ...] | jax.Array

  @classmethod
  def zeros(cls, cfg: ModelConfig, batch: int, slots: int) -> "KVCache":
    shape = (batch, cfg.n_kv_heads, slots, cfg.head_dim)
    if cfg.scan_layers:
      stacked = (cfg.n_layers, *shape)
      return cls(jnp.zeros(stacked, cfg.jnp_dtype), jnp.zeros(stacked, cfg.jnp_dtype))
    return cls(tuple(jnp.zeros(shape, cfg.jnp_dtype) for _ in range(cfg.n_layers)),
               tuple(jnp.zeros(shape, cfg.jnp_dtype) for _ in range(cfg.n_layers)))

  @property
  def slots(self) -> int:
    return (self.k.shape[3] if not isinstance(self.k, tuple) else self.k[0].shape[2])

  def grow(self, slots: int) -> "KVCache":
    """The same cache with `slots` slots: the new ones (at the end) are zero.

    The sampler decodes in segments whose cache covers only the slots written so far (attention then
    reads no empty slots) and grows it between segments.
    """
    extra = slots - self.slots
    if extra < 0:
      raise ValueError(f"KVCache.grow: cannot shrink {self.slots} slots to {slots}")
    if not extra:
      return self
    if not isinstance(self.k, tuple):
      pad = ((0, 0), (0, 0), (0, 0), (0, extra), (0, 0))
      return KVCache(jnp.pad(self.k, pad), jnp.pad(self.v, pad))
    pad = ((0, 0), (0, 0), (0, extra), (0, 0))
    return KVCache(tuple(jnp.pad(x, pad) for x in self.k), tuple(jnp.pad(x, pad) for x in self.v))


def _param(rngs: nnx.Rngs, shape, axes, dtype, fan_in: int | None) -> nnx.Param:
  if fan_in is None:
    value = jnp.ones(shape, dtype)
  else:
    value = (jax.random.truncated_normal(rngs.params(), -2.0, 2.0, shape, jnp.float32)
             * fan_in ** -0.5).astype(dtype)
  return nnx.Param(value, logical_axes=axes)


class RMSNorm(nnx.Module):
  """x / rms(x) * scale over the last axis (d_model, or head_dim for the Qwen3 q/k norms)."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs, dim: int | None = None, axis: str = "embed"):
    self.scale = _param(rngs, (cfg.d_model if dim is None else dim,), (axis,), cfg.jnp_param_dtype, None)
    self.eps = cfg.norm_eps

  def __call__(self, x):
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (y * self.scale[...].astype(jnp.float32)).astype(x.dtype)


class Proj(nnx.Module):
  """A dense projection whose kernel keeps its head axes: y = einsum(spec, x, kernel) + bias."""

  def __init__(self, rngs, shape, axes, fan_in, dtype, bias_shape=None, bias_axes=None):
    self.kernel = _param(rngs, shape, axes, dtype, fan_in)
    self.bias = (nnx.Param(jnp.zeros(bias_shape, dtype), logical_axes=bias_axes)
                 if bias_shape is not None else None)

  def __call__(self, spec: str, x, dtype):
    y = jnp.einsum(spec, x, self.kernel[...].astype(dtype))
    if self.bias is not None:
      y = y + self.bias[...].astype(dtype)
    return y


def rope_inv_freq(cfg: ModelConfig):
  """float32 [D/2] rotation frequencies, scaled as cfg.rope_scaling says (Hugging Face's formulas).

  Unscaled RoPE without rope_hf_freqs keeps the formula rldyn's own models were trained with, so their
  forward pass is bitwise what it was.
  """
  d = cfg.head_dim
  if cfg.rope_scaling == "default" and not cfg.rope_hf_freqs:
    return cfg.rope_theta ** (-jnp.arange(0, d, 2, dtype=jnp.float32) / d)
  inv_freq = (1.0 / (np.float32(cfg.rope_theta) ** (np.arange(0, d, 2, dtype=np.float32) / d))
              ).astype(np.float32)
  if cfg.rope_scaling == "linear":
    return (inv_freq / np.float32(cfg.rope_factor)).astype(np.float32)
  if cfg.rope_scaling == "llama3":
    factor, lo, hi = cfg.rope_factor, cfg.rope_low_freq_factor, cfg.rope_high_freq_factor
    old_len = cfg.rope_original_max_len
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > old_len / lo, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - lo) / (hi - lo)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < old_len / hi) & ~(wavelen > old_len / lo)
    return np.where(medium, smoothed, scaled).astype(np.float32)
  return inv_freq


def rope(x_BTND, positions_BT, inv_freq):
  """Rotary embedding, half-split convention (as in HF Llama/Qwen2/Qwen3); inv_freq from rope_inv_freq."""
  ang = positions_BT[..., None].astype(jnp.float32) * jnp.asarray(inv_freq, jnp.float32)  # B T D/2
  sin, cos = jnp.sin(ang)[:, :, None, :], jnp.cos(ang)[:, :, None, :]
  x1, x2 = jnp.split(x_BTND.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BTND.dtype)


def grouped_attention(q_BTHD, keys, values, mask_BTS, kv_layout: str):
  """Softmax attention with K kv heads shared by G = H // K query heads each; float32 scores.

  kv_layout names the key/value axes: "bskd" (this call's keys) or "bksd" (the decode cache).
  """
  b, t, h, d = q_BTHD.shape
  k = keys.shape[kv_layout.index("k")]
  if t == 1 and kv_layout == "bksd":  # one query per row (decoding), see _decode_attention
    return _decode_attention(q_BTHD, keys, values, mask_BTS)
  q = q_BTHD.reshape(b, t, k, h // k, d)
  scores = jnp.einsum(f"btkgd,{kv_layout}->bkgts", q, keys).astype(jnp.float32) * d ** -0.5
  scores = jnp.where(mask_BTS[:, None, None, :, :], scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1).astype(q_BTHD.dtype)
  return jnp.einsum(f"bkgts,{kv_layout}->btkgd", probs, values).reshape(b, t, h, d)


def _decode_attention(q_B1HD, keys_BKSD, values_BKSD, mask_B1S):
  """grouped_attention for a single query per row against the [B, K, S, D] cache.

  Without the T axis the two matmuls are plain batched [G, D] x [D, S] and [G, S] x [S, D] products
  over (b, k) that read the cache in its stored layout: no transposes of scores or probabilities around
  them (on CPU this halves the decode step's attention time at 144 slots). Same float32 math: scores,
  mask, softmax and weighted sum as grouped_attention.
  """
  b, _, h, d = q_B1HD.shape
  k = keys_BKSD.shape[1]
  q = q_B1HD.reshape(b, k, h // k, d)
  scores = jnp.einsum("bkgd,bksd->bkgs", q, keys_BKSD).astype(jnp.float32) * d ** -0.5
  scores = jnp.where(mask_B1S[:, :, None, :], scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1).astype(q_B1HD.dtype)
  return jnp.einsum("bkgs,bksd->bkgd", probs, values_BKSD).reshape(b, 1, h, d)


class Attention(nnx.Module):

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    e, h, k, d, pd = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.jnp_param_dtype
    bias = cfg.qkv_bias
    self.q_proj = Proj(rngs, (e, h, d), ("embed", "heads", "head_dim"), e, pd,
                       (h, d) if bias else None, ("heads", "head_dim"))
    self.k_proj = Proj(rngs, (e, k, d), ("embed", "kv_heads", "head_dim"), e, pd,
                       (k, d) if bias else None, ("kv_heads", "head_dim"))
    self.v_proj = Proj(rngs, (e, k, d), ("embed", "kv_heads", "head_dim"), e, pd,
                       (k, d) if bias else None, ("kv_heads", "head_dim"))
    self.o_proj = Proj(rngs, (h, d, e), ("heads", "head_dim", "embed"), h * d, pd)
    if cfg.qk_norm:
      self.q_norm = RMSNorm(cfg, rngs, d, "head_dim")
      self.k_norm = RMSNorm(cfg, rngs, d, "head_dim")
    self.cfg = cfg

  def __call__(self, x_BTE, positions_BT, mask_BTS, cache: KVCache | None, layer: int, index):
    cfg, dt = self.cfg, self.cfg.jnp_dtype
    q = self.q_proj("bte,ehd->bthd", x_BTE, dt)
    k = self.k_proj("bte,ekd->btkd", x_BTE, dt)
    if cfg.qk_norm:
      q, k = self.q_norm(q), self.k_norm(k)
    inv_freq = rope_inv_freq(cfg)
    q, k = rope(q, positions_BT, inv_freq), rope(k, positions_BT, inv_freq)
    v = self.v_proj("bte,ekd->btkd", x_BTE, dt)
    if cache is not None and not isinstance(cache.k, tuple):  # stacked [L, ...] cache (scan_layers)
      z = jnp.zeros((), jnp.int32)
      start = (jnp.asarray(layer, jnp.int32), z, z, jnp.asarray(index, jnp.int32), z)
      k_all = jax.lax.dynamic_update_slice(cache.k, jnp.swapaxes(k, 1, 2).astype(cache.k.dtype)[None], start)
      v_all = jax.lax.dynamic_update_slice(cache.v, jnp.swapaxes(v, 1, 2).astype(cache.v.dtype)[None], start)
      cache = KVCache(k_all, v_all)
      kc = jax.lax.dynamic_index_in_dim(k_all, layer, 0, keepdims=False)
      vc = jax.lax.dynamic_index_in_dim(v_all, layer, 0, keepdims=False)
      out = grouped_attention(q, kc.astype(dt), vc.astype(dt), mask_BTS, "bksd")
      return self.o_proj("bthd,hde->bte", out, dt), cache
    if cache is not None:  # decoding: write this call's keys in place at slot `index`, attend over the cache
      kc, vc = cache.k[layer], cache.v[layer]
      kc = jax.lax.dynamic_update_slice_in_dim(kc, jnp.swapaxes(k, 1, 2).astype(kc.dtype), index, 2)
      vc = jax.lax.dynamic_update_slice_in_dim(vc, jnp.swapaxes(v, 1, 2).astype(vc.dtype), index, 2)
      cache = KVCache(cache.k[:layer] + (kc,) + cache.k[layer + 1:],
                      cache.v[:layer] + (vc,) + cache.v[layer + 1:])
      out = grouped_attention(q, kc.astype(dt), vc.astype(dt), mask_BTS, "bksd")
      return self.o_proj("bthd,hde->bte", out, dt), cache
    keys, values = k, v  # training / scoring: keys are this call's positions
    if cfg.attention == "cudnn":
      mask = None if mask_BTS is None else mask_BTS[:, None]
      out = jax.nn.dot_product_attention(q, keys.astype(dt), values.astype(dt), mask=mask,
                                         is_causal=mask_BTS is None, implementation="cudnn")
      return self.o_proj("bthd,hde->bte", out, dt), cache
    if mask_BTS is None:  # plain causal attention over this call's positions
      mask_BTS = jnp.tril(jnp.ones((q.shape[1], keys.shape[1]), bool))[None]
    out = grouped_attention(q, keys.astype(dt), values.astype(dt), mask_BTS, "bskd")
    return self.o_proj("bthd,hde->bte", out, dt), cache


class MLP(nnx.Module):

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    e, f, pd = cfg.d_model, cfg.d_ff, cfg.jnp_param_dtype
    self.gate_proj = Proj(rngs, (e, f), ("embed", "mlp"), e, pd)
    self.up_proj = Proj(rngs, (e, f), ("embed", "mlp"), e, pd)
    self.down_proj = Proj(rngs, (f, e), ("mlp", "embed"), f, pd)
    self.dtype = cfg.jnp_dtype

  def __call__(self, x_BTE):
    dt = self.dtype
    h = jax.nn.silu(self.gate_proj("bte,ef->btf", x_BTE, dt)) * self.up_proj("bte,ef->btf", x_BTE, dt)
    return self.down_proj("btf,fe->bte", h, dt)


class DecoderLayer(nnx.Module):

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.input_layernorm = RMSNorm(cfg, rngs)
    self.self_attn = Attention(cfg, rngs)
    self.post_attention_layernorm = RMSNorm(cfg, rngs)
    self.mlp = MLP(cfg, rngs)

  def __call__(self, x, positions, mask, cache, layer, index):
    a, cache = self.self_attn(self.input_layernorm(x), positions, mask, cache, layer, index)
    x = x + a
    x = x + self.mlp(self.post_attention_layernorm(x))
    return x, cache


def output_logits(x_BTE, weight, tied: bool):
  """The output projection in float32 (float32 operands, HIGHEST precision: no bf16/TF32 passes).

  weight: the embedding [V, E] (tied) or lm_head kernel [E, V]. Returns float32 logits [..., V].
  """
  spec = "...e,ve->...v" if tied else "...e,ev->...v"
  return jnp.einsum(spec, x_BTE.astype(jnp.float32), weight.astype(jnp.float32),
                    precision=jax.lax.Precision.HIGHEST)


def _stack_layers(cfg: ModelConfig, rngs: nnx.Rngs) -> DecoderLayer:
  """One DecoderLayer whose parameters carry a leading [L] axis: layer i's are those the unstacked
  model would initialise i-th (same random stream), so both layouts start from the same weights."""
  layers = [DecoderLayer(cfg, rngs) for _ in range(cfg.n_layers)]
  template = layers[0]
  state = nnx.state(template, nnx.Param)
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs),
                         *[nnx.to_pure_dict(nnx.state(layer, nnx.Param)) for layer in layers])
  nnx.replace_by_pure_dict(state, stacked)
  nnx.update(template, state)
  return template


class Decoder(nnx.Module):
  """The language model: tokens -> float32 logits over the vocabulary."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embed_tokens = nnx.Dict(embedding=_param(
        rngs, (cfg.vocab_size, cfg.d_model), ("vocab", "embed"), cfg.jnp_param_dtype, cfg.d_model))
    if cfg.scan_layers:
      self.layers = _stack_layers(cfg, rngs)
    else:
      self.layers = nnx.Dict({str(i): DecoderLayer(cfg, rngs) for i in range(cfg.n_layers)})
    self.norm = RMSNorm(cfg, rngs)
    self.lm_head = None if cfg.tie_embeddings else Proj(
        rngs, (cfg.d_model, cfg.vocab_size), ("embed", "vocab"), cfg.d_model, cfg.jnp_param_dtype)

  def __call__(self, tokens_BT, positions_BT, mask_BTS, cache: KVCache | None = None, index=0):
    """Returns (logits_BTV float32, updated cache or None).

    mask_BTS[b, t, s] says whether query t of row b may attend to key s; with a cache, s indexes cache
    slots and this call's keys are written at slots [index, index + T). mask_BTS=None means plain causal
    attention over unpadded rows (the fast path for fused attention kernels).
    """
    x, cache = self.hidden(tokens_BT, positions_BT, mask_BTS, cache, index)
    return self.logits(x), cache

  def logits(self, x_BTE):
    """float32 logits of final-normed hidden states (`output_logits`)."""
    if self.lm_head is None:
      return output_logits(x_BTE, self.embed_tokens["embedding"][...], tied=True)
    return output_logits(x_BTE, self.lm_head.kernel[...], tied=False)

  def hidden(self, tokens_BT, positions_BT, mask_BTS, cache: KVCache | None = None, index=0):
    """(final-normed hidden states x_BTE in float32, cache): the forward pass up to the projection."""
    cfg, dt = self.cfg, self.cfg.jnp_dtype
    emb = self.embed_tokens["embedding"][...]
    x = jnp.take(emb, tokens_BT, axis=0).astype(dt)
    policy = REMAT_POLICIES[cfg.remat]
    if cfg.scan_layers:
      graphdef, state = nnx.split(self.layers)

      def body(carry, xs):
        x, cache = carry
        st, i = xs
        return nnx.merge(graphdef, st)(x, positions_BT, mask_BTS, cache, i, index), None

      if cfg.remat != "none":
        body = jax.checkpoint(body, policy=policy)
      (x, cache), _ = jax.lax.scan(body, (x, cache), (state, jnp.arange(cfg.n_layers)))
    else:
      for i in range(cfg.n_layers):
        layer = self.layers[str(i)]
        if cfg.remat == "none":
          x, cache = layer(x, positions_BT, mask_BTS, cache, i, index)
          continue
        graphdef, state = nnx.split(layer)

        def run(st, x, cache, graphdef=graphdef, i=i):
          return nnx.merge(graphdef, st)(x, positions_BT, mask_BTS, cache, i, index)

        x, cache = jax.checkpoint(run, policy=policy)(state, x, cache)
    # The final norm in float32 (its output feeds the float32 projection unrounded).
    return self.norm(x.astype(jnp.float32)), cache
