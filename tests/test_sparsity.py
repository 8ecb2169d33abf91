"""Update sparsity (bf16 vs fp32), rank of the update and seed overlap (docs/replay.md) by hand."""
import jax.numpy as jnp
import numpy as np
import pytest

from rldyn.metrics import sparsity as S


def _bf16_exact(rng, shape, lo=0.5, hi=1.0):
  """fp32 values that bf16 represents exactly, with magnitudes in [lo, hi) (bf16 spacing 2^-8 there)."""
  x = rng.uniform(lo, hi, shape) * rng.choice([-1.0, 1.0], shape)
  return np.asarray(jnp.asarray(x, jnp.float32).astype(jnp.bfloat16).astype(jnp.float32))


def test_sub_bf16_updates_are_unchanged_in_bf16_but_seen_in_fp32():
  rng = np.random.default_rng(0)
  base = {"w": _bf16_exact(rng, (16, 8)), "b": _bf16_exact(rng, (8,))}
  # |Δ| = 1e-4, far below half the bf16 spacing (2^-9 ≈ 2e-3) at |θ| ∈ [0.5, 1): bf16 rounds it away.
  new = {k: v + np.float32(1e-4) * np.sign(v) for k, v in base.items()}
  out = S.update_sparsity(base, new)
  for atol in ("0", "1e-06", "1e-05", "0.0001"):
    assert out["sparsity"]["bf16"][atol] == 1.0
  assert out["sparsity"]["fp32"]["0"] == 0.0
  assert out["sparsity"]["fp32"]["1e-05"] == 0.0  # fp32 sees every 1e-4 update above atol 1e-5
  assert out["per_matrix"]["w"]["bf16"]["1e-05"] == 1.0 and out["per_matrix"]["w"]["fp32"]["1e-05"] == 0.0
  assert out["numel"] == 16 * 8 + 8


def test_counts_by_hand_per_matrix_and_overall():
  base = {"a": np.ones((4, 4), np.float32), "b": np.zeros((10,), np.float32)}
  new = {"a": base["a"].copy(), "b": base["b"].copy()}
  new["a"][0, :] += 0.5  # 4 entries change by 0.5 (visible in bf16)
  new["b"][:3] = np.array([2e-6, 2e-5, 2e-4], np.float32)  # near 0, bf16 keeps small numbers too
  out = S.update_sparsity(base, new)
  assert out["per_matrix"]["a"]["bf16"] == {"0": 0.75, "1e-06": 0.75, "1e-05": 0.75, "0.0001": 0.75}
  b = out["per_matrix"]["b"]["bf16"]
  assert b == {"0": 0.7, "1e-06": 0.7, "1e-05": 0.8, "0.0001": 0.9}
  assert out["sparsity"]["bf16"]["0"] == pytest.approx(1 - 7 / 26)
  assert out["sparsity"]["bf16"]["0.0001"] == pytest.approx(1 - 5 / 26)


def test_rank_one_update_is_rank_one_for_matrices_and_3d_kernels():
  rng = np.random.default_rng(1)
  e, h, d = 32, 4, 8
  base = {
      "mlp": rng.normal(0, 0.02, (e, 48)).astype(np.float32),
      "q": rng.normal(0, 0.02, (e, h, d)).astype(np.float32),  # [E, H, D] -> [E, H*D]
      "o": rng.normal(0, 0.02, (h, d, e)).astype(np.float32),  # [H, D, E] -> [H*D, E]
      "scale": np.ones((e,), np.float32),
  }
  u, v = rng.normal(size=e), rng.normal(size=48)
  uq, vq = rng.normal(size=e), rng.normal(size=h * d)
  new = {
      "mlp": base["mlp"] + 1e-3 * np.outer(u, v).astype(np.float32),
      "q": base["q"] + 1e-3 * np.outer(uq, vq).reshape(e, h, d).astype(np.float32),
      "o": base["o"] + 1e-3 * np.outer(vq, uq).reshape(h, d, e).astype(np.float32),
      "scale": base["scale"] + 0.1,
  }
  out = S.update_sparsity(base, new)["per_matrix"]
  assert (out["mlp"]["rank"], out["mlp"]["full"]) == (1, 32)
  assert (out["q"]["rank"], out["q"]["full"]) == (1, 32)
  assert (out["o"]["rank"], out["o"]["full"]) == (1, 32)
  assert out["mlp"]["rank_frac"] == pytest.approx(1 / 32)
  assert "rank" not in out["scale"]
  # The same leaves with a dense random update are full rank; no update is rank 0.
  full = S.update_sparsity(base, {k: v + rng.normal(0, 1e-3, v.shape).astype(np.float32)
                                  for k, v in base.items()})
  assert all(full["per_matrix"][k]["rank_frac"] == 1.0 for k in ("mlp", "q", "o"))
  assert full["rank_frac_mean"] == 1.0
  assert S.update_sparsity(base, base)["per_matrix"]["q"]["rank"] == 0


def test_matrix_views():
  assert S.matrix_shape((7,)) is None
  assert S.matrix_shape((5, 3)) == (5, 3)
  assert S.matrix_shape((128, 4, 32)) == (128, 128)  # q/k/v [E, H, D]
  assert S.matrix_shape((128, 2, 32)) == (128, 64)
  assert S.matrix_shape((4, 32, 128)) == (128, 128)  # o [H, D, E]
  assert S.matrix_shape((4, 32, 16), embed_axis=-1) == (128, 16)  # explicit embed axis wins
  with pytest.raises(ValueError):
    S.matrix_shape((4, 32, 16), embed_axis=1)


def test_numerical_rank_tolerance_is_documented_one():
  s = np.array([1.0, 1e-3, 1e-6, 1e-9])
  assert S.numerical_rank(s, 4, 4) == 3  # rtol = 4 · 2^-23 ≈ 4.8e-7
  assert S.numerical_rank(s, 4, 4, rtol=1e-4) == 2
  assert S.numerical_rank(np.zeros(3), 3, 3) == 0


def test_seed_overlap_identical_and_independent_masks():
  rng = np.random.default_rng(2)
  shape = (200, 100)
  base = {"w": np.ones(shape, np.float32)}
  m1 = rng.random(shape) < 0.3
  m2 = rng.random(shape) < 0.2
  run1 = {"w": np.where(m1, 2.0, 1.0).astype(np.float32)}
  run2 = {"w": np.where(m2, 2.0, 1.0).astype(np.float32)}
  same = S.seed_overlap(base, run1, run1)["0"]
  assert same["overlap"] == 1.0 and same["random"] == pytest.approx(m1.mean())
  ind = S.seed_overlap(base, run1, run2)["0"]
  assert ind["overlap"] == pytest.approx((m1 & m2).sum() / m1.sum())
  assert ind["random"] == pytest.approx(m2.mean()) and ind["density_1"] == pytest.approx(m1.mean())
  assert ind["overlap"] == pytest.approx(ind["random"], abs=0.02)  # independent masks ≈ random
  nested = {"w": np.where(m1 & m2, 2.0, 1.0).astype(np.float32)}  # run 2 updates a subset of run 1
  assert S.seed_overlap(base, nested, run1)["0"]["overlap"] == 1.0
  assert S.seed_overlap(base, base, run1)["0"]["overlap"] is None  # run 1 updated nothing


def test_mismatched_trees_raise():
  with pytest.raises(ValueError):
    S.update_sparsity({"a": np.zeros(2)}, {"b": np.zeros(2)})
