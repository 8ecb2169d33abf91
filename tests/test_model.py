"""Decoder: KV-cache decoding == full forward, causality, padding invariance, logical axes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rldyn import model as M

CFG = M.ModelConfig(vocab_size=37, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, d_ff=64,
                    max_seq_len=64)


@pytest.fixture(scope="module")
def params():
  return M.init_params(CFG, jax.random.key(0))


def _full(params, tokens, mask=None, cfg=CFG):
  mask = jnp.ones(tokens.shape, bool) if mask is None else mask
  return M.apply(cfg, params, tokens, M.positions_from_mask(mask), M.causal_mask(mask))[0]


def test_param_count_and_axes(params):
  assert sum(x.size for x in jax.tree.leaves(params)) == CFG.num_params()
  axes = M.logical_axes(CFG)
  jax.tree.map(lambda x, a: None if len(a) == x.ndim else pytest.fail(f"{a} vs {x.shape}"), params, axes)
  names = {n for a in jax.tree.leaves(axes, is_leaf=lambda a: isinstance(a, jax.sharding.PartitionSpec))
           for n in a}
  assert names == {"vocab", "embed", "mlp", "heads", "kv_heads", "head_dim"}


@pytest.mark.parametrize("qkv_bias,tie", [(False, True), (True, False)])
def test_kv_cache_decode_matches_full_forward(qkv_bias, tie):
  cfg = M.ModelConfig(**{**CFG.__dict__, "qkv_bias": qkv_bias, "tie_embeddings": tie})
  params = M.init_params(cfg, jax.random.key(1))
  if qkv_bias:  # make the biases matter
    params = jax.tree.map(lambda x: x + 0.1, params)
  tokens = jax.random.randint(jax.random.key(2), (2, 12), 0, cfg.vocab_size)
  full = _full(params, tokens, cfg=cfg)
  cache = M.KVCache.zeros(cfg, 2, 12)
  ones = jnp.ones((2, 12), bool)
  # Prefill 5 tokens, then decode one at a time.
  mask = (jnp.arange(12)[None, :] <= jnp.arange(5)[:, None])[None] & jnp.ones((2, 1, 1), bool)
  logits, cache = M.apply(cfg, params, tokens[:, :5], M.positions_from_mask(ones[:, :5]), mask, cache, 0)
  got = [logits]
  for t in range(5, 12):
    m = (jnp.arange(12) <= t)[None, None, :] & jnp.ones((2, 1, 1), bool)
    lg, cache = M.apply(cfg, params, tokens[:, t:t + 1], jnp.full((2, 1), t), m, cache, t)
    got.append(lg)
  np.testing.assert_allclose(jnp.concatenate(got, axis=1), full, atol=1e-4, rtol=1e-4)


def test_causality(params):
  tokens = jax.random.randint(jax.random.key(3), (1, 10), 0, CFG.vocab_size)
  changed = tokens.at[0, 6:].set((tokens[0, 6:] + 1) % CFG.vocab_size)
  a, b = _full(params, tokens), _full(params, changed)
  np.testing.assert_allclose(a[:, :6], b[:, :6], atol=1e-6)
  assert not np.allclose(a[:, 6:], b[:, 6:])


def test_left_padding_is_invisible(params):
  tokens = jax.random.randint(jax.random.key(4), (1, 6), 1, CFG.vocab_size)
  padded = jnp.concatenate([jnp.zeros((1, 3), jnp.int32), tokens], axis=1)
  mask = jnp.array([[False] * 3 + [True] * 6])
  np.testing.assert_allclose(_full(params, padded, mask)[:, 3:], _full(params, tokens), atol=1e-5)


def test_bf16_compute_close_to_fp32(params):
  cfg16 = M.ModelConfig(**{**CFG.__dict__, "dtype": "bfloat16"})
  tokens = jax.random.randint(jax.random.key(5), (2, 8), 0, CFG.vocab_size)
  lo = _full(params, tokens, cfg=cfg16)
  assert lo.dtype == jnp.float32
  np.testing.assert_allclose(lo, _full(params, tokens), atol=0.1)


def test_eval_shape_on_a_real_size():
  cfg = M.ModelConfig(vocab_size=151936, d_model=1536, n_layers=28, n_heads=12, n_kv_heads=2,
                      head_dim=128, d_ff=8960, qkv_bias=True, tie_embeddings=True)  # Qwen2.5-1.5B
  shapes = M.abstract_params(cfg)
  n = sum(np.prod(x.shape) for x in jax.tree.leaves(shapes))
  assert n == cfg.num_params()
  assert 1.5e9 < n < 1.6e9


def test_config_errors():
  with pytest.raises(ValueError, match="multiple of model.n_kv_heads"):
    M.ModelConfig(vocab_size=10, n_heads=3, n_kv_heads=2)
  with pytest.raises(ValueError, match="valid"):
    M.ModelConfig(vocab_size=10, dtype="fp8")
