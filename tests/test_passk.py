"""Unbiased pass@k and the capability-boundary comparisons (docs/replay.md) against exact arithmetic."""
from fractions import Fraction
import math

import numpy as np
import pytest

from rldyn.metrics import passk as P


def exact_pass_at_k(n: int, c: int, k: int) -> Fraction:
  """1 − C(n−c, k)/C(n, k) in exact rational arithmetic (math.comb is 0 when n − c < k)."""
  return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


@pytest.mark.parametrize("n", [1, 2, 3, 7, 16, 64, 100, 257, 1000, 1024])
def test_matches_binomial_form_to_1e12(n):
  rng = np.random.default_rng(n)
  cs = sorted({0, 1, n // 2, n - 1, n, *rng.integers(0, n + 1, 12).tolist()})
  ks = sorted(k for k in {1, 2, n // 3, n // 2, n, *rng.integers(1, n + 1, 6).tolist()} if 1 <= k <= n)
  worst = 0.0
  for c in cs:
    for k in ks:
      got = P.pass_at_k(n, c, k)
      worst = max(worst, abs(got - float(exact_pass_at_k(n, c, k))))
  assert worst <= 1e-12, worst


def test_edge_cases():
  assert P.pass_at_k(10, 0, 1) == 0.0  # nothing correct: never solved, whatever k
  assert P.pass_at_k(10, 0, 10) == 0.0
  assert P.pass_at_k(10, 10, 1) == 1.0
  assert P.pass_at_k(10, 7, 4) == 1.0  # n − c = 3 < k = 4: every k-subset holds a correct one
  assert P.pass_at_k(10, 1, 10) == 1.0
  assert P.pass_at_k(10, 3, 1) == pytest.approx(0.3, abs=1e-15)  # pass@1 = c / n
  assert P.pass_at_k(4, 1, 2) == pytest.approx(0.5, abs=1e-15)  # 1 − C(3,2)/C(4,2) = 1 − 3/6
  for bad in [(4, 5, 1), (4, -1, 1), (4, 1, 0), (4, 1, 5)]:
    with pytest.raises(ValueError):
      P.pass_at_k(*bad)


def test_k_grid_and_curve():
  assert P.k_grid(1) == [1]
  assert P.k_grid(64) == [1, 2, 4, 8, 16, 32, 64]
  assert P.k_grid(100) == [1, 2, 4, 8, 16, 32, 64, 100]
  curve = P.pass_at_k_curve(4, [0, 1, 4], [1, 2, 4])
  assert curve[1] == pytest.approx((0 + 0.25 + 1) / 3)
  assert curve[2] == pytest.approx((0 + 0.5 + 1) / 3)
  assert curve[4] == pytest.approx(2 / 3)


def test_sharpened_policy_wins_at_1_and_loses_at_large_k():
  """A flat base (4 answers, uniform) vs a sharpened policy (0.97 on one answer: right on 60 % of the
  problems, wrong on 40 %). Analytically pass@k(base) = 1 − 0.75^k and pass@k(RL) =
  0.6 (1 − 0.03^k) + 0.4 (1 − 0.99^k): RL leads at k = 1 (0.586 vs 0.25) and k = 2 (0.607 vs 0.438),
  the base leads from k = 4 (0.684 vs 0.616). So the crossover k is 4."""
  rng = np.random.default_rng(0)
  problems, n = 400, 64
  right = rng.random(problems) < 0.6
  # Sample each problem's n answers from its policy and count the correct ones.
  base_c = np.array([(rng.integers(0, 4, n) == 0).sum() for _ in range(problems)])
  rl_probs = np.where(right[:, None], [0.97, 0.01, 0.01, 0.01], [0.01, 0.97, 0.01, 0.01])
  rl_c = np.array([(rng.choice(4, n, p=p) == 0).sum() for p in rl_probs])
  base, rl = P.pass_at_k_curve(n, base_c), P.pass_at_k_curve(n, rl_c)
  for k in (1, 4, 64):
    assert base[k] == pytest.approx(1 - 0.75 ** k, abs=0.03)
    assert rl[k] == pytest.approx(0.6 * (1 - 0.03 ** k) + 0.4 * (1 - 0.99 ** k), abs=0.05)
  assert rl[1] > base[1] and rl[2] > base[2]
  assert base[64] > rl[64]
  assert P.crossover_k(base, rl) == 4
  cmp = P.compare_to_base(n, base_c, rl_c)
  assert cmp["crossover_k"] == 4 and cmp["rl_ahead_at_1"]
  # ΔSE = pass@n(base) − pass@1(RL): the base solves ~everything with 64 tries, RL ~0.59 in one.
  assert cmp["delta_se"] == pytest.approx(base[64] - rl[1])
  assert cmp["delta_se"] == pytest.approx(1.0 - 0.586, abs=0.05)
  # The base's solvable set covers RL's; RL lost the problems it sharpened onto a wrong answer
  # whenever none of its 64 samples hit the 1 % right answer (expected 0.4 · 0.99^64 ≈ 21 %).
  sv = cmp["solvable"]
  assert sv["base"] == problems and sv["rl_only"] == 0
  assert sv["base_only"] == int((rl_c == 0).sum())
  assert sv["base_only"] / problems == pytest.approx(0.4 * 0.99 ** 64, abs=0.05)


def test_crossover_none_when_rl_leads_everywhere_and_1_when_it_never_does():
  base = P.pass_at_k_curve(8, [0, 0, 1, 2])
  better = P.pass_at_k_curve(8, [1, 3, 4, 8])
  assert P.crossover_k(base, better) is None
  assert P.crossover_k(better, base) == 1
  assert P.crossover_k(base, base) == 1  # equal counts as base ≥ RL


def test_solvable_sets_by_hand():
  sv = P.solvable_sets([0, 1, 3, 0, 2], [1, 0, 4, 0, 0])
  assert sv == {"problems": 5, "base": 3, "rl": 2, "both": 1, "base_only": 2, "rl_only": 1,
                "neither": 1, "jaccard": 1 / 4, "rl_covers_base": 1 / 3}
  assert P.solvable_sets([0, 0], [0, 0])["jaccard"] == 1.0
  with pytest.raises(ValueError):
    P.solvable_sets([1, 2], [1])
