"""The regression core: cleaned signals, two-regime profiles, one-regime fits.

Everything here is plain numpy on one signal at a time; `detect.py` combines
signals. Time is normalised, `t = (step - first_step) / span`, so every design
column lies in [-1, 1] and the least-squares problems are well conditioned.

Design matrices (`G` candidate breakpoints `tau_G`, `M` points `t_M`):

* execution ("falls, then flat"): `[1, g_kappa(t; tau), (t - tau)_+]` where
  `g_kappa` falls from 1 at t = 0 to 0 at tau (linear for kappa = 0, an
  exponential decay of curvature kappa otherwise) and is 0 after tau;
* planning / accuracy ("one slope, then a rise"): `[1, min(t - tau, 0),
  h_kappa(t; tau)]`, h a linear, saturating or accelerating curve from 0 at
  tau (0 before tau);
* one regime (any signal): `[1, e_kappa(t)]`, `e_kappa` a linear (kappa = 0),
  saturating (kappa > 0) or accelerating (kappa < 0) monotone curve.

Both two-regime models are continuous at tau (a kink, not a jump), which keeps
the profile likelihood smooth in tau and the likelihood-ratio interval regular.

Values are standardised per signal before any fit (`standardise`): an exact
power-of-two prescale, then median and standard deviation, so that values near
the float limits (1e300), tiny ones (1e-20) or ones on a large offset (1e9) are
fitted exactly like the same curve at unit scale. Fits live in these units;
`PreparedSignal.in_units` maps levels back and `unit` scales slopes.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

# Signal roles: the part a logged *curve* plays in the arc. Defined here once.
# They are not token roles (rldyn.roles.ids.ROLE_NAMES labels tokens as
# "other" / "planning" / "execution"); a signal such as
# `semantic_entropy/planning` is computed over planning tokens and plays the
# PLANNING signal role, but `accuracy` or `ppl/execution_rel` are signals too.
EXECUTION = "execution"  # falls during consolidation (phase 1), then flat
PLANNING = "planning"    # flat or dipping, then rises (phase 2)
ACCURACY = "accuracy"    # fitted jointly when asked: must not fall before tau
CONTEXT = "context"      # fitted at tau for the report only
ROLES = (EXECUTION, PLANNING, ACCURACY, CONTEXT)
FIT_ROLES = (EXECUTION, PLANNING, ACCURACY)  # roles that enter the joint likelihood

_TINY = 1e-12


@dataclasses.dataclass(frozen=True)
class PreparedSignal:
  """One signal after cleaning: sorted, finite, winsorised, optionally binned.

  Attributes:
    name: metric name.
    role: one of ROLES.
    steps_N: raw steps (sorted, unique).
    t_N: normalised time of the raw points.
    y_N: winsorised raw values.
    n_clipped: how many raw values the winsorisation moved.
    t_M, y_M, w_M: the points the grid search uses: bin means and bin counts
      (M == N and w == 1 when the signal is short enough not to be binned).
    ssw: within-bin sum of squares (0 when not binned), so that the residual
      sum of squares of the raw points is `ssw + sum(w * (y_M - fit)^2)`.
    scale: robust noise scale (MAD of residuals from a running median).
    offset, unit: the standardisation, value = offset + unit * y (y_N, y_M
      and every fitted coefficient are in standardised units).
  """
  name: str
  role: str
  steps_N: np.ndarray
  t_N: np.ndarray
  y_N: np.ndarray
  n_clipped: int
  t_M: np.ndarray
  y_M: np.ndarray
  w_M: np.ndarray
  ssw: float
  scale: float
  offset: float = 0.0
  unit: float = 1.0

  @property
  def n(self) -> int:
    return int(self.t_N.size)

  def in_units(self, y: np.ndarray | float) -> np.ndarray | float:
    """Standardised values back in the log's units (inf beyond the float range)."""
    with np.errstate(over="ignore", invalid="ignore"):
      return self.offset + self.unit * np.asarray(y, np.float64)


