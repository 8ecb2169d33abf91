"""Where RL changed the weights: update sparsity, rank of the update, seed overlap (docs/replay.md).

For parameters θ_0 (base) and θ_t (a checkpoint), per leaf ("matrix") and overall:

  sparsity(dtype, atol) = 1 − ‖θ_t − θ_0‖₀ / n, with both cast to `dtype` first and an entry counted as
                          unchanged iff |Δ| ≤ atol. bf16 is the published measurement (Mukherjee et al.);
                          the fp32 comparison is reported beside it so a user can see that the sparsity is
                          sub-bf16-resolution updates (it vanishes in fp32).
  rank fraction         numerical rank of Δ = θ_t − θ_0 in fp32, divided by min(rows, cols), for every
                        leaf with ≥ 2 dimensions. 3-D attention kernels are viewed as matrices with the
                        embedding axis on one side and the other two merged: q/k/v [E, H, D] → [E, H·D],
                        o [H, D, E] → [H·D, E]. Tolerance (numpy's `matrix_rank` convention):
                            σ_i counts iff σ_i > rtol · σ_max,  rtol = max(rows, cols) · ε_fp32
                        (ε_fp32 = 2⁻²³). Δ = 0 has rank 0.
  seed overlap          I_r = the entries run r updated (same dtype/atol rule); o = |I₁∩I₂| / |I₁| against
                        the random baseline |I₂| / n (a random mask of run 2's density overlaps I₁ by that
                        much in expectation).

All counting runs on device with jitted per-shape reductions (sharded parameters stay where they are);
only scalars come back. Leaves are named by their path, "layers/0/self_attn/q_proj/kernel".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import functools

import jax
import jax.numpy as jnp
import numpy as np

ATOLS = (0.0, 1e-6, 1e-5, 1e-4)
DTYPES = {"bf16": jnp.bfloat16, "fp32": jnp.float32}
EPS_FP32 = float(np.finfo(np.float32).eps)


def atol_key(atol: float) -> str:
  """The JSON key of an atol: '0', '1e-06', '1e-05', '0.0001'."""
  return f"{float(atol):g}"


def flatten(tree) -> dict[str, jax.Array]:
  """{path: leaf} with '/'-joined dict keys, in tree order."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    out["/".join(str(getattr(p, "key", getattr(p, "idx", p))) for p in path)] = leaf
  return out


def matrix_shape(shape: Sequence[int], embed_axis: int | None = None) -> tuple[int, int] | None:
  """The 2-D view of a leaf for its rank: None for 0/1-D leaves.

  `embed_axis` names the axis that stays on its own side (the model's `embed` logical axis); without it,
  a leaf with > 2 dims keeps its first axis as rows when that axis is at least as long as the last
  (q/k/v [E, H, D] → [E, H·D]), else its last as columns (o [H, D, E] → [H·D, E]).
  """
  shape = tuple(int(s) for s in shape)
  if len(shape) < 2:
    return None
  if len(shape) == 2:
    return shape
  if embed_axis is None:
    embed_axis = 0 if shape[0] >= shape[-1] else len(shape) - 1
  embed_axis %= len(shape)
  if embed_axis == 0:
    return shape[0], int(np.prod(shape[1:]))
  if embed_axis == len(shape) - 1:
    return int(np.prod(shape[:-1])), shape[-1]
  raise ValueError(f"embed axis {embed_axis} of shape {shape} is neither first nor last")


@functools.partial(jax.jit, static_argnames=("dtype",))
def _changed_counts(a, b, atols, dtype):
  """[len(atols)] int32: entries with |cast(b) − cast(a)| > atol (difference taken in fp32)."""
  d = jnp.abs(b.astype(dtype).astype(jnp.float32) - a.astype(dtype).astype(jnp.float32))
  # One fused reduction per atol (never a [len(atols), numel] mask).
  return jnp.stack([jnp.sum(d > atols[i], dtype=jnp.int32) for i in range(atols.shape[0])])


@functools.partial(jax.jit, static_argnames=("dtype",))
def _overlap_counts(a1, b1, a2, b2, atols, dtype):
  """[3, len(atols)] int32: |I₁|, |I₂|, |I₁∩I₂| per atol (I_r: entries where b_r differs from a_r)."""
  cast = lambda x: x.astype(dtype).astype(jnp.float32)  # noqa: E731
  d1, d2 = jnp.abs(cast(b1) - cast(a1)), jnp.abs(cast(b2) - cast(a2))
  rows = []
  for i in range(atols.shape[0]):
    i1, i2 = d1 > atols[i], d2 > atols[i]
    rows.append(jnp.stack([i1.sum(dtype=jnp.int32), i2.sum(dtype=jnp.int32),
                           (i1 & i2).sum(dtype=jnp.int32)]))
  return jnp.stack(rows, axis=1)


@functools.partial(jax.jit, static_argnames=("rows", "cols"))
def _singular_values(a, b, rows, cols):
  d = (b.astype(jnp.float32) - a.astype(jnp.float32)).reshape(rows, cols)
  return jnp.linalg.svd(d, compute_uv=False)


