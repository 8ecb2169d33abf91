"""The jitted update step: role-split metrics by hand, sharded == unsharded, no recompiles."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rldyn import model as M
from rldyn import parallel
from rldyn import state as state_lib
from rldyn.config import LossConfig, OptimConfig
from rldyn.optim import make_optimizer
from rldyn.rl import step as S

CFG = M.ModelConfig(vocab_size=32, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, d_ff=64)
P, N, B = 4, 6, 8


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  prompt = rng.integers(3, 32, (B, P)).astype(np.int32)
  pmask = np.ones((B, P), bool)
  pmask[:3, 0] = False  # some left padding
  lengths = rng.integers(2, N + 1, B)
  resp_mask = (np.arange(N)[None] < lengths[:, None])
  resp = np.where(resp_mask, rng.integers(3, 32, (B, N)), 0).astype(np.int32)
  return {
      "tokens_BS": np.concatenate([prompt, resp], 1),
      "mask_BS": np.concatenate([pmask, resp_mask], 1),
      "resp_mask_BN": resp_mask.astype(np.float32),
      "old_logp_BN": np.where(resp_mask, -rng.uniform(0.1, 3, (B, N)), 0).astype(np.float32),
      "ref_logp_BN": np.where(resp_mask, -rng.uniform(0.1, 3, (B, N)), 0).astype(np.float32),
      "adv_BN": (rng.normal(size=(B, 1)) * resp_mask).astype(np.float32),
      "entropy_BN": np.where(resp_mask, rng.uniform(0, 2, (B, N)), 0).astype(np.float32),
      "roles_BN": np.where(resp_mask, rng.integers(0, 3, (B, N)), 0).astype(np.int32),
  }


def test_rollout_metrics_by_hand():
  b = _batch(1)
  got = jax.device_get(S.rollout_metrics({k: jnp.asarray(v) for k, v in b.items()}))
  m = b["resp_mask_BN"] > 0
  for name, rid in (("planning", 1), ("execution", 2)):
    w = m & (b["roles_BN"] == rid)
    assert got[f"entropy/{name}"] == pytest.approx(b["entropy_BN"][w].mean(), rel=1e-5)
    assert got[f"nll/{name}"] == pytest.approx(-b["old_logp_BN"][w].mean(), rel=1e-5)
    assert got[f"adv_mass/{name}"] == pytest.approx(np.abs(b["adv_BN"][w]).sum() / np.abs(b["adv_BN"][m]).sum(),
                                                    rel=1e-5)
    assert got[f"tokens/{name}_frac"] == pytest.approx(w.sum() / m.sum(), rel=1e-6)
  assert got["entropy/all"] == pytest.approx(b["entropy_BN"][m].mean(), rel=1e-5)


def _run(mesh, batch, lcfg=LossConfig(kl_coef=0.1, entropy_coef=0.01)):
  params = state_lib.init_params(CFG, mesh, jax.random.key(0))
  # Adam moves every weight by ~lr whatever its gradient, so float noise in a near-zero gradient
  # shows up at ~lr: keep lr small enough that 1e-5 is a meaningful bound.
  tx = make_optimizer(OptimConfig(lr=1e-3, warmup_steps=0, decay="constant"), 10)
  st = {"params": params, "opt_state": state_lib.init_opt_state(tx, params, mesh)}
  ref = jax.tree.map(lambda x: x.copy(), params)
  fn = S.make_update_step(CFG, lcfg, tx, 1.0, 2, N, mesh, st)
  new, metrics = fn(st, ref, parallel.shard_batch(mesh, batch))
  return jax.device_get(new["params"]), jax.device_get(metrics)


def test_sharded_equals_unsharded():
  batch = _batch(2)
  p1, m1 = _run(parallel.make_mesh(parallel.MeshConfig(1, 1, 1), jax.devices()[:1]), batch)
  p8, m8 = _run(parallel.make_mesh(parallel.MeshConfig(2, 2, 2)), batch)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), p1, p8)
  for k in m1:
    np.testing.assert_allclose(m1[k], m8[k], atol=1e-5, err_msg=k)
  assert m1["update_norm"] > 0


def test_first_minibatch_logp_matches_recompute():
  """sampler/logp_diff is ~0 when old_logp comes from the same policy (proved via the sampler in the
  loop test; here: feed the update its own recomputed log-probs)."""
  mesh = parallel.make_mesh(parallel.MeshConfig(1, 1, 1), jax.devices()[:1])
  batch = _batch(3)
  params = state_lib.init_params(CFG, mesh, jax.random.key(0))
  logits = S.response_logits(CFG, params, jnp.asarray(batch["tokens_BS"]), jnp.asarray(batch["mask_BS"]), N)
  logp, _ = S.token_logp_entropy(logits, jnp.asarray(batch["tokens_BS"][:, -N:]), 1.0)
  batch["old_logp_BN"] = np.asarray(logp) * batch["resp_mask_BN"]
  _, m = _run(mesh, batch)
  assert m["sampler/logp_diff_max"] < 1e-5
  assert m["clip_frac"] == 0.0  # ρ = 1 on minibatch 0 and within 1 ± 0.2 after one small step


def test_clip_frac_counts_exactly_the_clipped_tokens():
  """ρ = e^0.5 ≈ 1.65 > 1 + ε on the tokens of rows with A > 0: exactly those tokens are clipped."""
  mesh = parallel.make_mesh(parallel.MeshConfig(1, 1, 1), jax.devices()[:1])
  batch = _batch(3)
  params = state_lib.init_params(CFG, mesh, jax.random.key(0))
  logits = S.response_logits(CFG, params, jnp.asarray(batch["tokens_BS"]), jnp.asarray(batch["mask_BS"]), N)
  logp = np.asarray(S.token_logp_entropy(logits, jnp.asarray(batch["tokens_BS"][:, -N:]), 1.0)[0])
  m = batch["resp_mask_BN"]
  pos = (batch["adv_BN"] > 0) & (m > 0)
  assert 0 < pos.sum() < m.sum()
  batch["old_logp_BN"] = (logp - 0.5 * pos) * m
  _, metrics = _run(mesh, batch)
  assert metrics["clip_frac"] == pytest.approx(pos.sum() / m.sum(), abs=1e-6)
  for name, rid in (("planning", 1), ("execution", 2)):
    w = (m > 0) & (batch["roles_BN"] == rid)
    assert metrics[f"clip_frac/{name}"] == pytest.approx((pos & w).sum() / w.sum(), abs=1e-6)


def test_nonfinite_update_is_skipped():
  mesh = parallel.make_mesh(parallel.MeshConfig(1, 1, 1), jax.devices()[:1])
  batch = _batch(4)
  batch["adv_BN"][0, 0] = np.nan
  new, m = _run(mesh, batch)
  assert m["fault/nonfinite_updates"] == 1  # the minibatch holding row 0, not the other
  # The minibatch holding row 0 was skipped; the params stay finite.
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(new))


def test_no_recompile_across_steps():
  mesh = parallel.make_mesh(parallel.MeshConfig(1, 1, 1), jax.devices()[:1])
  params = state_lib.init_params(CFG, mesh, jax.random.key(0))
  tx = make_optimizer(OptimConfig(lr=1e-3, warmup_steps=0, decay="constant"), 10)
  st = {"params": params, "opt_state": state_lib.init_opt_state(tx, params, mesh)}
  ref = jax.tree.map(lambda x: x.copy(), params)
  fn = S.make_update_step(CFG, LossConfig(), tx, 1.0, 2, N, mesh, st)
  for seed in range(3):
    st, _ = fn(st, ref, parallel.shard_batch(mesh, _batch(seed)))
  assert fn._cache_size() == 1