def standardise(y_N: np.ndarray) -> tuple[np.ndarray, float, float]:
  """(y - offset) / unit with median 0 and unit standard deviation: (y, offset, unit).

  The values are first divided by a power of two near their largest magnitude
  (exact in floating point), so no intermediate overflows or underflows.
  offset and unit may be inf for values spanning the whole float range; the
  standardised values are always finite.
  """
  big = float(np.max(np.abs(y_N))) if y_N.size else 0.0
  pow2 = 2.0 ** math.floor(math.log2(big)) if big > 0 else 1.0
  x = y_N / pow2
  center = float(np.median(x))
  x = x - center
  spread = float(np.std(x))
  if not spread > 0:
    spread = 1.0
  with np.errstate(over="ignore"):
    return x / spread, float(np.float64(center) * pow2), float(np.float64(spread) * pow2)


def running_median(y_N: np.ndarray, window: int) -> np.ndarray:
  """Centred running median (odd window, mirrored at the ends): shifts no kink."""
  n = y_N.size
  half = min(window // 2, n - 1) if n > 1 else 0
  if half == 0:
    return y_N.copy()
  padded = np.pad(y_N, half, mode="reflect")
  windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1)
  return np.median(windows, axis=1)


def robust_scale(r: np.ndarray) -> float:
  """1.4826 * median absolute deviation: sigma for Gaussian noise, robust to tails."""
  if r.size == 0:
    return 0.0
  return float(1.4826 * np.median(np.abs(r - np.median(r))))


