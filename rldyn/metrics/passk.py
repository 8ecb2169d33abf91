"""Unbiased pass@k and the capability-boundary comparisons built on it (docs/replay.md).

Per problem, n samples of which c are correct:

    pass@k = 1 − C(n−c, k) / C(n, k) = 1 − Π_{m=n−c+1}^{n} (1 − k/m)     (= 1 when n − c < k)

The product form never forms a binomial coefficient, so it is exact to float64 rounding for any n
(≈ c·ε relative; 1e-13 at n = 1024). A curve is the mean over problems at k = 1, 2, 4, … ≤ n (and n
itself, so pass@n is always on it).

Comparisons of a checkpoint ("RL") against the base, on the same problems:
  crossover k   the smallest k on the curve's grid where pass@k(base) ≥ pass@k(RL); None when RL stays
                ahead at every k ≤ n (RL expanded the boundary, within the sample budget).
  ΔSE           pass@n(base) − pass@1(RL): how much of what the base can reach with n tries RL fails to
                deliver in one (Yue et al.'s sampling-efficiency gap).
  solvable sets problem i is solvable by a model iff c_i > 0 among its n samples; sizes and overlaps.

Everything here is numpy on host (P problems; no model).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
  """Unbiased pass@k of one problem with n samples, c correct (product form; see module docstring)."""
  n, c, k = int(n), int(c), int(k)
  if not 0 <= c <= n or not 1 <= k <= n:
    raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
  if n - c < k:
    return 1.0
  m = np.arange(n - c + 1, n + 1, dtype=np.float64)
  return float(1.0 - np.prod(1.0 - k / m))


def pass_at_k_per_problem(n: int, correct_P: Sequence[int] | np.ndarray, k: int) -> np.ndarray:
  """pass@k of each problem (float64 [P]) given each problem's correct count c."""
  return np.array([pass_at_k(n, c, k) for c in np.asarray(correct_P, np.int64)], np.float64)


def k_grid(n: int) -> list[int]:
  """k = 1, 2, 4, … ≤ n, plus n itself when n is not a power of two."""
  if n < 1:
    raise ValueError(f"n must be >= 1, got {n}")
  ks = [1 << i for i in range(n.bit_length()) if 1 << i <= n]
  return ks if ks[-1] == n else ks + [n]


def pass_at_k_curve(n: int, correct_P: Sequence[int] | np.ndarray,
                    ks: Sequence[int] | None = None) -> dict[int, float]:
  """{k: mean over problems of pass@k}; ks defaults to `k_grid(n)`."""
  ks = k_grid(n) if ks is None else [int(k) for k in ks]
  if len(correct_P) == 0:
    raise ValueError("pass@k of an empty problem set")
  return {k: float(pass_at_k_per_problem(n, correct_P, k).mean()) for k in ks}


def crossover_k(base_curve: dict[int, float], rl_curve: dict[int, float]) -> int | None:
  """Smallest k (on the shared grid) where pass@k(base) ≥ pass@k(RL); None if RL leads at every k."""
  for k in sorted(set(base_curve) & set(rl_curve)):
    if base_curve[k] >= rl_curve[k]:
      return k
  return None


def delta_se(n: int, base_correct_P: Sequence[int], rl_correct_P: Sequence[int]) -> float:
  """ΔSE = pass@n(base) − pass@1(RL), both on the same problems with n samples each."""
  return (pass_at_k_curve(n, base_correct_P, [n])[n] - pass_at_k_curve(n, rl_correct_P, [1])[1])


def solvable_sets(base_correct_P: Sequence[int], rl_correct_P: Sequence[int]) -> dict[str, float]:
  """Sizes and overlaps of the solvable sets (c > 0) of base and RL on the same P problems.

  Returns problems, base, rl, both, base_only, rl_only, neither (counts), jaccard = |both|/|base ∪ rl|,
  rl_covers_base = |both|/|base| (1.0 when base solves nothing).
  """
  b = np.asarray(base_correct_P) > 0
  r = np.asarray(rl_correct_P) > 0
  if b.shape != r.shape:
    raise ValueError(f"base and RL have different problem counts: {b.shape} vs {r.shape}")
  both, union = int((b & r).sum()), int((b | r).sum())
  return {
      "problems": int(b.size), "base": int(b.sum()), "rl": int(r.sum()), "both": both,
      "base_only": int((b & ~r).sum()), "rl_only": int((r & ~b).sum()), "neither": int((~b & ~r).sum()),
      "jaccard": both / union if union else 1.0,
      "rl_covers_base": both / int(b.sum()) if b.any() else 1.0,
  }


def compare_to_base(n: int, base_correct_P: Sequence[int], rl_correct_P: Sequence[int],
                    ks: Sequence[int] | None = None) -> dict:
  """The boundary comparison of one checkpoint against the base: curves, crossover, ΔSE, solvable sets."""
  base = pass_at_k_curve(n, base_correct_P, ks)
  rl = pass_at_k_curve(n, rl_correct_P, ks)
  return {
      "crossover_k": crossover_k(base, rl),
      "rl_ahead_at_1": rl[min(rl)] > base[min(base)],
      "delta_se": delta_se(n, base_correct_P, rl_correct_P),
      "solvable": solvable_sets(base_correct_P, rl_correct_P),
  }
