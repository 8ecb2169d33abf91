"""Advantage estimators over groups of G responses per prompt (docs/objectives.md), and role-aware transforms.

Every estimator maps rewards_PG (P prompts × G responses) to advantages_PG; the loop broadcasts them to
the response tokens. Registered by name; `advantage.name` in the config picks one.

  grpo    A_i = (r_i − mean_G r) / (std_G r + eps)      std with `ddof` (0 = population; verl uses 1)
  drgrpo  A_i = r_i − mean_G r                          (Dr. GRPO: no std normalisation)
  rloo    A_i = r_i − mean_{j≠i} r_j                    (leave-one-out baseline)

Token-level transforms (`advantage.transform`) then reshape the broadcast advantages by token role:

  none    identity
  hicra   A'_t = A_t + α·|A_t| on planning tokens (×(1+α) credit when A>0, ×(1−α) blame when A<0),
          execution and other tokens unchanged; α = 0 is the identity (HICRA, arXiv 2509.03646). With
          the `placebo` tagger this is the paper's random-mask control.
"""

from __future__ import annotations

import jax.numpy as jnp

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
