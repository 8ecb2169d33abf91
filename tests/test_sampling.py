"""Sampler: recomputation from full logits, determinism, stops, padding, greedy, no recompiles, segmented decode."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rldyn import model as M
from rldyn import sampling as S

CFG = M.ModelConfig(vocab_size=23, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, d_ff=64)


@pytest.fixture(scope="module")
def params():
  # Sharpen the init a little so sampling is not uniform.
  return jax.tree.map(lambda x: 3 * x, M.init_params(CFG, jax.random.key(0)))


def _prompts():
  # Two prompts of different length, left-padded to width 5.
  tok = jnp.array([[0, 0, 5, 6, 7], [3, 4, 5, 6, 8]], jnp.int32)
  mask = jnp.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], bool)
  return tok, mask


def _rescore(params, prompt, pmask, out, temperature):
  """Full forward over prompt + response; returns logp and entropy of each response token."""
  tokens = jnp.concatenate([prompt, out["tokens"]], axis=1)
  mask = jnp.concatenate([pmask, out["mask"]], axis=1)
  logits, _ = M.apply(CFG, params, tokens, M.positions_from_mask(mask), M.causal_mask(mask))
  p = prompt.shape[1]
  logp_all = S.policy_logprobs(logits[:, p - 1:-1], temperature)
  logp = jnp.take_along_axis(logp_all, out["tokens"][..., None], axis=-1)[..., 0]
  return logp, S.entropy_from_logprobs(logp_all)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logp_and_entropy_match_full_forward(params, temperature):
  prompt, pmask = _prompts()
  scfg = S.SamplingConfig(max_new_tokens=12, temperature=temperature)
  out = S.make_sampler(CFG, scfg)(params, prompt, pmask, jax.random.key(1))
  logp, ent = _rescore(params, prompt, pmask, out, temperature)
  m = out["mask"]
  assert m.all()  # no stops configured
  np.testing.assert_allclose(np.where(m, out["logp"], 0), np.where(m, logp, 0), atol=1e-4)
  np.testing.assert_allclose(np.where(m, out["entropy"], 0), np.where(m, ent, 0), atol=1e-4)
  # Hand check of one entropy: -sum p log p at the first step of row 0.
  logits, _ = M.apply(CFG, params, prompt, M.positions_from_mask(pmask), M.causal_mask(pmask))
  pr = np.asarray(jax.nn.softmax(logits[0, -1] / temperature), np.float64)
  np.testing.assert_allclose(out["entropy"][0, 0], -(pr * np.log(pr)).sum(), rtol=1e-4)


def test_padded_row_equals_row_alone(params):
  prompt, pmask = _prompts()
  scfg = S.SamplingConfig(max_new_tokens=8, greedy=True)
  both = S.make_sampler(CFG, scfg)(params, prompt, pmask, jax.random.key(0))
  alone = S.make_sampler(CFG, scfg)(params, prompt[:1, 2:], pmask[:1, 2:], jax.random.key(0))
  np.testing.assert_array_equal(both["tokens"][0], alone["tokens"][0])
  np.testing.assert_allclose(both["logp"][0], alone["logp"][0], atol=1e-4)


def test_deterministic_for_a_key(params):
  prompt, pmask = _prompts()
  sample = S.make_sampler(CFG, S.SamplingConfig(max_new_tokens=10))
  a = sample(params, prompt, pmask, jax.random.key(7))
  b = sample(params, prompt, pmask, jax.random.key(7))
  c = sample(params, prompt, pmask, jax.random.key(8))
  np.testing.assert_array_equal(a["tokens"], b["tokens"])
  assert not np.array_equal(a["tokens"], c["tokens"])


def test_greedy_is_argmax(params):
  prompt, pmask = _prompts()
  out = S.make_sampler(CFG, S.SamplingConfig(max_new_tokens=6, greedy=True))(
      params, prompt, pmask, jax.random.key(0))
  tokens = jnp.concatenate([prompt, out["tokens"]], axis=1)
  mask = jnp.ones(tokens.shape, bool).at[:, :5].set(pmask)
  logits, _ = M.apply(CFG, params, tokens, M.positions_from_mask(mask), M.causal_mask(mask))
  np.testing.assert_array_equal(jnp.argmax(logits[:, 4:-1], -1), out["tokens"])


def test_stop_token_and_stop_sequence(params):
  prompt, pmask = _prompts()
  base = S.make_sampler(CFG, S.SamplingConfig(max_new_tokens=12, greedy=True))(
      params, prompt, pmask, jax.random.key(0))
  toks = np.asarray(base["tokens"])
  # Stop on the token greedy decoding emits at step 3 of row 0.
  stop = int(toks[0, 3])
  out = S.make_sampler(CFG, S.SamplingConfig(max_new_tokens=12, greedy=True, stop_tokens=(stop,)))(
      params, prompt, pmask, jax.random.key(0))
  first = int(np.argmax(toks[0] == stop))
  assert int(out["length"][0]) == first + 1
  assert not bool(out["truncated"][0])
  np.testing.assert_array_equal(out["tokens"][0, :first + 1], toks[0, :first + 1])
  assert (np.asarray(out["tokens"][0, first + 1:]) == 0).all() and not out["mask"][0, first + 1:].any()
  # A two-token stop sequence taken from row 1 at steps 4..5.
  seq = (int(toks[1, 4]), int(toks[1, 5]))
  out2 = S.make_sampler(CFG, S.SamplingConfig(max_new_tokens=12, greedy=True, stop_sequences=(seq,)))(
      params, prompt, pmask, jax.random.key(0))
  ends = [i + 2 for i in range(11) if (toks[1, i], toks[1, i + 1]) == seq]
  assert int(out2["length"][1]) == ends[0]


def test_stop_sequences_of_different_lengths(params):
  """Rolling stop window (issue #16): sequences of length 3 and 1 together end each row where a numpy
  scan of the unstopped tokens says; the kept tokens equal the unstopped ones."""
  prompt, pmask = _prompts()
  free = np.asarray(S.make_sampler(CFG, S.SamplingConfig(max_new_tokens=12, greedy=True))(
      params, prompt, pmask, jax.random.key(0))["tokens"])
  seqs = (tuple(int(x) for x in free[1, 3:6]), (int(free[0, 7]),))
  out = S.make_sampler(CFG, S.SamplingConfig(max_new_tokens=12, greedy=True, stop_sequences=seqs))(
      params, prompt, pmask, jax.random.key(0))
  for row in range(2):
    ends = [i + 1 for i in range(12) for q in seqs
            if i + 1 >= len(q) and tuple(free[row, i + 1 - len(q):i + 1]) == q]
    assert int(out["length"][row]) == min(ends)
    n = min(ends)
    np.testing.assert_array_equal(out["tokens"][row, :n], free[row, :n])
    assert not bool(out["truncated"][row])


def test_truncation_flag(params):
  prompt, pmask = _prompts()
  out = S.make_sampler(CFG, S.SamplingConfig(max_new_tokens=4))(params, prompt, pmask, jax.random.key(0))
  assert out["truncated"].all() and (out["length"] == 4).all()


def test_top_k_one_equals_greedy(params):
  prompt, pmask = _prompts()
  g = S.make_sampler(CFG, S.SamplingConfig(max_new_tokens=6, greedy=True))(
      params, prompt, pmask, jax.random.key(0))
  k1 = S.make_sampler(CFG, S.SamplingConfig(max_new_tokens=6, top_k=1))(
      params, prompt, pmask, jax.random.key(3))
  tp = S.make_sampler(CFG, S.SamplingConfig(max_new_tokens=6, top_p=1e-6))(
      params, prompt, pmask, jax.random.key(4))
  np.testing.assert_array_equal(g["tokens"], k1["tokens"])
  np.testing.assert_array_equal(g["tokens"], tp["tokens"])


def test_no_recompile_on_second_call(params):
  prompt, pmask = _prompts()
  scfg = S.SamplingConfig(max_new_tokens=5, temperature=0.9)
  traced = chex.assert_max_traces(S.generate, n=1)
  fn = jax.jit(lambda p, t, m, k: traced(CFG, scfg, p, t, m, k))
  for seed in range(3):
    fn(params, prompt, pmask, jax.random.key(seed))
  sample = S.make_sampler(CFG, scfg)
  sample(params, prompt, pmask, jax.random.key(0))
  size = sample._cache_size()
  sample(params, prompt, pmask, jax.random.key(1))
  assert sample._cache_size() == size == 1


def test_bad_sampling_config():
  with pytest.raises(ValueError, match="top_p"):
    S.SamplingConfig(top_p=1.5)
  with pytest.raises(ValueError, match="temperature"):
    S.SamplingConfig(temperature=0.0)


def test_decode_schedule():
  # P = 16, N = 128, blocks of 32: the default shape's four segments and their cache sizes.
  assert S.decode_schedule(16, 128, 32) == ((32, 48), (64, 80), (96, 112), (128, 144))
  assert S.decode_schedule(5, 12, 5) == ((5, 10), (10, 15), (12, 17))
  assert S.decode_schedule(5, 12, 32) == ((12, 17),)
  with pytest.raises(ValueError, match="positive"):
    S.decode_schedule(5, 12, 0)


@pytest.mark.parametrize("scan", [False, True])
def test_segmented_decode_matches_full_forward(scan):
  """Decoding in segments of 3 tokens (a cache that grows 5 -> 8 -> 11 -> 14 -> 17 slots, prompts
  left-padded): greedy tokens are the full forward's argmax and the returned log-probs and entropies its
  log-softmax to 1e-5; a row that stops in one segment stays stopped in the next. (Plain init: logits of
  size ~3, so float32 rounding stays well under 1e-5; the sharpened `params` reach ~25.)"""
  params = M.init_params(CFG, jax.random.key(0))
  cfg = M.ModelConfig(**{**CFG.__dict__, "scan_layers": scan})
  p_ = M.stack_layers(params) if scan else params
  prompt, pmask = _prompts()
  free = jax.jit(functools.partial(S.generate, cfg, S.SamplingConfig(max_new_tokens=12, greedy=True),
                                   decode_block=3))(p_, prompt, pmask, jax.random.key(0))
  tokens = jnp.concatenate([prompt, free["tokens"]], axis=1)
  mask = jnp.concatenate([pmask, free["mask"]], axis=1)
  logits, _ = M.apply(CFG, params, tokens, M.positions_from_mask(mask), M.causal_mask(mask))
  logp_all = S.policy_logprobs(logits[:, 4:-1], 1.0)
  np.testing.assert_array_equal(free["tokens"], jnp.argmax(logp_all, -1))
  np.testing.assert_allclose(free["logp"], jnp.max(logp_all, -1), atol=1e-5)
  np.testing.assert_allclose(free["entropy"], S.entropy_from_logprobs(logp_all), atol=1e-5)
  # Stop row 0 on its token at step 4 (segment 2): it keeps 5 tokens, row 1 runs on unchanged.
  toks = np.asarray(free["tokens"])
  stop = int(toks[0, 4])
  first = [int(np.argmax(toks[r] == stop)) if (toks[r] == stop).any() else 12 for r in range(2)]
  out = jax.jit(functools.partial(S.generate, cfg, S.SamplingConfig(max_new_tokens=12, greedy=True,
                                                                    stop_tokens=(stop,)),
                                  decode_block=3))(p_, prompt, pmask, jax.random.key(0))
  for r in range(2):
    n = min(first[r] + 1, 12)
    assert int(out["length"][r]) == n
    np.testing.assert_array_equal(out["tokens"][r, :n], toks[r, :n])
    assert not out["mask"][r, n:].any()


def test_segments_change_only_rounding(params):
  """The same key sampled with 1, 2 and 12 segments: identical tokens, log-probs equal to 1e-5."""
  prompt, pmask = _prompts()
  scfg = S.SamplingConfig(max_new_tokens=12, temperature=0.8)
  outs = [jax.jit(functools.partial(S.generate, CFG, scfg, decode_block=blk))(
      params, prompt, pmask, jax.random.key(5)) for blk in (12, 6, 1)]
  for o in outs[1:]:
    np.testing.assert_array_equal(o["tokens"], outs[0]["tokens"])
    np.testing.assert_allclose(o["logp"], outs[0]["logp"], atol=1e-5)
