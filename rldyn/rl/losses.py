"""Policy-gradient losses, their aggregation over tokens, and KL estimators (docs/objectives.md).

Shapes: B responses, T response positions; mask_BT is 1 on response tokens, 0 on padding.

  ratio ρ = exp(clamp(log π_θ − log π_old, ±20))
  clipped  ℓ = max(−Aρ, −A·clip(ρ, 1−ε_low, 1+ε_high)); with dual clip (A<0): ℓ ← min(ℓ, −A·c)
  vanilla  ℓ = −Aρ (no clip: the control for the clipping-bias mechanism of spurious rewards)
  clip_cov clipped, plus: a random ⌊r·n⌋ (≥ 1) of the tokens whose centred covariance
           (A − Ā)(log π_θ − mean log π_θ) lies in (ω_lo, ω_hi) get no gradient (Cui et al. 2025)
  kl_cov   −Aρ, plus β·|log π_θ − log π_old| on the ⌊k·n⌋ (≥ 1) tokens of largest covariance (Cui et al.)
The covariance losses also take the response mask and options as keywords (`COV_LOSSES`); the first
six positional arguments are the same for every loss.

Aggregations (`loss.aggregation`):
  token-mean               Σ ℓ·m / Σ m                         (DAPO)
  seq-mean-token-mean      mean_i (Σ_t ℓ·m / Σ_t m)             (original GRPO)
  seq-mean-token-sum-norm  mean_i (Σ_t ℓ·m) / L_max             (Dr. GRPO; L_max = max_new_tokens)

KL per sampled token, d = log π_θ − log π_ref: k1 = d, k2 = ½ d², k3 = e^(−d) + d − 1 (d clamped to ±10).
verl clamps differently: log(π_ref/π_θ) to ±20, then the k3 value to [−10, 10]; TRL does not clamp. The
default study logs `kl/k3` every step, so a value clamp here would change its graph; none is added.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rldyn.registry import Registry

POLICY_LOSSES: Registry = Registry("policy loss")
AGGREGATIONS: Registry = Registry("loss aggregation")
KL_ESTIMATORS: Registry = Registry("KL estimator")

# loss.objective: `pg` optimises `loss.name` on the configured reward's advantages; `verifree` optimises
# VeriFree's surrogate (rldyn.rl.verifree) with the policy's probability of the reference answer as reward.
OBJECTIVES = ("pg", "verifree")

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


def _masked_mean(x_BT, m_BT):
  return (x_BT * m_BT).sum() / jnp.maximum(m_BT.sum(), 1.0)


def token_covariance(logp_BT, adv_BT, mask_BT):
  """Per-token centred covariance (A − Ā)·(log π − mean log π), means over the masked tokens; no gradient.

  Cui et al. 2025 ("The Entropy Mechanism of RL for Reasoning LMs", arXiv 2505.22617): the entropy change
  of a softmax policy under a policy-gradient step is driven by Cov(log π, A); tokens with a large
  positive term are the ones whose update collapses entropy.
  """
  m = mask_BT.astype(logp_BT.dtype)
  lp = jax.lax.stop_gradient(logp_BT)
  adv = jax.lax.stop_gradient(adv_BT)
  return (adv - _masked_mean(adv, m)) * (lp - _masked_mean(lp, m))


def _count(frac: float, mask_BT):
  """max(⌊frac · (number of masked tokens)⌋, 1), as in verl's Clip-Cov / KL-Cov."""
  return jnp.maximum(jnp.floor(frac * (mask_BT > 0).sum()), 1.0)


def _first_n(priority_BT, eligible_BT, n):
  """The `n` eligible tokens of smallest priority (ties: lower flat index first), as a bool mask."""
  p = jnp.where(eligible_BT, priority_BT, jnp.inf).reshape(-1)
  rank = jnp.argsort(jnp.argsort(p, stable=True), stable=True).reshape(eligible_BT.shape)
  return eligible_BT & (rank < n)


