"""The decoder as pure functions over a parameter pytree (a nested dict of arrays).

    params = init_params(cfg, key)                     # {"embed_tokens": {"embedding": ...}, "layers": {...}}
    logits_BTV, cache = apply(cfg, params, tokens_BT, positions_BT, mask_BTS, cache, index)
    axes = logical_axes(cfg)                           # same tree, leaves = PartitionSpec of logical names

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

from rldyn.model.decoder import Decoder, KVCache, ModelConfig

__all__ = ["Decoder", "KVCache", "ModelConfig", "init_params", "abstract_params", "logical_axes",
           "apply", "causal_mask", "positions_from_mask", "segment_mask", "segment_positions"]


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
  return nnx.to_pure_dict(axes)


def apply(cfg: ModelConfig, params: dict, tokens_BT, positions_BT, mask_BTS,
          cache: KVCache | None = None, index=0):
  """Runs the decoder: returns (logits_BTV float32, cache)."""
  graphdef, state = _graph(cfg)
  state = jax.tree.map(lambda x: x, state)  # a fresh copy to fill; the cached one stays abstract
  nnx.replace_by_pure_dict(state, params)
  model = nnx.merge(graphdef, state)
  return model(tokens_BT, positions_BT, mask_BTS, cache, index)


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
