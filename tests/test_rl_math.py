"""RL objectives against hand computations (docs/objectives.md)."""
import jax.numpy as jnp
import numpy as np
import pytest

from rldyn.rl import advantages as A
from rldyn.rl import losses as L


def test_grpo_hand_values():
  r = jnp.array([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
  adv = A.ADVANTAGES.get("grpo")(r)
  # mean 0.5, population std 0.5 -> ±1; equal rewards -> exactly 0.
  np.testing.assert_allclose(adv[0], [1, -1, -1, 1], atol=1e-5)
  np.testing.assert_array_equal(adv[1], 0.0)
  unbiased = A.ADVANTAGES.get("grpo")(r, ddof=1)
  np.testing.assert_allclose(unbiased[0], np.array([1, -1, -1, 1]) * 0.5 / np.sqrt(1 / 3), atol=1e-5)


def test_drgrpo_and_rloo_hand_values():
  r = jnp.array([[3.0, 0.0, 0.0]])
  np.testing.assert_allclose(A.ADVANTAGES.get("drgrpo")(r), [[2.0, -1.0, -1.0]])
  # RLOO: 3 - mean(0,0) = 3; 0 - mean(3,0) = -1.5
  np.testing.assert_allclose(A.ADVANTAGES.get("rloo")(r), [[3.0, -1.5, -1.5]])


def test_unknown_names_list_valid_ones():
  with pytest.raises(ValueError, match="valid: drgrpo, grpo, passk, rloo"):
    A.ADVANTAGES.get("ppo")
  with pytest.raises(ValueError, match="valid: clip_cov, clipped, kl_cov, vanilla"):
    L.POLICY_LOSSES.get("ppo")
  with pytest.raises(ValueError, match="valid: entropy, hicra, none"):
    A.TRANSFORMS.get("entropy_bonus")
  with pytest.raises(ValueError, match="seq-mean-token-mean"):
    L.AGGREGATIONS.get("mean")
  with pytest.raises(ValueError, match="group_size must be >= 2"):
    A.check_group_size("grpo", 1)


def test_clipped_surrogate_cases():
  old = jnp.zeros((1, 4))
  # ratios 1.5, 0.5, 1.5, 0.5 with advantages +1, +1, -1, -1
  logp = jnp.log(jnp.array([[1.5, 0.5, 1.5, 0.5]]))
  adv = jnp.array([[1.0, 1.0, -1.0, -1.0]])
  loss, clipped = L.POLICY_LOSSES.get("clipped")(logp, old, adv, 0.2, 0.28, None)
  # A>0, ρ=1.5: max(-1.5, -1.28) = -1.28 (clipped); A>0, ρ=0.5: max(-0.5, -0.8) = -0.5
  # A<0, ρ=1.5: max(1.5, 1.28) = 1.5;               A<0, ρ=0.5: max(0.5, 0.8) = 0.8 (clipped)
  np.testing.assert_allclose(loss[0], [-1.28, -0.5, 1.5, 0.8], atol=1e-5)
  np.testing.assert_array_equal(clipped[0], [True, False, False, True])


def test_dual_clip_caps_negative_advantages():
  old = jnp.zeros((1, 2))
  logp = jnp.log(jnp.array([[5.0, 5.0]]))
  adv = jnp.array([[-1.0, 1.0]])
  loss, clipped = L.POLICY_LOSSES.get("clipped")(logp, old, adv, 0.2, 0.2, 3.0)
  # A<0, ρ=5: max(5, 1.2) = 5, capped at -A·c = 3; A>0 unaffected: max(-5, -1.2) = -1.2
  np.testing.assert_allclose(loss[0], [3.0, -1.2], atol=1e-5)
  assert bool(clipped[0, 0]) and bool(clipped[0, 1])


def test_log_ratio_clamped():
  assert float(L.log_ratio(jnp.array(100.0), jnp.array(0.0))) == 20.0


def test_aggregations_differ_as_defined():
  x = jnp.array([[1.0, 1.0, 1.0, 1.0], [4.0, 0.0, 0.0, 0.0]])
  m = jnp.array([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
  assert float(L.AGGREGATIONS.get("token-mean")(x, m, 8)) == pytest.approx(8 / 5)
  assert float(L.AGGREGATIONS.get("seq-mean-token-mean")(x, m, 8)) == pytest.approx((1 + 4) / 2)
  assert float(L.AGGREGATIONS.get("seq-mean-token-sum-norm")(x, m, 8)) == pytest.approx((4 + 4) / 2 / 8)


def test_kl_estimators():
  logp = jnp.log(jnp.array([0.5, 0.2, 0.9]))
  ref = jnp.log(jnp.array([0.25, 0.4, 0.9]))
  d = np.log([2.0, 0.5, 1.0])
  np.testing.assert_allclose(L.k1(logp, ref), d, atol=1e-6)
  np.testing.assert_allclose(L.k2(logp, ref), 0.5 * d ** 2, atol=1e-6)
  np.testing.assert_allclose(L.k3(logp, ref), np.exp(-d) + d - 1, atol=1e-6)
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=1000) * 5, rng.normal(size=1000) * 5
  assert (np.asarray(L.k3(jnp.asarray(a), jnp.asarray(b))) >= 0).all()
  # k3 is an unbiased estimator of KL(π||π_ref) when tokens are sampled from π.
  p = np.array([0.7, 0.2, 0.1]); q = np.array([0.4, 0.4, 0.2])
  toks = rng.choice(3, size=200_000, p=p)
  est = np.asarray(L.k3(jnp.log(p[toks]), jnp.log(q[toks]))).mean()
  assert est == pytest.approx((p * np.log(p / q)).sum(), abs=5e-3)


def test_vanilla_never_clips():
  logp = jnp.log(jnp.array([[3.0]]))
  loss, clipped = L.POLICY_LOSSES.get("vanilla")(logp, jnp.zeros((1, 1)), jnp.ones((1, 1)), 0.2, 0.2, None)
  assert float(loss[0, 0]) == pytest.approx(-3.0) and not bool(clipped[0, 0])


def test_hicra_transform():
  adv = jnp.array([[1.0, 1.0, -1.0, -1.0, 0.5]])
  roles = jnp.array([[1, 2, 1, 2, 0]])  # planning, execution, planning, execution, other
  out = A.TRANSFORMS.get("hicra")(adv, roles, 0.2)
  np.testing.assert_allclose(out, [[1.2, 1.0, -0.8, -1.0, 0.5]], atol=1e-6)
  np.testing.assert_array_equal(A.TRANSFORMS.get("hicra")(adv, roles, 0.0), adv)
  np.testing.assert_array_equal(A.TRANSFORMS.get("none")(adv, roles, 0.2), adv)


def test_new_loss_keywords_leave_the_built_in_signatures_alone():
  """clipped/vanilla take exactly the six positional arguments; the covariance losses add keywords only."""
  import inspect
  for name in L.POLICY_LOSSES.names():
    params = list(inspect.signature(L.POLICY_LOSSES.get(name)).parameters.values())
    assert [p.name for p in params[:6]] == ["logp_BT", "old_logp_BT", "adv_BT", "eps_low", "eps_high", "dual_clip"]
    extra = params[6:]
    assert (name in L.COV_LOSSES) == bool(extra) and all(p.kind is p.KEYWORD_ONLY for p in extra)
