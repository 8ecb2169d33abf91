"""Advantage estimators over groups of G responses per prompt (docs/objectives.md), and role-aware transforms.

Every estimator maps rewards_PG (P prompts × G responses) to advantages_PG; the loop broadcasts them to
the response tokens. Registered by name; `advantage.name` in the config picks one.

  grpo    A_i = (r_i − mean_G r) / (std_G r + eps)      std with `ddof` (0 = population; verl uses 1)
  drgrpo  A_i = r_i − mean_G r                          (Dr. GRPO: no std normalisation)
  rloo    A_i = r_i − mean_{j≠i} r_j                    (leave-one-out baseline)
  passk   the analytical pass@k group advantage (Chen et al. 2025, "Pass@k Training"): with N = G
          responses of which N_neg fail (a response passes iff r > 0), R̄ = 1 − C(N_neg, k)/C(N, k),
          σ = sqrt(R̄(1 − R̄)): A_pass = (1 − R̄)/(σ + eps), A_fail = (1 − R̄ − C(N_neg−1, k−1)/C(N−1, k−1))/(σ + eps);
          k = 1 is grpo with the population std. Needs the keyword k (`estimator_options`).

TRL and verl both normalise grpo by the unbiased std (ddof 1); rldyn's default is the population std
(`advantage.std_ddof` = 0), so a verl-matching run sets std_ddof = 1.

Token-level transforms (`advantage.transform`) then reshape the broadcast advantages by token role:

  none    identity
  hicra   A'_t = A_t + α·|A_t| on planning tokens (×(1+α) credit when A>0, ×(1−α) blame when A<0),
          execution and other tokens unchanged; α = 0 is the identity (HICRA, arXiv 2509.03646). With
          the `placebo` tagger this is the paper's random-mask control.
  entropy A'_t = A_t + min(α·H_t, |A_t|/κ), H_t the full-vocabulary entropy of π_old at the token (no
          gradient flows through it: it is a host array); κ > 1 keeps the sign of A (Cheng et al. 2025,
          "Reasoning with Exploration: An Entropy Perspective", arXiv 2506.14758). Tokens with A = 0 are
          unchanged. Needs the keywords entropy_BN and kappa (`apply_transform` passes them).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from rldyn.registry import Registry
from rldyn.roles.ids import PLANNING

ADVANTAGES: Registry = Registry("advantage estimator")
TRANSFORMS: Registry = Registry("advantage transform")


@ADVANTAGES.register("grpo")
def grpo(rewards_PG, eps: float = 1e-6, ddof: int = 0):
  mean = rewards_PG.mean(axis=1, keepdims=True)
  std = jnp.std(rewards_PG, axis=1, keepdims=True, ddof=ddof)
  return (rewards_PG - mean) / (std + eps)


@ADVANTAGES.register("drgrpo")
def drgrpo(rewards_PG, eps: float = 1e-6, ddof: int = 0):
  del eps, ddof
  return rewards_PG - rewards_PG.mean(axis=1, keepdims=True)


@ADVANTAGES.register("rloo")
def rloo(rewards_PG, eps: float = 1e-6, ddof: int = 0):
  del eps, ddof
  g = rewards_PG.shape[1]
  others_mean = (rewards_PG.sum(axis=1, keepdims=True) - rewards_PG) / (g - 1)
  return rewards_PG - others_mean


def _pass_tables(g: int, k: int) -> tuple[np.ndarray, np.ndarray]:
  """By failures n = 0..G: C(n, k)/C(G, k) (all of a k-subset fail) and C(n−1, k−1)/C(G−1, k−1) (all of a
  k-subset containing one given failure fail; 0 at n = 0, where there is no such response)."""
  all_fail = np.array([math.comb(n, k) / math.comb(g, k) for n in range(g + 1)])
  with_one = np.array([0.0] + [math.comb(n - 1, k - 1) / math.comb(g - 1, k - 1) for n in range(1, g + 1)])
  return all_fail.astype(np.float32), with_one.astype(np.float32)


@ADVANTAGES.register("passk")
def pass_at_k(rewards_PG, eps: float = 1e-6, ddof: int = 0, *, k: int):
  """The pass@k advantage of each response: the mean, over the k-subsets of its group that contain it, of
  (max reward of the subset − R̄)/σ, with R̄ and σ the mean and population std of the max over all
  k-subsets (Chen et al. 2025, arXiv 2508.10751). Closed form in the module docstring. ddof is unused."""
  del ddof
  g = rewards_PG.shape[1]
  if not 1 <= k <= g:
    raise ValueError(f"pass@k advantages need 1 <= k <= group size; got k={k}, group size {g}")
  all_fail, with_one = _pass_tables(g, k)
  passed = jnp.asarray(rewards_PG) > 0
  n_fail = (g - passed.sum(axis=1, keepdims=True)).astype(jnp.int32)
  mean = 1.0 - jnp.asarray(all_fail)[n_fail]
  std = jnp.sqrt(mean * (1.0 - mean))
  a_pass = (1.0 - mean) / (std + eps)
  a_fail = (1.0 - mean - jnp.asarray(with_one)[n_fail]) / (std + eps)
  return jnp.where(passed, a_pass, a_fail)


def estimator_options(acfg) -> dict:
  """Keyword options of the configured estimator beyond (eps, ddof): pass@k's k."""
  return {"k": acfg.pass_k} if acfg.name == "passk" else {}


def check_group_size(name: str, group_size: int) -> None:
  """Group-relative estimators need G >= 2: with one response the baseline is the response itself."""
  ADVANTAGES.get(name)
  if group_size < 2:
    raise ValueError(f"advantage.name={name!r} normalises within a group, so rl.group_size must be >= 2 "
                     f"(got {group_size}); with one response per prompt every advantage is 0")


@TRANSFORMS.register("none")
def no_transform(adv_BN, roles_BN, alpha: float):
  del roles_BN, alpha
  return adv_BN


@TRANSFORMS.register("hicra")
def hicra(adv_BN, roles_BN, alpha: float):
  return adv_BN + alpha * jnp.abs(adv_BN) * (roles_BN == PLANNING)


@TRANSFORMS.register("entropy")
def entropy_shaping(adv_BN, roles_BN, alpha: float, *, entropy_BN, kappa: float):
  """A + min(α·H, |A|/κ) (Cheng et al. 2025); H is π_old's entropy, padding/garbage ignored where A = 0."""
  del roles_BN
  if not kappa > 0:
    raise ValueError(f"entropy advantage shaping needs kappa > 0, got {kappa}")
  bonus = jnp.minimum(alpha * jnp.asarray(entropy_BN), jnp.abs(adv_BN) / kappa)
  return adv_BN + jnp.where(adv_BN != 0, bonus, 0.0)


def apply_transform(acfg, adv_BN, roles_BN, entropy_BN):
  """The configured token transform with its own options: hicra_alpha for hicra (and none), entropy_alpha
  and entropy_kappa (and the rollout's entropy) for entropy."""
  fn = TRANSFORMS.get(acfg.transform)
  if acfg.transform == "entropy":
    return fn(adv_BN, roles_BN, acfg.entropy_alpha, entropy_BN=entropy_BN, kappa=acfg.entropy_kappa)
  return fn(adv_BN, roles_BN, acfg.hicra_alpha)