def content_key(old_logp_BT, mask_BT):
  """A PRNG key from the minibatch itself: the wrapping uint32 sum of its masked old log-prob bits.

  The update step has no key; this one differs between minibatches and steps, replays exactly on a resume,
  and does not depend on the sharding (integer sums are exact in any order).
  """
  bits = jax.lax.bitcast_convert_type(jnp.where(mask_BT > 0, old_logp_BT, 0.0).astype(jnp.float32), jnp.uint32)
  return jax.random.fold_in(jax.random.key(0), bits.sum(dtype=jnp.uint32))


@POLICY_LOSSES.register("clip_cov")
def clip_cov(logp_BT, old_logp_BT, adv_BT, eps_low: float, eps_high: float, dual_clip: float | None, *,
             mask_BT, ratio: float = 2e-4, cov_lb: float = 1.0, cov_ub: float = 5.0, key=None):
  """Clip-Cov (Cui et al. 2025): the clipped surrogate with the gradient of a few high-covariance tokens cut.

  Among the response tokens the clip leaves active whose covariance (`token_covariance`) lies strictly
  inside (cov_lb, cov_ub), a uniformly random max(⌊ratio·n⌋, 1) (n = response tokens) are detached: their
  loss value stays, their gradient is zero. verl multiplies their loss by 0 instead (the same gradient).
  Returns (loss_BT, no_grad_BT): the clip's tokens or the detached ones. Defaults are verl's.
  """
  loss, is_clipped = clipped(logp_BT, old_logp_BT, adv_BT, eps_low, eps_high, dual_clip)
  m = mask_BT > 0
  cov = token_covariance(logp_BT, adv_BT, mask_BT)
  eligible = m & ~is_clipped & (cov > cov_lb) & (cov < cov_ub)
  key = content_key(old_logp_BT, mask_BT) if key is None else key
  detached = _first_n(jax.random.uniform(key, cov.shape), eligible, _count(ratio, mask_BT))
  return jnp.where(detached, jax.lax.stop_gradient(loss), loss), is_clipped | detached


@POLICY_LOSSES.register("kl_cov")
def kl_cov(logp_BT, old_logp_BT, adv_BT, eps_low: float, eps_high: float, dual_clip: float | None, *,
           mask_BT, ratio: float = 2e-4, coef: float = 1.0, key=None):
  """KL-Cov (Cui et al. 2025): the unclipped −Aρ, plus coef·|log π_θ − log π_old| on the top-covariance tokens.

  The max(⌊ratio·n⌋, 1) response tokens of largest covariance (ties: lower flat index first) get the
  penalty; there is no ratio clip (eps_low, eps_high, dual_clip are unused). |log π_θ − log π_old| is
  the clamped log-ratio, so it agrees with verl's up to |d| = 20. Never clips. Defaults are verl's.
  """
  del eps_low, eps_high, dual_clip, key
  lr = log_ratio(logp_BT, old_logp_BT)
  pg = -adv_BT * jnp.exp(lr)
  m = mask_BT > 0
  cov = token_covariance(logp_BT, adv_BT, mask_BT)
  top = _first_n(-cov, m, _count(ratio, mask_BT))
  return pg + jnp.where(top, coef * jnp.abs(lr), 0.0), jnp.zeros(adv_BT.shape, bool)


# Losses that take `mask_BT` and options; the update step passes them `cov_options(lcfg)`.
COV_LOSSES = ("clip_cov", "kl_cov")


def cov_options(lcfg) -> dict:
  """Keyword options of a covariance loss from the loss config (read only when one is selected)."""
  if lcfg.name == "clip_cov":
    return {"ratio": lcfg.cov_ratio, "cov_lb": lcfg.clip_cov_lb, "cov_ub": lcfg.clip_cov_ub}
  if lcfg.name == "kl_cov":
    return {"ratio": lcfg.cov_ratio, "coef": lcfg.kl_cov_coef}
  raise ValueError(f"loss.name={lcfg.name!r} takes no covariance options; valid: {', '.join(COV_LOSSES)}")


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
