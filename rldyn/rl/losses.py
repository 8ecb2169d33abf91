"""Policy-gradient losses, their aggregation over tokens, and KL estimators (docs/objectives.md).

Shapes: B responses, T response positions; mask_BT is 1 on response tokens, 0 on padding.

  ratio ρ = exp(clamp(log π_θ − log π_old, ±20))
  clipped  ℓ = max(−Aρ, −A·clip(ρ, 1−ε_low, 1+ε_high)); with dual clip (A<0): ℓ ← min(ℓ, −A·c)
  vanilla  ℓ = −Aρ (no clip: the control for the clipping-bias mechanism of spurious rewards)

Aggregations (`loss.aggregation`):
  token-mean               Σ ℓ·m / Σ m                         (DAPO)
  seq-mean-token-mean      mean_i (Σ_t ℓ·m / Σ_t m)             (original GRPO)
  seq-mean-token-sum-norm  mean_i (Σ_t ℓ·m) / L_max             (Dr. GRPO; L_max = max_new_tokens)

KL per sampled token, d = log π_θ − log π_ref: k1 = d, k2 = ½ d², k3 = e^(−d) + d − 1 (d clamped to ±10).
"""

from __future__ import annotations

import jax.numpy as jnp

from rldyn.registry import Registry

POLICY_LOSSES: Registry = Registry("policy loss")
AGGREGATIONS: Registry = Registry("loss aggregation")
KL_ESTIMATORS: Registry = Registry("KL estimator")

LOG_RATIO_CLAMP = 20.0
KL_CLAMP = 10.0


def log_ratio(logp_BT, old_logp_BT):
  return jnp.clip(logp_BT - old_logp_BT, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)


@POLICY_LOSSES.register("clipped")
def clipped(logp_BT, old_logp_BT, adv_BT, eps_low: float, eps_high: float, dual_clip: float | None):
  """Returns (loss_BT, clipped_BT): the PPO/GRPO surrogate and where the clip was active."""
  ratio = jnp.exp(log_ratio(logp_BT, old_logp_BT))
  unclipped = -adv_BT * ratio
  clipped_obj = -adv_BT * jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high)
  loss = jnp.maximum(unclipped, clipped_obj)
  is_clipped = clipped_obj > unclipped
  if dual_clip is not None:
    capped = jnp.minimum(loss, -adv_BT * dual_clip)
    is_clipped = is_clipped | ((adv_BT < 0) & (capped < loss))
    loss = jnp.where(adv_BT < 0, capped, loss)
  return loss, is_clipped


@POLICY_LOSSES.register("vanilla")
def vanilla(logp_BT, old_logp_BT, adv_BT, eps_low: float, eps_high: float, dual_clip: float | None):
  """Unclipped importance-weighted policy gradient (−Aρ); never clips."""
  del eps_low, eps_high, dual_clip
  ratio = jnp.exp(log_ratio(logp_BT, old_logp_BT))
  return -adv_BT * ratio, jnp.zeros(adv_BT.shape, bool)


@AGGREGATIONS.register("token-mean")
def token_mean(x_BT, mask_BT, max_len: int):
  del max_len
  return (x_BT * mask_BT).sum() / jnp.maximum(mask_BT.sum(), 1.0)


@AGGREGATIONS.register("seq-mean-token-mean")
def seq_mean_token_mean(x_BT, mask_BT, max_len: int):
  del max_len
  per_seq = (x_BT * mask_BT).sum(axis=1) / jnp.maximum(mask_BT.sum(axis=1), 1.0)
  has = (mask_BT.sum(axis=1) > 0).astype(x_BT.dtype)
  return (per_seq * has).sum() / jnp.maximum(has.sum(), 1.0)


@AGGREGATIONS.register("seq-mean-token-sum-norm")
def seq_mean_token_sum_norm(x_BT, mask_BT, max_len: int):
  return (x_BT * mask_BT).sum(axis=1).mean() / max_len


def _kl_d(logp_BT, ref_logp_BT, xp=jnp):
  return xp.clip(logp_BT - ref_logp_BT, -KL_CLAMP, KL_CLAMP)


# The estimators take `xp` (jax.numpy in the step, numpy in replay): one definition for both.
@KL_ESTIMATORS.register("k1")
def k1(logp_BT, ref_logp_BT, xp=jnp):
  return _kl_d(logp_BT, ref_logp_BT, xp)


@KL_ESTIMATORS.register("k2")
def k2(logp_BT, ref_logp_BT, xp=jnp):
  return 0.5 * _kl_d(logp_BT, ref_logp_BT, xp) ** 2


@KL_ESTIMATORS.register("k3")
def k3(logp_BT, ref_logp_BT, xp=jnp):
  d = _kl_d(logp_BT, ref_logp_BT, xp)
  return xp.exp(-d) + d - 1.0