def prepare_signal(name: str, role: str, steps_N: np.ndarray, y_N: np.ndarray, *,
                   first_step: float, span: float, winsor_c: float,
                   max_points: int) -> PreparedSignal:
  """Winsorises heavy-tailed outliers and bins long signals.

  Values are standardised first (`standardise`). Outliers are clipped to
  `median +- winsor_c * scale` around a centred running
  median (a Huber-like treatment that costs one pass), so a few wild values
  cannot dominate a least-squares fit. Signals longer than `max_points` are
  averaged in consecutive equal-count bins for the grid search; the
  within-bin scatter is kept in `ssw` so likelihoods still refer to raw points.
  """
  steps_N = np.asarray(steps_N, np.float64)
  y_N, offset, unit = standardise(np.asarray(y_N, np.float64))
  n = y_N.size
  window = int(np.clip(n // 15, 5, 51))
  med = running_median(y_N, window)
  scale = robust_scale(y_N - med)
  if scale > 0:
    lo, hi = med - winsor_c * scale, med + winsor_c * scale
    clipped = np.clip(y_N, lo, hi)
  else:
    clipped = y_N.copy()
  n_clipped = int(np.count_nonzero(clipped != y_N))
  t_N = (steps_N - first_step) / span
  if n > max_points:
    size = -(-n // max_points)
    starts = np.arange(0, n, size)
    counts = np.diff(np.append(starts, n)).astype(np.float64)
    t_M = np.add.reduceat(t_N, starts) / counts
    y_M = np.add.reduceat(clipped, starts) / counts
    ssw = float(np.sum((clipped - np.repeat(y_M, counts.astype(int))) ** 2))
    w_M = counts
  else:
    t_M, y_M, w_M, ssw = t_N, clipped, np.ones(n), 0.0
  return PreparedSignal(name=name, role=role, steps_N=steps_N, t_N=t_N, y_N=clipped,
                        n_clipped=n_clipped, t_M=t_M, y_M=y_M, w_M=w_M, ssw=ssw,
                        scale=max(scale, _TINY), offset=offset, unit=unit)


def two_regime_design(role: str, t_M: np.ndarray, tau_G: np.ndarray,
                      kappa: float = 0.0) -> np.ndarray:
  """Design matrices `(G, M, 3)` of the two-regime model at each tau.

  For execution, kappa is the curvature of the decay before tau (the segment
  after tau is linear); for planning and accuracy it is the curvature of the
  rise after tau (the segment before tau is linear). kappa = 0 is linear.
  """
  d_GM = t_M[None, :] - tau_G[:, None]
  if role == EXECUTION:
    length_G1 = np.maximum(tau_G, _TINY)[:, None]
    u_GM = np.minimum(d_GM, 0.0) / length_G1  # in [-1, 0]; 0 after tau
    if kappa == 0.0:
      pre_GM = -u_GM
    else:
      pre_GM = np.expm1(-kappa * u_GM) / np.expm1(kappa)
    post_GM = np.maximum(d_GM, 0.0)
  else:
    pre_GM = np.minimum(d_GM, 0.0)
    length_G1 = np.maximum(1.0 - tau_G, _TINY)[:, None]
    post_GM = np.maximum(d_GM, 0.0)
    if kappa != 0.0:
      post_GM = length_G1 * np.expm1(-kappa * post_GM / length_G1) / np.expm1(-kappa)
  ones_GM = np.ones_like(d_GM)
  return np.stack([ones_GM, pre_GM, post_GM], axis=-1)


def one_regime_column(t_M: np.ndarray, kappa: float) -> np.ndarray:
  """Monotone curve on [0, 1]: linear (0), saturating (>0), accelerating (<0)."""
  if kappa == 0.0:
    return t_M.copy()
  return np.expm1(-kappa * t_M) / np.expm1(-kappa)


def batched_wls(x_GMP: np.ndarray, y_M: np.ndarray, w_M: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
  """Weighted least squares for G design matrices at once: (rss_G, beta_GP)."""
  sw_M = np.sqrt(w_M)
  xw_GMP = x_GMP * sw_M[None, :, None]
  yw_M = y_M * sw_M
  xtx_GPP = np.matmul(np.swapaxes(xw_GMP, 1, 2), xw_GMP)
  xty_GP = np.matmul(np.swapaxes(xw_GMP, 1, 2), yw_M[None, :, None])[..., 0]
  p = x_GMP.shape[-1]
  ridge = 1e-10 * np.trace(xtx_GPP, axis1=1, axis2=2)[:, None, None] * np.eye(p)
  beta_GP = np.linalg.solve(xtx_GPP + ridge, xty_GP[..., None])[..., 0]
  resid_GM = yw_M[None, :] - np.matmul(xw_GMP, beta_GP[..., None])[..., 0]
  return np.einsum("gm,gm->g", resid_GM, resid_GM), beta_GP


def loglik(rss: np.ndarray | float, n: int, scale: float) -> np.ndarray:
  """Gaussian log-likelihood with the variance profiled out (constants dropped)."""
  floor = n * (1e-6 * scale) ** 2
  return -0.5 * n * np.log(np.maximum(rss, floor) / n)


def two_regime_profile(sig: PreparedSignal, tau_G: np.ndarray,
                       kappas: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
  """Profile log-likelihood over tau, maximised over kappas: (ll_G, kappa index per tau)."""
  kap = kappas
  rss_KG = np.stack([
      batched_wls(two_regime_design(sig.role, sig.t_M, tau_G, k), sig.y_M, sig.w_M)[0]
      for k in kap])
  best_G = np.argmin(rss_KG, axis=0)
  rss_G = rss_KG[best_G, np.arange(tau_G.size)] + sig.ssw
  return loglik(rss_G, sig.n, sig.scale), best_G


@dataclasses.dataclass(frozen=True)
class OneRegimeFit:
  """Best smooth monotone one-regime curve of a signal."""
  kappa: float
  beta: np.ndarray  # (2,): level, amplitude of the kappa curve
  ll: float

  def predict(self, t: np.ndarray) -> np.ndarray:
    return self.beta[0] + self.beta[1] * one_regime_column(t, self.kappa)

  @property
  def shape(self) -> str:
    if self.kappa == 0.0:
      return "linear"
    return "saturating" if self.kappa > 0 else "accelerating"


def one_regime_fit(sig: PreparedSignal, kappa_grid: np.ndarray) -> OneRegimeFit:
  """Best of a dense family of monotone curves (exponential decay, linear, ...)."""
  x_KM2 = np.stack([np.stack([np.ones_like(sig.t_M), one_regime_column(sig.t_M, k)], -1)
                    for k in kappa_grid])
  rss_K, beta_K2 = batched_wls(x_KM2, sig.y_M, sig.w_M)
  i = int(np.argmin(rss_K))
  # Local refinement of kappa between the neighbouring grid values.
  lo, hi = kappa_grid[max(i - 1, 0)], kappa_grid[min(i + 1, kappa_grid.size - 1)]
  fine = np.linspace(lo, hi, 9)
  x_FM2 = np.stack([np.stack([np.ones_like(sig.t_M), one_regime_column(sig.t_M, k)], -1)
                    for k in fine])
  rss_F, beta_F2 = batched_wls(x_FM2, sig.y_M, sig.w_M)
  j = int(np.argmin(rss_F))
  if rss_F[j] < rss_K[i]:
    kappa, beta, rss = float(fine[j]), beta_F2[j], rss_F[j]
  else:
    kappa, beta, rss = float(kappa_grid[i]), beta_K2[i], rss_K[i]
  return OneRegimeFit(kappa=kappa, beta=beta,
                      ll=float(loglik(rss + sig.ssw, sig.n, sig.scale)))


def one_regime_kappa_grid() -> np.ndarray:
  """kappa = 0 (linear) and +-0.25 .. 40, log-spaced (curvatures of a monotone curve)."""
  pos = np.geomspace(0.25, 40.0, 20)
  return np.concatenate([-pos[::-1], [0.0], pos])


@dataclasses.dataclass(frozen=True)
class TwoRegimeFit:
  """Two-regime fit of one signal at a fixed tau, on the raw (cleaned) points."""
  tau: float
  kappa: float
  beta: np.ndarray   # (3,): level at tau, pre-tau coefficient, post-tau slope
  cov: np.ndarray    # (3, 3), inflated by the autocorrelation factor
  rho: float         # lag-1 autocorrelation of the residuals (clipped to [0, 0.9])
  phi: float         # variance inflation (1 + rho) / (1 - rho)
  sigma: float

  def predict(self, role: str, t: np.ndarray) -> np.ndarray:
    x = two_regime_design(role, np.asarray(t, np.float64), np.array([self.tau]), self.kappa)[0]
    return x @ self.beta


def two_regime_fit_at(sig: PreparedSignal, tau: float, kappa: float) -> TwoRegimeFit:
  """Refits at tau on raw points; residual autocorrelation sets the n_eff correction."""
  x_NP = two_regime_design(sig.role, sig.t_N, np.array([tau]), kappa)[0]
  rss, beta = batched_wls(x_NP[None], sig.y_N, np.ones(sig.n))
  beta = beta[0]
  resid = sig.y_N - x_NP @ beta
  denom = float(resid @ resid)
  rho = float(resid[1:] @ resid[:-1]) / denom if denom > 0 else 0.0
  rho = float(np.clip(rho, 0.0, 0.9))
  phi = (1.0 + rho) / (1.0 - rho)
  dof = max(sig.n - 3, 1)
  sigma2 = max(float(rss[0]) / dof, (1e-6 * sig.scale) ** 2)
  xtx = x_NP.T @ x_NP
  cov = sigma2 * phi * np.linalg.pinv(xtx + 1e-10 * np.trace(xtx) * np.eye(3))
  return TwoRegimeFit(tau=float(tau), kappa=float(kappa), beta=beta, cov=cov, rho=rho,
                      phi=phi, sigma=float(np.sqrt(sigma2)))


def two_regime_betas(sig: PreparedSignal, tau_G: np.ndarray, kappa_G: np.ndarray
                     ) -> np.ndarray:
  """Two-regime coefficients `(G, 3)` at each (tau, kappa) pair, on the grid points."""
  beta_GP = np.zeros((tau_G.size, 3))
  for k in np.unique(kappa_G):
    sel = kappa_G == k
    x_GMP = two_regime_design(sig.role, sig.t_M, tau_G[sel], float(k))
    beta_GP[sel] = batched_wls(x_GMP, sig.y_M, sig.w_M)[1]
  return beta_GP


def recovery_times(tau_G: np.ndarray, kappa_G: np.ndarray, beta_GP: np.ndarray,
                   t_first: float, t_last: float, points: int = 501) -> np.ndarray:
  """When a rising (planning) curve gets above its earlier level, per fit: `(G,)` times.

  The earlier level is the larger of the fit at the first point and at tau:
  after a dip it is the level the signal started from, otherwise the level at
  tau (so the recovery is tau itself). inf where the fit never gets above it
  within the run.
  """
  out = np.full(tau_G.size, np.inf)
  for g in range(tau_G.size):
    tau = tau_G[g:g + 1]
    t = np.linspace(tau[0], t_last, points)
    f = two_regime_design(PLANNING, t, tau, float(kappa_G[g]))[0] @ beta_GP[g]
    start = two_regime_design(PLANNING, np.array([t_first]), tau,
                              float(kappa_G[g]))[0] @ beta_GP[g]
    earlier = max(float(start[0]), float(beta_GP[g, 0]))
    above = np.nonzero(f > earlier + 1e-12 * (1.0 + abs(earlier)))[0]
    if above.size:
      out[g] = t[above[0]]
  return out
