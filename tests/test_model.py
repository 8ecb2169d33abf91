"""Decoder: KV-cache decoding == full forward, causality, padding invariance, q/k norms, logical axes."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rldyn import model as M
from rldyn import sampling

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


@pytest.mark.parametrize("qkv_bias,tie,qk_norm,rope", [(False, True, False, "default"),
                                                      (True, False, False, "linear"),
                                                      (False, False, True, "llama3")])
def test_kv_cache_decode_matches_full_forward(qkv_bias, tie, qk_norm, rope):
  cfg = M.ModelConfig(**{**CFG.__dict__, "qkv_bias": qkv_bias, "tie_embeddings": tie,
                         "qk_norm": qk_norm, "rope_scaling": rope, "rope_factor": 4.0,
                         "rope_original_max_len": 16})
  params = M.init_params(cfg, jax.random.key(1))
  assert sum(x.size for x in jax.tree.leaves(params)) == cfg.num_params()
  if qkv_bias or qk_norm:  # make the biases and norm scales matter
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


def test_mask_free_path_is_plain_causal_attention(params):
  """mask_BTS=None (the fused-kernel fast path) on the XLA path equals an explicit causal mask."""
  tokens = jax.random.randint(jax.random.key(6), (2, 9), 0, CFG.vocab_size)
  positions = jnp.broadcast_to(jnp.arange(9), (2, 9))
  got = M.apply(CFG, params, tokens, positions, None)[0]
  np.testing.assert_allclose(got, _full(params, tokens), atol=1e-6)


def test_qk_norm_normalises_each_head():
  """Qwen3 q/k norms: scaling a head's query and key projections leaves the logits unchanged."""
  cfg = M.ModelConfig(**{**CFG.__dict__, "qk_norm": True})
  params = M.init_params(cfg, jax.random.key(7))
  attn = params["layers"]["0"]["self_attn"]
  assert attn["q_norm"]["scale"].shape == attn["k_norm"]["scale"].shape == (CFG.head_dim,)
  scaled = jax.tree.map(lambda x: x, params)
  scaled["layers"]["0"]["self_attn"]["q_proj"]["kernel"] = attn["q_proj"]["kernel"] * 7.0
  scaled["layers"]["0"]["self_attn"]["k_proj"]["kernel"] = attn["k_proj"]["kernel"] * 0.3
  tokens = jax.random.randint(jax.random.key(8), (1, 8), 0, CFG.vocab_size)
  np.testing.assert_allclose(_full(scaled, tokens, cfg=cfg), _full(params, tokens, cfg=cfg), atol=1e-4)
  strip = lambda p: {**p, "layers": {i: {**layer, "self_attn": {
      k: v for k, v in layer["self_attn"].items() if k not in ("q_norm", "k_norm")}}
                                      for i, layer in p["layers"].items()}}
  assert not np.allclose(_full(strip(scaled), tokens), _full(strip(params), tokens), atol=1e-2)


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
  with pytest.raises(ValueError, match="rope_scaling='yarn'; valid: default, linear, llama3"):
    M.ModelConfig(vocab_size=10, rope_scaling="yarn")
  with pytest.raises(ValueError, match="rope_factor must be > 0"):
    M.ModelConfig(vocab_size=10, rope_scaling="linear", rope_factor=0.0)
  with pytest.raises(ValueError, match="low_freq_factor <"):
    M.ModelConfig(vocab_size=10, rope_scaling="llama3", rope_low_freq_factor=4.0)
  with pytest.raises(ValueError, match="head_dim must be even"):
    M.ModelConfig(vocab_size=10, head_dim=7)


SCAN = dataclasses.replace(CFG, scan_layers=True)


def test_scan_layers_layout_axes_and_same_numbers(params):
  sp = M.init_params(SCAN, jax.random.key(0))  # same random stream: layer i's init is the unstacked one's
  jax.tree.map(np.testing.assert_array_equal, sp, M.stack_layers(params))
  jax.tree.map(np.testing.assert_array_equal, M.unstack_layers(sp), params)
  assert sum(x.size for x in jax.tree.leaves(sp)) == CFG.num_params()
  axes = M.logical_axes(SCAN)
  assert axes["layers"]["mlp"]["up_proj"]["kernel"] == jax.sharding.PartitionSpec(None, "embed", "mlp")
  jax.tree.map(lambda x, a: None if len(a) == x.ndim else pytest.fail(f"{a} vs {x.shape}"), sp, axes)
  tokens = jax.random.randint(jax.random.key(1), (2, 9), 0, CFG.vocab_size)
  np.testing.assert_allclose(_full(sp, tokens, cfg=SCAN), _full(params, tokens), atol=1e-5)


@pytest.mark.parametrize("remat", ["full", "dots", "dots_no_batch"])
def test_remat_keeps_gradients(params, remat):
  tokens = jax.random.randint(jax.random.key(2), (2, 7), 0, CFG.vocab_size)
  loss = lambda cfg: jax.grad(lambda p: jnp.sum(jnp.tanh(_full(p, tokens, cfg=cfg))))  # noqa: E731
  want = loss(CFG)(params)
  got = loss(dataclasses.replace(CFG, remat=remat))(params)
  got_scan = M.unstack_layers(loss(dataclasses.replace(SCAN, remat=remat))(M.stack_layers(params)))
  for w, g, gs in zip(jax.tree.leaves(want), jax.tree.leaves(got), jax.tree.leaves(got_scan)):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gs, w, rtol=1e-4, atol=1e-4)