def numerical_rank(s: np.ndarray, rows: int, cols: int, rtol: float | None = None) -> int:
  """Singular values above rtol · σ_max (rtol defaults to max(rows, cols) · ε_fp32); 0 for Δ = 0."""
  s = np.asarray(s, np.float64)
  if s.size == 0 or not s.max() > 0:
    return 0
  rtol = max(rows, cols) * EPS_FP32 if rtol is None else rtol
  return int((s > rtol * s.max()).sum())


def update_rank(base: jax.Array, new: jax.Array, embed_axis: int | None = None,
                rtol: float | None = None) -> dict | None:
  """{'rank', 'full', 'rank_frac'} of Δ = new − base in fp32 (None for leaves with < 2 dims)."""
  view = matrix_shape(base.shape, embed_axis)
  if view is None:
    return None
  s = np.asarray(jax.device_get(_singular_values(base, new, *view)))
  rank, full = numerical_rank(s, *view, rtol=rtol), min(view)
  return {"rank": rank, "full": full, "rank_frac": rank / full}


def _atols_array(atols: Sequence[float]) -> jax.Array:
  return jnp.asarray(np.asarray(atols, np.float32))


def update_sparsity(base, new, atols: Sequence[float] = ATOLS, *, rank: bool = True,
                    embed_axes: Mapping[str, int] | None = None, rtol: float | None = None) -> dict:
  """Sparsity of the update base → new, overall and per leaf, in bf16 and fp32, and rank per matrix.

  Returns:
    {"numel": n,
     "sparsity": {"bf16": {atol_key: s}, "fp32": {atol_key: s}},      # overall, 1 − changed / n
     "rank_frac_mean": mean rank fraction over matrices (None if none),
     "per_matrix": {path: {"shape", "numel", "bf16": {...}, "fp32": {...},
                           "rank", "full", "rank_frac"  (matrices only)}}}
  """
  base_f, new_f = flatten(base), flatten(new)
  if base_f.keys() != new_f.keys():
    raise ValueError(f"parameter trees differ: {sorted(set(base_f) ^ set(new_f))[:5]}")
  at = _atols_array(atols)
  total = 0
  changed = {name: np.zeros(len(atols), np.int64) for name in DTYPES}
  per = {}
  for path, a in base_f.items():
    b = new_f[path]
    if a.shape != b.shape:
      raise ValueError(f"{path}: shape {a.shape} vs {b.shape}")
    numel = int(np.prod(a.shape))
    row = {"shape": list(a.shape), "numel": numel}
    for name, dtype in DTYPES.items():
      cnt = np.asarray(jax.device_get(_changed_counts(a, b, at, dtype)), np.int64)
      changed[name] += cnt
      row[name] = {atol_key(t): 1.0 - int(c) / numel for t, c in zip(atols, cnt)}
    if rank:
      r = update_rank(a, b, (embed_axes or {}).get(path), rtol)
      if r is not None:
        row.update(r)
    total += numel
    per[path] = row
  fracs = [r["rank_frac"] for r in per.values() if "rank_frac" in r]
  return {
      "numel": total,
      "sparsity": {name: {atol_key(t): 1.0 - int(c) / total for t, c in zip(atols, changed[name])}
                   for name in DTYPES},
      "rank_frac_mean": float(np.mean(fracs)) if fracs else None,
      "per_matrix": per,
  }


def seed_overlap(base, run1, run2, atols: Sequence[float] = ATOLS, dtype: str = "bf16",
                 base2=None) -> dict:
  """Overlap of the entries two runs updated from the same base, vs a same-density random mask.

  `base2` is run 2's own base when it differs from run 1's (then I₂ is measured against it).

  Returns {atol_key: {"overlap": |I₁∩I₂|/|I₁|, "random": |I₂|/n, "density_1": |I₁|/n,
  "density_2": |I₂|/n, "per_matrix": {path: {"overlap", "random"}}}}; overlap is None when I₁ is empty.
  """
  base_f, f1, f2 = flatten(base), flatten(run1), flatten(run2)
  base2_f = base_f if base2 is None else flatten(base2)
  if not base_f.keys() == f1.keys() == f2.keys() == base2_f.keys():
    raise ValueError("the three parameter trees differ in structure")
  at = _atols_array(atols)
  tot = np.zeros((3, len(atols)), np.int64)
  n = 0
  per = {}
  for path, a in base_f.items():
    c = np.asarray(jax.device_get(_overlap_counts(a, f1[path], base2_f[path], f2[path], at,
                                                    DTYPES[dtype])), np.int64)
    numel = int(np.prod(a.shape))
    per[path] = (c, numel)
    tot += c
    n += numel

  def ratio(num, den):
    return float(num) / den if den else None

  out = {}
  for j, t in enumerate(atols):
    out[atol_key(t)] = {
        "overlap": ratio(tot[2, j], tot[0, j]), "random": tot[1, j] / n,
        "density_1": tot[0, j] / n, "density_2": tot[1, j] / n,
        "per_matrix": {p: {"overlap": ratio(c[2, j], c[0, j]), "random": c[1, j] / m}
                       for p, (c, m) in per.items()},
    }
  return out
