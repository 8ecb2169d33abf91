"""The clip-induced bias of spurious rewards on a toy bandit (Shao et al. 2025; docs/objectives.md).

A K-armed softmax policy (logits θ, arm 0 most likely: π₀ = 0.87) gets a reward that ignores the arm:
Bernoulli(0.5). Each step samples P·G = 256 arms in P groups of G, computes GRPO advantages, and takes
U SGD updates on the token-mean of rldyn.rl.losses' surrogate, one per minibatch of 256/U rows (as
`rl.updates_per_batch` does). Because the reward is independent of the arm, the unclipped importance-
weighted gradient has mean zero. Clipping is not: a likely arm's ratio can hardly exceed 1 + ε (π ≤ 1),
so its increases are rarely clipped while its decreases are, and later minibatches' updates favour it.

Measured over 256 seeds × 50 steps (lr 2, ε 0.2), mean ± standard error of the change in entropy ΔH
(nats) and in π₀: clipped, U = 4: ΔH = −0.196 ± 0.012, Δπ₀ = +0.051 ± 0.004 (sharpening); vanilla (no
clip), U = 4: ΔH = −0.024 ± 0.021; clipped, U = 1 (on-policy: ρ ≡ 1, the clip never acts):
ΔH = +0.006 ± 0.008. The test asserts sharpening (ΔH < −0.1, π₀ up by > 0.03) for the first and
|ΔH| < 0.07 (about 3 standard errors) for the two controls. The controls' remaining motion is the random
walk of noisy SGD, not a bias: the vanilla arm's π₀ even falls.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from rldyn.rl import advantages
from rldyn.rl import losses

THETA0 = (3.0, 0.0, 0.0, 0.0)
P, G, STEPS, SEEDS, LR, EPS = 32, 8, 50, 256, 2.0, 0.2


def _entropy(theta):
  return -(jax.nn.softmax(theta) * jax.nn.log_softmax(theta)).sum()


@functools.lru_cache(maxsize=None)
def _drift(loss_name: str, updates: int):
  return tuple(np.asarray(x) for x in _drift_jit(loss_name, updates))


@functools.partial(jax.jit, static_argnames=("loss_name", "updates"))
def _drift_jit(loss_name: str, updates: int):
  """(ΔH, Δπ₀) per seed after STEPS steps of the bandit with a random reward."""
  loss_fn = losses.POLICY_LOSSES.get(loss_name)
  theta0 = jnp.array(THETA0)

  def loss(theta, arms, old_logp, adv):
    logp = jax.nn.log_softmax(theta)[arms][None]
    ell, _ = loss_fn(logp, old_logp[None], adv[None], EPS, EPS, None)
    return losses.token_mean(ell, jnp.ones_like(ell), 1)

  def step(theta, key):
    k_arm, k_reward = jax.random.split(key)
    arms = jax.random.categorical(k_arm, theta, shape=(P * G,))
    rewards = jax.random.bernoulli(k_reward, 0.5, (P, G)).astype(jnp.float32)  # ignores the arm
    adv = advantages.grpo(rewards).reshape(-1)
    old_logp = jax.nn.log_softmax(theta)[arms]
    rows = P * G // updates
    for u in range(updates):
      mb = slice(u * rows, (u + 1) * rows)
      theta = theta - LR * jax.grad(loss)(theta, arms[mb], old_logp[mb], adv[mb])
    return theta, None

  def one(key):
    theta, _ = jax.lax.scan(step, theta0, jax.random.split(key, STEPS))
    return _entropy(theta) - _entropy(theta0), jax.nn.softmax(theta)[0] - jax.nn.softmax(theta0)[0]

  return jax.vmap(one)(jax.random.split(jax.random.key(0), SEEDS))


def _mean_se(x):
  x = np.asarray(x)
  return float(x.mean()), float(x.std(ddof=1) / np.sqrt(len(x)))


def test_clip_with_several_updates_sharpens():
  dh, dp = _drift("clipped", 4)
  (h, h_se), (p, _) = _mean_se(dh), _mean_se(dp)
  assert h < -0.1 and h + 3 * h_se < 0, (h, h_se)
  assert p > 0.03, p


def test_no_clip_or_one_update_does_not_drift():
  for name, updates in (("vanilla", 4), ("clipped", 1)):
    h, h_se = _mean_se(_drift(name, updates)[0])
    assert abs(h) < 0.07, (name, updates, h, h_se)


def test_one_on_policy_update_never_clips():
  """With U = 1 the ratio is exactly 1 at the update, so clipped and vanilla take the same step."""
  np.testing.assert_allclose(_drift("clipped", 1)[0], _drift("vanilla", 1)[0], atol=1e-5)