def test_scan_layers_kv_cache_decode_and_sampler(params):
  """The stacked [L, B, K, S, D] cache decodes token by token exactly as the full forward, and the
  sampler draws the same tokens with either layout."""
  sp = M.stack_layers(params)
  b, t = 2, 8
  tokens = jax.random.randint(jax.random.key(3), (b, t), 0, CFG.vocab_size)
  want = _full(params, tokens)
  cache = M.KVCache.zeros(SCAN, b, t)
  assert cache.k.shape == (CFG.n_layers, b, CFG.n_kv_heads, t, CFG.head_dim)
  outs = []
  for i in range(t):
    valid = jnp.broadcast_to(jnp.arange(t) <= i, (b, 1, t))
    logits, cache = M.apply(SCAN, sp, tokens[:, i:i + 1], jnp.full((b, 1), i), valid, cache, i)
    outs.append(logits[:, 0])
  np.testing.assert_allclose(jnp.stack(outs, 1), want, atol=1e-5)
  scfg = sampling.SamplingConfig(max_new_tokens=6)
  prompt, pmask = tokens[:, :4], jnp.ones((b, 4), bool).at[0, 0].set(False)
  a = sampling.generate(CFG, scfg, params, prompt, pmask, jax.random.key(4))
  s = sampling.generate(SCAN, scfg, sp, prompt, pmask, jax.random.key(4))
  np.testing.assert_array_equal(s["tokens"], a["tokens"])
  np.testing.assert_allclose(s["entropy"], a["entropy"], atol=1e-5)


def test_scan_layers_program_size_independent_of_depth():
  """Under scan the traced program has the same number of equations at any depth (compile time is
  flat in L); unrolled it grows with L."""
  def eqns(cfg):
    p = M.abstract_params(cfg)
    tok = jax.ShapeDtypeStruct((1, 4), jnp.int32)
    return len(jax.make_jaxpr(lambda p, t: M.apply(cfg, p, t, jnp.zeros((1, 4), jnp.int32), None)[0])(
        p, tok).eqns)
  shallow, deep = (dataclasses.replace(SCAN, n_layers=n) for n in (2, 8))
  assert eqns(shallow) == eqns(deep)
  assert eqns(dataclasses.replace(deep, scan_layers=False)) > 3 * eqns(dataclasses.replace(shallow,
                                                                                           scan_layers=False))


def test_decode_attention_equals_the_t_axis_form():
  """The one-query decode attention (no T axis, [B, K, S, D] cache) is grouped_attention's T-axis math:
  the same outputs as the general path on the same keys in [B, S, K, D] layout, masked slots ignored."""
  from rldyn.model import decoder as D  # pylint: disable=g-import-not-at-top
  b, k, g, s, d = 3, 2, 2, 7, 8
  q = jax.random.normal(jax.random.key(0), (b, 1, k * g, d))
  keys = jax.random.normal(jax.random.key(1), (b, k, s, d))
  values = jax.random.normal(jax.random.key(2), (b, k, s, d))
  mask = jax.random.bernoulli(jax.random.key(3), 0.6, (b, 1, s)).at[:, :, 0].set(True)
  got = D.grouped_attention(q, keys, values, mask, "bksd")
  want = D.grouped_attention(q, jnp.swapaxes(keys, 1, 2), jnp.swapaxes(values, 1, 2), mask, "bskd")
  np.testing.assert_allclose(got, want, atol=1e-6)
  # Garbage in the masked slots changes nothing.
  junk = jnp.where(mask[:, :, None, :, None].reshape(b, 1, s, 1), keys, 1e3)
  np.testing.assert_allclose(D.grouped_attention(q, junk, values, mask, "bksd"), got, atol=1e-6)


@pytest.mark.parametrize("scan", [False, True])
def test_kv_cache_grow_then_decode(params, scan):
  """A 6-slot cache filled by a prefill of 5 tokens grows to 12 slots (old slots kept, new ones zero) and
  decoding on continues to match the full forward (to 1e-5)."""
  cfg = dataclasses.replace(CFG, scan_layers=scan)
  p_ = M.stack_layers(params) if scan else params
  tokens = jax.random.randint(jax.random.key(2), (2, 12), 0, CFG.vocab_size)
  full = _full(params, tokens)
  cache = M.KVCache.zeros(cfg, 2, 6)
  mask = (jnp.arange(6)[None, :] <= jnp.arange(5)[:, None])[None] & jnp.ones((2, 1, 1), bool)
  logits, cache = M.apply(cfg, p_, tokens[:, :5], jnp.broadcast_to(jnp.arange(5), (2, 5)), mask, cache, 0)
  assert cache.slots == 6
  grown = cache.grow(12)
  assert grown.slots == 12 and cache.grow(6) is cache
  old_k = cache.k if scan else cache.k[0]
  new_k = grown.k if scan else grown.k[0]
  np.testing.assert_array_equal(new_k[..., :6, :], old_k)
  assert not np.asarray(new_k[..., 6:, :]).any()
  got = [logits]
  for t in range(5, 12):
    m = (jnp.arange(12) <= t)[None, None, :] & jnp.ones((2, 1, 1), bool)
    lg, grown = M.apply(cfg, p_, tokens[:, t:t + 1], jnp.full((2, 1), t), m, grown, t)
    got.append(lg)
  np.testing.assert_allclose(jnp.concatenate(got, axis=1), full, atol=1e-5)
  with pytest.raises(ValueError, match="shrink"):
    grown.grow(4)
