"""The decoder as pure functions over a parameter pytree (a nested dict of arrays).

    params = init_params(cfg, key)                     # {"embed_tokens": {"embedding": ...}, "layers": {...}}
    logits_BTV, cache = apply(cfg, params, tokens_BT, positions_BT, mask_BTS, cache, index)
    axes = logical_axes(cfg)                           # same tree, leaves = PartitionSpec of logical names
    x_BTE, cache = apply_hidden(cfg, params, tokens_BT, positions_BT, mask_BTS)  # final-normed, float32
    logits_BCV = head_logits(cfg, params, x_BTE[:, -C:])  # the float32 output projection of some positions

With `cfg.scan_layers` the layer parameters are stacked ([L, ...] leaves under `layers/`, no layer
number in the path); `stack_layers(params)` / `unstack_layers(params)` convert between the layouts
(the numbers are the same model).

Hugging Face checkpoints (Llama, Qwen2, Qwen3) load into and save from these trees with
`rldyn.model.hf` (`cfg, params = hf.load(directory)`), and their tokenizer with `hf.load_tokenizer`.
NNX modules live in `decoder.py`; this module splits them once per config (`nnx.split`) and merges the
graph with whatever params a jitted function is given, so training, sampling and replay all work on
plain pytrees that optax, orbax and numpy understand.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import PartitionSpec

from rldyn.model.decoder import REMAT_POLICIES, Decoder, KVCache, ModelConfig, output_logits

__all__ = ["Decoder", "KVCache", "ModelConfig", "REMAT_POLICIES", "init_params", "abstract_params",
           "logical_axes", "apply", "apply_hidden", "head_logits", "stack_layers", "unstack_layers",
           "causal_mask", "positions_from_mask", "segment_mask", "segment_positions"]


@functools.lru_cache(maxsize=None)
def _graph(cfg: ModelConfig):
  abstract = nnx.eval_shape(lambda: Decoder(cfg, nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract)
  return graphdef, state


def init_params(cfg: ModelConfig, key: jax.Array) -> dict:
  """Fresh parameters (truncated-normal fan-in init; norms at 1)."""
  model = Decoder(cfg, nnx.Rngs(params=key))
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def abstract_params(cfg: ModelConfig) -> dict:
  """ShapeDtypeStructs of the parameters, without allocating them."""
  return jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))


def logical_axes(cfg: ModelConfig) -> dict:
  """The parameter tree with each leaf replaced by a PartitionSpec of logical axis names."""
  _, state = _graph(cfg)
  axes = jax.tree.map(lambda v: PartitionSpec(*v.get_metadata()["logical_axes"]), state,
                      is_leaf=lambda v: isinstance(v, nnx.Variable))
  axes = nnx.to_pure_dict(axes)
  if cfg.scan_layers:  # the stacked [L] axis is never sharded
    axes["layers"] = jax.tree.map(lambda p: PartitionSpec(None, *p), axes["layers"],
                                  is_leaf=lambda p: isinstance(p, PartitionSpec))
  return axes


def _model(cfg: ModelConfig, params: dict) -> Decoder:
  graphdef, state = _graph(cfg)
  state = jax.tree.map(lambda x: x, state)  # a fresh copy to fill; the cached one stays abstract
  nnx.replace_by_pure_dict(state, params)
  return nnx.merge(graphdef, state)


def apply(cfg: ModelConfig, params: dict, tokens_BT, positions_BT, mask_BTS,
          cache: KVCache | None = None, index=0):
  """Runs the decoder: returns (logits_BTV float32, cache)."""
  return _model(cfg, params)(tokens_BT, positions_BT, mask_BTS, cache, index)


def apply_hidden(cfg: ModelConfig, params: dict, tokens_BT, positions_BT, mask_BTS,
                 cache: KVCache | None = None, index=0):
  """The decoder up to its output projection: (final-normed hidden states x_BTE, float32; cache)."""
  return _model(cfg, params).hidden(tokens_BT, positions_BT, mask_BTS, cache, index)


def head_logits(cfg: ModelConfig, params: dict, x_BTE) -> jax.Array:
  """float32 logits [..., V] of hidden states from `apply_hidden` (the float32 output projection)."""
  if cfg.tie_embeddings:
    return output_logits(x_BTE, params["embed_tokens"]["embedding"], tied=True)
  return output_logits(x_BTE, params["lm_head"]["kernel"], tied=False)


def stack_layers(params: dict) -> dict:
  """Per-layer params (`layers/0/...`, `layers/1/...`) -> the scan_layers layout (`layers/...` [L, ...]).

  Leaf by leaf; the unstacked tree's arrays can be dropped as soon as this returns.
  """
  layers = params["layers"]
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *[layers[str(i)] for i in range(len(layers))])
  return {**params, "layers": stacked}


def unstack_layers(params: dict) -> dict:
  """The scan_layers layout -> per-layer params (the inverse of `stack_layers`)."""
  n = len(jax.tree.leaves(params["layers"])[0])
  return {**params, "layers": {str(i): jax.tree.map(lambda x, i=i: x[i], params["layers"])
                               for i in range(n)}}


def positions_from_mask(mask_BT: jax.Array) -> jax.Array:
  """RoPE positions that skip padding: 0 at each row's first real token."""
  return jnp.maximum(jnp.cumsum(mask_BT.astype(jnp.int32), axis=-1) - 1, 0)


def segment_positions(segment_BT: jax.Array) -> jax.Array:
  """RoPE positions that restart at 0 at the start of every packed segment."""
  t = segment_BT.shape[-1]
  idx = jnp.arange(t)[None, :]
  starts = jnp.concatenate([jnp.ones_like(segment_BT[:, :1], bool),
                            segment_BT[:, 1:] != segment_BT[:, :-1]], axis=1)
  start_idx = jax.lax.cummax(jnp.where(starts, idx, 0), axis=1)
  return idx - start_idx


def segment_mask(segment_BT: jax.Array) -> jax.Array:
  """mask_BTS for packed sequences: causal, within the same segment, never on padding (segment 0)."""
  t = segment_BT.shape[-1]
  causal = jnp.tril(jnp.ones((t, t), bool))
  same = segment_BT[:, :, None] == segment_BT[:, None, :]
  return causal[None] & same & (segment_BT[:, None, :] > 0)


def causal_mask(mask_BT: jax.Array) -> jax.Array:
  """mask_BTS for a full (cache-free) forward: causal, and never attending to padding keys."""
  t = mask_BT.shape[-1]
  causal = jnp.tril(jnp.ones((t, t), bool))
  return causal[None] & mask_BT[:, None, :].astype(bool)
