"""VeriFree (Zhou et al. 2025, arXiv 2505.21493): RL without a verifier, as pure functions.

A response o = (z, y) is split into reasoning z, ending with the answer marker, and the answer y. Instead
of sampling y and verifying it, VeriFree appends the reference answer y* (and the closing marker) to z and
scores it with one extra forward pass of the policy:

    R_i = π_θ(y* | q, z_i) = exp(Σ_t log π_θ(y*_t | q, z_i, y*_<t))     (0 when z_i has no marker)

The objective J = E_z π_θ(y*|q,z) equals the verifier objective E_{z,y} 1[y = y*] with y marginalised out,
and its gradient estimator over G responses to one prompt is

    ∇J ≈ (1/G) Σ_i [ A_i ∇log π_θ(z_i | q) + R_i ∇log π_θ(y* | q, z_i) ],  A_i = R_i − mean_{j≠i} R_j (RLOO)

a policy gradient on the reasoning with a leave-one-out baseline plus a reward-weighted SFT term on the
reference answer. It is on-policy (one update per batch: no ratio, no clip) and length-normalised as Dr.
GRPO (÷ L_max). `surrogate` is the scalar whose negative gradient is that estimator (weights are host
arrays: no gradient flows through R or A). The split is made on token ids: the sampler stops at the marker
(`split_at_marker`), so the appended answer continues exactly the tokens the policy produced.

Integration (rollout/step, not here): sample with the marker as a stop sequence, build
`patched = z + answer_ids` per row, take log π_θ of the appended tokens (`reward`), then one update with
`surrogate`.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from rldyn.rl import advantages as adv_lib


def split_at_marker(ids: Sequence[int], marker: Sequence[int]) -> int | None:
  """Length of the reasoning z: the index just past the first occurrence of `marker` in `ids` (None if
  the marker is absent, and such a response gets R = 0)."""
  ids, marker = list(ids), list(marker)
  if not marker:
    raise ValueError("the answer marker must be a non-empty token sequence")
  for i in range(len(ids) - len(marker) + 1):
    if ids[i:i + len(marker)] == marker:
      return i + len(marker)
  return None


def reward(answer_logp_BA: np.ndarray, answer_mask_BA: np.ndarray, has_marker_B: np.ndarray) -> np.ndarray:
  """R_B = π_θ(y* | q, z) = exp(Σ_t log π_θ(y*_t | ·)) over the appended answer tokens; 0 without a marker."""
  s = (np.asarray(answer_logp_BA, np.float64) * np.asarray(answer_mask_BA, np.float64)).sum(axis=1)
  return np.where(np.asarray(has_marker_B, bool), np.exp(s), 0.0).astype(np.float32)


def weights(rewards_B: np.ndarray, group_size: int) -> tuple[np.ndarray, np.ndarray]:
  """(reasoning weights A_B, answer weights R_B): the RLOO advantage of each R_i in its group, and R_i."""
  r = np.asarray(rewards_B, np.float32)
  if group_size < 2 or r.size % group_size:
    raise ValueError(f"VeriFree's RLOO baseline needs group_size >= 2 dividing the batch; got group_size "
                     f"{group_size} for {r.size} rows")
  a = np.asarray(adv_lib.rloo(r.reshape(-1, group_size)), np.float32).reshape(-1)
  return a, r


def surrogate(logp_reason_BN, reason_mask_BN, logp_answer_BA, answer_mask_BA, reason_w_B, answer_w_B,
              max_len: int):
  """−(1/(B·L_max)) Σ_i [A_i Σ_t log π(z_i,t) + R_i Σ_t log π(y*_t | z_i)]; its gradient is −∇J's estimator.

  logp_*: log π_θ of the reasoning tokens and of the appended answer tokens (differentiable); masks select
  them; the weights come from `weights` (constants).
  """
  z = (logp_reason_BN * reason_mask_BN).sum(axis=1)
  y = (logp_answer_BA * answer_mask_BA).sum(axis=1)
  b = z.shape[0]
  return -(jnp.asarray(reason_w_B) * z + jnp.asarray(answer_w_B) * y).sum() / (b * max_len)
