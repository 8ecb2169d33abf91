"""Per-token statistics split by token role: one implementation for training and replay.

The RL step calls these on jax arrays inside its jit (`xp=jnp`); replay calls them on numpy arrays
(`xp=np`). Shapes: x_BN, mask_BN (1.0 on response tokens), roles_BN (rldyn.tasks role ids). A mean over
no tokens is 0. Definitions: docs/metrics.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rldyn.roles.ids import EXECUTION, PLANNING

# The roles that get their own statistics (tokens of role `other` count only in the `all` means).
ROLE_IDS = {"planning": PLANNING, "execution": EXECUTION}


def masked_mean(x: Any, w: Any, xp: Any = np) -> Any:
  """Σ x·w / max(Σ w, 1)."""
  return (x * w).sum() / xp.maximum(w.sum(), 1.0)


def role_weights(mask_BN: Any, roles_BN: Any) -> dict[str, Any]:
  """{role name: mask restricted to that role's tokens}."""
  return {name: mask_BN * (roles_BN == rid) for name, rid in ROLE_IDS.items()}


def role_means(prefix: str, x_BN: Any, mask_BN: Any, roles_BN: Any, xp: Any = np,
               all_key: str = "all") -> dict[str, Any]:
  """{prefix/all_key: mean over every response token, prefix/<role>: mean over that role's tokens}.

  all_key="" names the all-token mean `prefix` itself (e.g. `kl/k3` beside `kl/k3/planning`).
  """
  out = {f"{prefix}/{all_key}" if all_key else prefix: masked_mean(x_BN, mask_BN, xp)}
  for name, w in role_weights(mask_BN, roles_BN).items():
    out[f"{prefix}/{name}"] = masked_mean(x_BN, w, xp)
  return out


def role_sums(name: str, x_BN: Any, mask_BN: Any, roles_BN: Any) -> dict[str, Any]:
  """{name_<role>: Σ x·m over that role's tokens}: numerators that add across minibatches exactly (the
  update step divides them by the role's token count, e.g. kl/k1/planning = Σ k1·w / max(Σ w, 1))."""
  return {f"{name}_{role}": (x_BN * w).sum() for role, w in role_weights(mask_BN, roles_BN).items()}


def role_fractions(mask_BN: Any, roles_BN: Any, xp: Any = np) -> dict[str, Any]:
  """{tokens/<role>_frac: share of response tokens with that role}."""
  total = xp.maximum(mask_BN.sum(), 1.0)
  return {f"tokens/{name}_frac": w.sum() / total for name, w in role_weights(mask_BN, roles_BN).items()}


def role_mass(prefix: str, x_BN: Any, mask_BN: Any, roles_BN: Any, xp: Any = np) -> dict[str, Any]:
  """{prefix/<role>: Σ_role |x| / Σ_all |x|}: the share of a quantity's mass on each role's tokens."""
  a = xp.abs(x_BN)
  total = xp.maximum((a * mask_BN).sum(), 1e-12)
  return {f"{prefix}/{name}": (a * w).sum() / total for name, w in role_weights(mask_BN, roles_BN).items()}
