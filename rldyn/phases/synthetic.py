"""Synthetic metrics logs with a known boundary, for tests, benchmarks and calibration.

`make_log` returns `(records, tau)`: records are `(step, {name: value})` with the
rldyn metric names, tau the true boundary step (None for one-regime logs).

Arc shapes (x = step / length, boundary at tau):
  linear: execution falls linearly to tau then is flat; planning flat then rises linearly.
  exp:    execution decays exponentially (with a kink) to tau; planning rises concavely.
  dip:    as linear, but planning dips before tau and then rises.
  overlap: the phases overlap (HICRA's Llama runs): execution falls linearly to
          tau; planning dips from the start to a minimum at mid-consolidation
          (30-70 % of tau), rises linearly from there, is back at its starting
          level shortly after tau (0-10 % of the run later) and above it after.
One-regime (null) shapes:
  decay:  execution decays exponentially over the whole run; planning is flat.
  noise:  every signal is flat noise.
  rise:   planning rises monotonically from the start; execution falls linearly.
  decay_rise: execution decays exponentially and planning rises (saturating) from
          the start: every signal moves, smoothly, in the arc's directions.
"""
from __future__ import annotations

import numpy as np

ARC_SHAPES = ("linear", "exp", "dip", "overlap")
NULL_SHAPES = ("decay", "noise", "rise", "decay_rise")
SPACINGS = ("regular", "uneven")


def _curves(shape: str, x: np.ndarray, tau: float, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Unit-amplitude execution, planning and accuracy curves on x in [0, 1]."""
  pre = x < tau
  if shape in ("linear", "dip", "overlap"):
    exe = np.where(pre, 1.0 - x / tau, 0.0)
  elif shape == "exp":
    k = 3.0
    exe = np.where(pre, (np.exp(-k * x / tau) - np.exp(-k)) / (1.0 - np.exp(-k)), 0.0)
  elif shape in ("decay", "decay_rise"):
    k = rng.uniform(2.0, 6.0)
    exe = np.exp(-k * x)
  elif shape == "noise":
    exe = np.zeros_like(x)
  elif shape == "rise":
    exe = 1.0 - x
  else:
    raise ValueError(f"unknown shape {shape!r}")
  after = np.maximum(x - tau, 0.0) / (1.0 - tau)
  if shape == "linear":
    plan = after
  elif shape == "exp":
    plan = (1.0 - np.exp(-2.0 * after)) / (1.0 - np.exp(-2.0))
  elif shape == "dip":
    plan = np.where(pre, -0.3 * x / tau, -0.3 + 1.3 * after)
  elif shape == "overlap":
    low = tau * rng.uniform(0.3, 0.7)                      # planning minimum
    back = min(tau + rng.uniform(0.0, 0.1), 0.95)          # back at its starting level
    depth = (back - low) / (1.0 - low)                     # the rise to x = 1 is 1.0
    plan = np.where(x < low, -depth * x / low, -depth + (x - low) / (1.0 - low))
  elif shape in ("decay", "noise"):
    plan = np.zeros_like(x)
  elif shape == "decay_rise":
    k = rng.uniform(1.0, 4.0)
    plan = np.expm1(-k * x) / np.expm1(-k)
  else:  # rise: linear, saturating or accelerating from the start
    k = rng.choice([0.0, 2.0, -2.0])
    plan = x if k == 0 else np.expm1(-k * x) / np.expm1(-k)
  acc = 1.0 - exe  # accuracy mirrors execution consolidation
  return exe, plan, acc


def _noise(rng: np.random.Generator, n: int, tail_df: float | None, ar: float) -> np.ndarray:
  """Unit-variance noise: Gaussian or Student-t, optionally AR(1)."""
  if tail_df is None:
    e = rng.standard_normal(n)
  else:
    e = rng.standard_t(tail_df, n) / np.sqrt(tail_df / (tail_df - 2.0))
  if ar:
    out = np.empty(n)
    prev = 0.0
    for i in range(n):
      prev = ar * prev + np.sqrt(1.0 - ar * ar) * e[i]
      out[i] = prev
    return out
  return e


def make_steps(length: int, spacing: str, rng: np.random.Generator) -> np.ndarray:
  """Logged steps in [0, length): every step, or uneven (random gaps and a hole)."""
  if spacing == "regular":
    return np.arange(length)
  if spacing == "uneven":
    keep = rng.random(length) < 0.7
    start = rng.integers(int(0.1 * length), int(0.8 * length))
    keep[start:start + max(1, length // 12)] = False  # a logging outage
    keep[0] = keep[-1] = True
    return np.nonzero(keep)[0]
  raise ValueError(f"unknown spacing {spacing!r}")


def make_log(length: int, *, shape: str = "linear", tau_frac: float | None = None,
             noise: float = 0.15, spacing: str = "regular", tail_df: float | None = None,
             ar: float = 0.0, missing_frac: float = 0.05, planning: bool = True,
             seed: int = 0) -> tuple[list[tuple[int, dict[str, float]]], float | None]:
  """One synthetic run.

  Args:
    length: run length in steps.
    shape: one of ARC_SHAPES (boundary at tau) or NULL_SHAPES (no boundary).
    tau_frac: boundary as a fraction of the run; default uniform in [0.25, 0.65].
    noise: noise standard deviation relative to each signal's unit amplitude.
    spacing: "regular" or "uneven".
    tail_df: Student-t degrees of freedom for heavy tails (None: Gaussian).
    ar: AR(1) coefficient of the noise.
    missing_frac: fraction of values replaced by NaN or None, per signal.
    planning: include `semantic_entropy/planning`.
    seed: everything is drawn from `np.random.default_rng(seed)`.

  Returns:
    (records, tau_step), tau_step None for NULL_SHAPES.
  """
  rng = np.random.default_rng(seed)
  if tau_frac is None:
    tau_frac = float(rng.uniform(0.25, 0.65))
  steps = make_steps(length, spacing, rng)
  x = steps / max(length - 1, 1)
  exe, plan, acc = _curves(shape, x, tau_frac, rng)
  n = steps.size
  cols = {
      "entropy/execution": 0.3 + 0.5 * (exe + noise * _noise(rng, n, tail_df, ar)),
      "ppl/execution_rel": 0.7 + 0.3 * (exe + noise * _noise(rng, n, tail_df, ar)),
      "semantic_entropy/planning": 1.0 + 0.6 * (plan + noise * _noise(rng, n, tail_df, ar)),
      "accuracy": 0.2 + 0.5 * (acc + noise * _noise(rng, n, tail_df, ar)),
      "reward/mean": rng.random(n),
  }
  if not planning:
    del cols["semantic_entropy/planning"]
  records = []
  for i, s in enumerate(steps):
    rec: dict[str, float] = {}
    for k, v in cols.items():
      u = rng.random()
      if u < missing_frac / 2:
        rec[k] = float("nan")
      elif u < missing_frac:
        rec[k] = None  # type: ignore[assignment]  # as JSON null
      else:
        rec[k] = float(v[i])
    records.append((int(s), rec))
  tau = None if shape in NULL_SHAPES else tau_frac * (length - 1)
  return records, tau
