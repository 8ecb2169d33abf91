"""Offline two-phase detector: joint segmented regression with a shared breakpoint.

`fit_phases(series, config)` is the whole algorithm (see the package docstring
and docs/phases.md for the model, the decision rule and its assumptions);
`detect(records, config)` is the same on `(step, {name: value})` records.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import statistics
from typing import Any, Iterable, Mapping

import numpy as np

from rldyn.phases import model
from rldyn.phases.model import ACCURACY, CONTEXT, EXECUTION, PLANNING

Series = Mapping[str, tuple[np.ndarray, np.ndarray]]  # name -> (steps, values)
_PARAMS_PER_SIGNAL = 4  # level, pre-tau coefficient, post-tau coefficient, curvature


@dataclasses.dataclass(frozen=True)
class SignalSpec:
  """A metric and the role it plays in the arc.

  Roles: `execution` falls then flattens; `planning` is flat or dips, then
  rises; `accuracy` enters the joint fit and must not fall before tau;
  `context` is fitted at tau for the report only. `fallback` names metrics
  read instead, in order, when the log has no usable `name` (logs written
  before `name` existed); the fit is then reported under the name read.
  `replaced_by` names better measurements of the same quantity: when the log
  has a usable one, it is read instead of `name` (and a signal whose
  replacement another signal already reads is dropped).
  """
  name: str
  role: str
  fallback: tuple[str, ...] = ()
  replaced_by: tuple[str, ...] = ()

  def __post_init__(self):
    if self.role not in model.ROLES:
      raise ValueError(f"role {self.role!r} of {self.name!r} not in {model.ROLES}")


# The planning signal is the per-prompt strategy entropy (rldyn/metrics/strategy.py), which does not
# move with batch size or response length; logs without it fall back to the pooled
# `semantic_entropy/planning` (docs/phases.md, "The signals"). A run whose role tagger is not the task's
# ground truth (a placebo mask, the lexicon on countdown) measures entropy/* and ppl/* on its tagger's
# mask; it also logs `truth/entropy/execution` on the true roles, which then replaces both.
TRUE_EXECUTION = "truth/entropy/execution"
# A run whose task changes (an `rl.curriculum` stage: more numbers, a harder world) logs its stage here. A
# new stage moves the signals by itself (more numbers mean more possible first moves, so strategy entropy
# jumps), so a verdict over a log that spans stages cannot tell the policy's arc from the task's change.
TASK_STAGE = "curriculum/stage"
DEFAULT_SIGNALS = (
    SignalSpec("entropy/execution", EXECUTION, replaced_by=(TRUE_EXECUTION,)),
    SignalSpec("ppl/execution_rel", EXECUTION, replaced_by=(TRUE_EXECUTION,)),
    SignalSpec("strategy/entropy", PLANNING, fallback=("semantic_entropy/planning",)),
    SignalSpec("accuracy", CONTEXT),
)


@dataclasses.dataclass(frozen=True)
class PhaseConfig:
  """Detector settings. The defaults are the calibrated ones (benchmarks/bench_phases.py)."""
  signals: tuple[SignalSpec, ...] = DEFAULT_SIGNALS  # metrics and their roles
  min_points: int = 15             # fewer usable steps: detected=False ("too short")
  min_segment_points: int = 5      # each phase needs this many points of each signal...
  min_segment_frac: float = 0.05   # ...and this fraction of the signal's points
  bic_threshold: float = 6.0       # BIC(one regime) - BIC(two regimes) needed ("strong")
  ci_level: float = 0.95           # profile-likelihood interval level for tau
  t_crit: float = 2.0              # |t| for a slope to count as a fall / rise
  flat_ratio: float = 0.5          # "flat": |slope| <= flat_ratio * the other phase's slope
  winsor_c: float = 3.0            # clip at running median +- c * robust sigma
  max_points: int = 1000           # longer signals are binned (equal-count means) for the grid
  coarse_grid: int = 120           # tau candidates in the first pass
  fine_grid: int = 61              # tau candidates around the best coarse one
  exec_kappas: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.5, 8.0, 10.0)
  # ^ curvatures of the execution decay before tau (0: linear)
  rise_kappas: tuple[float, ...] = (-4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0,
                                    5.0, 6.5)
  # ^ curvatures of the planning rise after tau (>0 saturating, <0 accelerating)

  def __post_init__(self):
    for name in ("bic_threshold", "ci_level", "t_crit", "flat_ratio", "winsor_c",
                 "min_segment_frac"):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {v!r}")
    if self.t_crit <= 0 or self.flat_ratio < 0 or self.winsor_c <= 0:
      raise ValueError("need t_crit > 0, flat_ratio >= 0 and winsor_c > 0")
    if not 0.0 <= self.min_segment_frac < 0.5:
      raise ValueError(f"min_segment_frac must be in [0, 0.5), got {self.min_segment_frac}")
    if self.max_points < 10:
      raise ValueError(f"max_points must be >= 10, got {self.max_points}")
    if not all(math.isfinite(k) for k in self.exec_kappas + self.rise_kappas):
      raise ValueError("exec_kappas and rise_kappas must be finite")
    names = [s.name for s in self.signals]
    if len(set(names)) != len(names):
      raise ValueError(f"duplicate signal names: {names}")
    if not any(s.role in model.FIT_ROLES for s in self.signals):
      raise ValueError("at least one signal must have role execution, planning or accuracy")
    if not 0.5 < self.ci_level < 1.0:
      raise ValueError(f"ci_level must be in (0.5, 1), got {self.ci_level}")
    if self.min_segment_points < 3 or self.min_points < 2 * self.min_segment_points:
      raise ValueError("need min_segment_points >= 3 and min_points >= 2 * min_segment_points")
    if self.coarse_grid < 5 or self.fine_grid < 3:
      raise ValueError("coarse_grid >= 5 and fine_grid >= 3 required")

  def read_names(self) -> list[str]:
    """Every metric the detector reads: each signal's name, then its fallbacks and replacements, then
    the task stage (TASK_STAGE)."""
    out = []
    for s in self.signals:
      out += [n for n in (s.name, *s.fallback, *s.replaced_by) if n not in out]
    return out + ([TASK_STAGE] if TASK_STAGE not in out else [])


@dataclasses.dataclass
class SignalFit:
  """Per-signal outcome (serialised into phases.json["signals"][name])."""
  name: str
  role: str
  n: int
  missing: bool = False
  note: str = ""
  n_clipped: int = 0
  kappa: float | None = None
  level_at_boundary: float | None = None
  slope_before: float | None = None     # mean slope per step, first point -> tau
  slope_after: float | None = None      # mean slope per step, tau -> last point
  change_before: float | None = None
  change_after: float | None = None
  t_before: float | None = None
  t_after: float | None = None
  autocorr: float | None = None
  delta_loglik: float | None = None     # two vs one regime, autocorrelation-corrected
  boundary_alone: float | None = None   # this signal's own best tau (step), for comparison
  ci_alone: list[float] | None = None   # and its own interval
  one_regime: dict[str, Any] | None = None
  pattern_ok: bool | None = None
  contradicts: bool | None = None
  pattern: str = ""
  # Planning signals, when execution is fitted too: how the phases line up.
  consolidation_end_step: float | None = None  # execution's own boundary (all its signals)
  overlap_steps: float | None = None    # consolidation end - this signal's own boundary (>0: overlap)
  recovery_step: float | None = None    # first step the fit is back above its earlier level
  recovery_ci: list[float | None] | None = None  # its range over the signal's own interval
  # For plotting only (not serialised).
  _two: model.TwoRegimeFit | None = None
  _one: model.OneRegimeFit | None = None
  _prep: model.PreparedSignal | None = None

  def to_json(self) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(self):
      if f.name.startswith("_") or f.name == "name":
        continue
      v = getattr(self, f.name)
      if isinstance(v, float):
        v = _finite_or_none(v)
      elif isinstance(v, list):
        v = [_finite_or_none(x) if isinstance(x, float) else x for x in v]
      out[f.name] = v
    return out


@dataclasses.dataclass
class PhaseResult:
  """What the detector concluded. `to_json()` is the phases.json contract."""
  detected: bool
  boundary_step: int | None
  ci: tuple[int, int] | None
  confidence: float
  signals: dict[str, SignalFit]
  reason: str
  tau_candidate: float | None = None    # best tau in steps even when not detected
  ci_candidate: tuple[float, float] | None = None
  delta_bic: float | None = None
  n_steps: int = 0
  first_step: float | None = None
  last_step: float | None = None
  profile_steps: np.ndarray | None = None  # tau grid (steps) and its joint log-likelihood
  profile_ll: np.ndarray | None = None
  ll_threshold: float | None = None        # profile value above which tau is in the CI
  overlap: bool = False                    # planning turned up clearly before consolidation ended
  overlap_steps: float | None = None       # end of consolidation - planning's turn-up, in steps
  turn_up: tuple[float, float, float] | None = None  # planning's own boundary, lo, hi (if overlap)
  # Which decision the reason words, for tables across runs: "arc", "no_change" (one smooth regime does as
  # well), "wrong_shape" (a supported change, signals not in the arc's pattern), "reversed" (planning rises
  # first), "unclear" (neither order nor overlap), "task_change" (the arc's shape, but the task changed
  # during the log: a curriculum stage), or "not_fitted" (too little data, or the fit failed).
  outcome: str = "not_fitted"
  failed_checks: tuple[str, ...] = ()    # wrong_shape: "SIGNAL PATTERN" of each signal of a failing role
  task_changes: tuple[float, ...] = ()   # steps at which TASK_STAGE changes (the first step of a new stage)
  stages: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # each stage judged alone

  def to_json(self) -> dict[str, Any]:
    return {
        "detected": bool(self.detected),
        "boundary_step": None if self.boundary_step is None else int(self.boundary_step),
        "ci": None if self.ci is None else [int(self.ci[0]), int(self.ci[1])],
        "confidence": float(round(self.confidence, 6)),
        "signals": {name: fit.to_json() for name, fit in self.signals.items()},
        "reason": self.reason,
        # The best two-regime split and its evidence, also when no arc was detected (null when the
        # log was too short or empty to fit): what a verdict table across runs reports.
        "candidate_step": _finite_or_none(self.tau_candidate),
        "candidate_ci": (None if self.ci_candidate is None
                         or not all(map(math.isfinite, self.ci_candidate))
                         else [float(self.ci_candidate[0]), float(self.ci_candidate[1])]),
        "delta_bic": _finite_or_none(self.delta_bic),
        "overlap_steps": _finite_or_none(self.overlap_steps),
        "outcome": self.outcome,
        "failed_checks": list(self.failed_checks),
        "task_changes": [float(x) for x in self.task_changes],
        "stages": self.stages,
    }

  def verdict(self) -> str:
    """One paragraph for a human."""
    head = "Two-phase arc DETECTED." if self.detected else "No two-phase arc detected."
    span = ""
    if self.first_step is not None:
      used = [n for n, f in self.signals.items() if not f.missing and f.role != CONTEXT]
      ctx = [n for n, f in self.signals.items() if not f.missing and f.role == CONTEXT]
      span = (f" Data: {self.n_steps} logged steps ({self.first_step:g}-{self.last_step:g});"
              f" signals fitted: {', '.join(used) or 'none'}"
              + (f"; reported only: {', '.join(ctx)}" if ctx else "") + ".")
    return f"{head} {self.reason}{span}"


def _finite_or_none(v: float | None) -> float | None:
  if v is None or not math.isfinite(v):
    return None
  return float(v)


def finite_float(v: Any) -> float | None:
  """v as a finite float, or None (missing, non-numeric, NaN or infinite)."""
  try:
    v = float(v)
  except (TypeError, ValueError, OverflowError):  # OverflowError: a 400-digit integer
    return None
  return v if math.isfinite(v) else None


def records_to_series(records: Iterable[tuple[int, Mapping[str, Any]]],
                      names: Iterable[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Collects the named metrics from records; drops non-finite values.

  A step logged twice (e.g. replayed after a resume) keeps its last value.
  """
  names = list(names)
  cols: dict[str, dict[float, float]] = {n: {} for n in names}
  for step, metrics in records:
    s = finite_float(step)
    if s is None:
      continue
    for n in names:
      v = finite_float(metrics.get(n))
      if v is not None:
        cols[n][s] = v
  out = {}
  for n, d in cols.items():
    steps = np.fromiter(d.keys(), np.float64, len(d))
    vals = np.fromiter(d.values(), np.float64, len(d))
    order = np.argsort(steps, kind="stable")
    out[n] = (steps[order], vals[order])
  return out


def detect(records: Iterable[tuple[int, Mapping[str, Any]]],
           config: PhaseConfig = PhaseConfig()) -> PhaseResult:
  """Detector on `(step, {name: value})` records (any trainer, any order)."""
  return fit_phases(records_to_series(records, config.read_names()), config)


def _lr_critical(level: float, dof: float) -> float:
  """Log-likelihood drop that bounds the interval: t_dof quantile^2 / 2.

  For large dof this is chi2_1(level) / 2; the Student-t quantile (Cornish-Fisher
  expansion, accurate to ~1e-3 for dof >= 5) widens short runs' intervals, whose
  noise variance is estimated from few points.
  """
  z = statistics.NormalDist().inv_cdf(0.5 + level / 2)
  v = max(dof, 3.0)
  t = z + (z**3 + z) / (4 * v) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v * v)
  return 0.5 * t * t


def _not_detected(signals, reason, n_steps=0, first=None, last=None) -> PhaseResult:
  return PhaseResult(detected=False, boundary_step=None, ci=None, confidence=0.0,
                     signals=signals, reason=reason, n_steps=n_steps,
                     first_step=first, last_step=last)


def _clean(steps, vals) -> tuple[np.ndarray, np.ndarray]:
  """Finite pairs, sorted by step; a step logged twice keeps its last value."""
  steps = np.asarray(steps, np.float64).ravel()
  vals = np.asarray(vals, np.float64).ravel()
  if steps.size != vals.size:
    raise ValueError(f"steps and values differ in length: {steps.size} != {vals.size}")
  ok = np.isfinite(steps) & np.isfinite(vals)
  steps, vals = steps[ok], vals[ok]
  if steps.size and np.any(np.diff(steps) <= 0):
    order = np.argsort(steps, kind="stable")
    steps, vals = steps[order], vals[order]
    last = np.append(steps[1:] != steps[:-1], True)  # last value of a repeated step
    steps, vals = steps[last], vals[last]
  return steps, vals


@dataclasses.dataclass
class _Profiles:
  """Profile log-likelihoods over the tau grid (t units) of every fitted signal."""
  tau_G: np.ndarray
  ll_G: dict[str, np.ndarray]      # iid log-likelihood
  own_G: dict[str, np.ndarray]     # autocorrelation- and dof-corrected, per signal
  kappa_G: dict[str, np.ndarray]   # best curvature at each tau
  dof: dict[str, int]
  phi: dict[str, float]

  def interval(self, names: list[str], level: float
               ) -> tuple[int, tuple[float, float], np.ndarray, float, np.ndarray]:
    """Joint profile of `names`: (argmax, (lo, hi) in t, inside indices, threshold, profile)."""
    prof_G = sum(self.own_G[n] for n in names)
    g = int(np.argmax(prof_G))
    thresh = prof_G[g] - _lr_critical(level, sum(self.dof[n] for n in names))
    inside = np.nonzero(prof_G >= thresh)[0]
    lo = _crossing(self.tau_G, prof_G, thresh, inside[0], -1)
    hi = _crossing(self.tau_G, prof_G, thresh, inside[-1], +1)
    return g, (lo, hi), inside, float(thresh), prof_G


def _usable(series: Series, name: str) -> bool:
  vals = np.asarray(series.get(name, (np.zeros(0), np.zeros(0)))[1], np.float64)
  return bool(np.isfinite(vals).any())


def _resolve_fallbacks(series: Series, config: PhaseConfig
                       ) -> tuple[PhaseConfig, dict[str, str], dict[str, str]]:
  """The config with each signal replaced by its first usable `replaced_by` (dropped when another
  signal already reads that one) or, when the series lacks it, by its first usable fallback; and
  {name read: signal it stands in for} of each kind."""
  taken = {s.name for s in config.signals}
  specs, used, better = [], {}, {}
  for spec in config.signals:
    alt = next((r for r in spec.replaced_by if _usable(series, r)), None)
    if alt is not None:
      if all(s.name != alt for s in specs):
        specs.append(SignalSpec(alt, spec.role))
      better.setdefault(alt, []).append(spec.name)
      continue
    if spec.fallback and not _usable(series, spec.name):
      alt = next((f for f in spec.fallback if f not in taken and _usable(series, f)), None)
      if alt is not None:
        specs.append(SignalSpec(alt, spec.role))
        used[alt] = spec.name
        continue
    specs.append(spec)
  return (dataclasses.replace(config, signals=tuple(specs)), used,
          {alt: " and ".join(names) for alt, names in better.items()})


def fit_phases(series: Series, config: PhaseConfig = PhaseConfig()) -> PhaseResult:
  """Fits one- and two-regime models and decides whether the two-phase arc happened.

  A signal absent from `series` is read from its first usable fallback (SignalSpec.fallback); the
  fit is keyed by the name read and its note says what it stands in for.

  Args:
    series: metric name -> (steps, values); non-finite values are dropped,
      unknown names ignored, missing names reported.
    config: detector settings.

  Returns:
    A PhaseResult; never raises on bad or short data (it says why instead).
  """
  config, used, better = _resolve_fallbacks(series, config)
  result = _fit_phases(series, config)
  _check_task_changes(result, series, config)
  for alt, name in used.items():
    fit = result.signals[alt]
    fit.note = (fit.note + "; " if fit.note else "") + (
        f"read in place of {name}, which the log does not have (a log from before it existed)")
  for alt, names in better.items():
    fit = result.signals[alt]
    fit.note = (fit.note + "; " if fit.note else "") + (
        f"read in place of {names} (measured on the run's role tagger, not the true roles)")
  return result


def task_changes(series: Series) -> tuple[float, ...]:
  """The steps at which `TASK_STAGE` takes a new value (the first step of each stage after the first)."""
  steps, vals = _clean(*series.get(TASK_STAGE, (np.zeros(0), np.zeros(0))))
  return tuple(float(x) for x in steps[1:][np.diff(vals) != 0])


def stage_summary(res: PhaseResult) -> str:
  """A few words for one stage's verdict: `arc at 40 [35, 45], dBIC 12.0`, `no change (dBIC -3.1)`, ..."""
  dbic = "" if res.delta_bic is None or not math.isfinite(res.delta_bic) else f"dBIC {res.delta_bic:.1f}"
  if res.outcome == "not_fitted":
    return "not fitted (" + res.reason.split(". ")[0].split(":")[0].rstrip(".") + ")"
  where = "" if res.tau_candidate is None else f" at {res.tau_candidate:.0f}" + (
      "" if res.ci_candidate is None else f" [{res.ci_candidate[0]:.0f}, {res.ci_candidate[1]:.0f}]")
  if res.outcome == "arc":
    return f"arc{where}, {dbic}"
  if res.outcome == "no_change":
    return f"no change ({dbic})"
  if res.outcome == "wrong_shape":
    return f"change{where}, {dbic}, not the arc's shape ({'; '.join(res.failed_checks)})"
  return f"change{where}, {dbic}, {res.outcome.replace('_', ' ')}"


def _restrict(series: Series, lo: float, hi: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  out = {}
  for name, (steps, vals) in series.items():
    steps, vals = np.asarray(steps, np.float64), np.asarray(vals, np.float64)
    keep = (steps >= lo) & (steps < hi)
    out[name] = (steps[keep], vals[keep])
  return out


def _check_task_changes(result: PhaseResult, series: Series, config: PhaseConfig) -> None:
  """A log whose task changes inside the judged span is not evidence of the arc: an arc becomes outcome
  `task_change` (not detected); any other verdict gets a note. Each stage is then judged on its own
  (`stages`; an arc inside one stage is an arc on a fixed task)."""
  lo = -math.inf if result.first_step is None else result.first_step
  hi = math.inf if result.last_step is None else result.last_step
  changes = tuple(x for x in task_changes(series) if lo < x <= hi)
  result.task_changes = changes
  if not changes:
    return
  at = ", ".join(f"{x:.0f}" for x in changes)
  bounds = [lo, *changes, hi + 1]
  parts = []
  for a, b in zip(bounds[:-1], bounds[1:]):
    sub = _fit_phases(_restrict(series, a, b), config)
    parts.append(f"steps {a:.0f}-{b - 1:.0f}: {stage_summary(sub)}")
    result.stages.append({"first_step": float(a), "last_step": float(b - 1), "outcome": sub.outcome,
                          "detected": bool(sub.detected), "summary": stage_summary(sub),
                          "candidate_step": _finite_or_none(sub.tau_candidate),
                          "candidate_ci": (None if sub.ci_candidate is None
                                           or not all(map(math.isfinite, sub.ci_candidate))
                                           else [float(sub.ci_candidate[0]), float(sub.ci_candidate[1])]),
                          "delta_bic": _finite_or_none(sub.delta_bic),
                          "failed_checks": list(sub.failed_checks)})
  advice = (f"Each stage judged alone ({TASK_STAGE} changes at step {at}; any window: rldyn.phases "
            "--from_step/--until_step): " + "; ".join(parts) + ".")
  if result.detected:
    result.detected = False
    result.outcome = "task_change"
    result.confidence = 0.0
    result.reason = (f"The signals have the arc's shape (boundary at step {result.boundary_step}, interval "
                     f"{result.ci[0]}-{result.ci[1]}, dBIC = {result.delta_bic:.1f}), but the task itself "
                     f"changes during the log: a curriculum stage starts at step {at}. A new stage moves "
                     "the signals by itself (more numbers, more possible first moves), so this log cannot "
                     "tell the policy's arc from the task's change. " + advice)
    result.boundary_step, result.ci = None, None
  else:
    result.reason += f" Note: the task changes during the log (a curriculum stage starts at step {at}). {advice}"


def _fit_phases(series: Series, config: PhaseConfig) -> PhaseResult:
  """fit_phases after fallbacks are resolved."""
  fits: dict[str, SignalFit] = {}
  raw: dict[str, tuple[np.ndarray, np.ndarray]] = {}
  constant: dict[str, float] = {}
  for spec in config.signals:
    steps, vals = _clean(*series.get(spec.name, (np.zeros(0), np.zeros(0))))
    if steps.size > 1 and vals.min() == vals.max():
      constant[spec.name] = float(vals[0])
      fits[spec.name] = SignalFit(spec.name, spec.role, n=int(steps.size), missing=True,
                                  note=f"constant signal ({vals[0]:g} at all {steps.size} "
                                       "steps): carries no information")
      continue
    if steps.size == 0:
      fits[spec.name] = SignalFit(spec.name, spec.role, n=0, missing=True,
                                  note="absent from the log (or all values non-finite)")
      continue
    raw[spec.name] = (steps, vals)
    fits[spec.name] = SignalFit(spec.name, spec.role, n=int(steps.size))

  fit_names = [s.name for s in config.signals if s.role in model.FIT_ROLES and s.name in raw]
  wanted = [s.name for s in config.signals if s.role in model.FIT_ROLES]
  if not fit_names:
    if any(n in constant for n in wanted):
      consts = ", ".join(f"{n} = {constant[n]:g}" for n in wanted if n in constant)
      absent = [n for n in wanted if n not in constant]
      return _not_detected(fits, (
          f"The phase signals are constant over the log ({consts}): a constant carries no "
          "information about phases" + (f"; absent: {', '.join(absent)}" if absent else "")
          + "."))
    return _not_detected(
        fits, f"None of the phase signals ({', '.join(wanted)}) has usable values in the log.")
  all_steps = np.unique(np.concatenate([raw[n][0] for n in fit_names]))
  first, last = float(all_steps[0]), float(all_steps[-1])
  n_steps = int(all_steps.size)
  if n_steps == 1:
    return _not_detected(fits, (
        f"The log has a single usable step (step {first:g}): two phases need at least "
        f"{config.min_points} logged steps."), n_steps, first, last)
  with np.errstate(over="ignore"):
    span = float(np.float64(last) - np.float64(first))
  if not math.isfinite(span):
    return _not_detected(fits, (
        f"Step numbers run from {first:g} to {last:g}, beyond the range the detector can "
        "difference; renumber the steps."), n_steps, first, last)
  short = [n for n in fit_names if raw[n][0].size < config.min_points]
  if n_steps < config.min_points or len(short) == len(fit_names):
    return _not_detected(fits, (
        f"Too short to tell: {n_steps} usable steps (the detector needs at least "
        f"{config.min_points} per signal to fit two phases)."), n_steps, first, last)
  for n in short:
    fits[n].missing = True
    fits[n].note = f"only {raw[n][0].size} usable values (< {config.min_points}); not used"
  fit_names = [n for n in fit_names if n not in short]

  for spec in config.signals:
    if spec.role == CONTEXT and spec.name in raw and raw[spec.name][0].size < config.min_points:
      fits[spec.name].missing = True
      fits[spec.name].note = f"only {raw[spec.name][0].size} usable values; not reported"
      short.append(spec.name)
  preps = {}
  for spec in config.signals:
    if spec.name in raw and spec.name not in short:
      s, v = raw[spec.name]
      preps[spec.name] = model.prepare_signal(spec.name, spec.role, s, v, first_step=first,
                                              span=span, winsor_c=config.winsor_c,
                                              max_points=config.max_points)
      fits[spec.name].n_clipped = preps[spec.name].n_clipped
      fits[spec.name]._prep = preps[spec.name]

  # Admissible breakpoints: every fitted signal keeps enough points in each phase.
  lo, hi = 0.0, 1.0
  for n in fit_names:
    t = preps[n].t_N
    m = max(config.min_segment_points, int(math.ceil(config.min_segment_frac * t.size)))
    lo, hi = max(lo, t[m - 1]), min(hi, t[t.size - m])
  if not lo < hi:
    return _not_detected(fits, (
        f"Too short to tell: {n_steps} usable steps leave no room for two phases of at "
        f"least {config.min_segment_points} points each in every signal."), n_steps, first, last)

  kappas_of = lambda n: config.exec_kappas if preps[n].role == EXECUTION else config.rise_kappas
  coarse = np.linspace(lo, hi, config.coarse_grid + 2)[1:-1]
  ll_c = {n: model.two_regime_profile(preps[n], coarse, kappas_of(n)) for n in fit_names}
  i = int(np.argmax(sum(ll_c[n][0] for n in fit_names)))
  fine = np.linspace(coarse[max(i - 3, 0)], coarse[min(i + 3, coarse.size - 1)], config.fine_grid)
  ll_f = {n: model.two_regime_profile(preps[n], fine, kappas_of(n)) for n in fit_names}
  tau_G = np.concatenate([coarse, fine])
  order = np.argsort(tau_G, kind="stable")
  tau_G = tau_G[order]
  ll_G = {n: np.concatenate([ll_c[n][0], ll_f[n][0]])[order] for n in fit_names}
  kappa_G = {n: np.asarray(kappas_of(n), np.float64)[
      np.concatenate([ll_c[n][1], ll_f[n][1]])[order]] for n in fit_names}

  # First pass: iid likelihood; then correct each signal for residual
  # autocorrelation (phi) and, for the profile of tau, for the residual degrees
  # of freedom ((n - p) / n, p = 4 per signal: a small-sample correction).
  g0 = int(np.argmax(sum(ll_G[n] for n in fit_names)))
  phi = {n: model.two_regime_fit_at(preps[n], tau_G[g0], kappa_G[n][g0]).phi for n in fit_names}
  dof = {n: max(preps[n].n - _PARAMS_PER_SIGNAL, 1) for n in fit_names}
  prof = _Profiles(tau_G=tau_G, ll_G=ll_G, kappa_G=kappa_G, dof=dof, phi=phi,
                   own_G={n: ll_G[n] / phi[n] * dof[n] / preps[n].n for n in fit_names})
  g, ci_t, inside, thresh, joint_G = prof.interval(fit_names, config.ci_level)
  tau = float(tau_G[g])

  ones = {n: model.one_regime_fit(preps[n], model.one_regime_kappa_grid()) for n in fit_names}
  delta_ll = {n: (ll_G[n][g] - ones[n].ll) / phi[n] for n in fit_names}
  # Parameters beyond the one-regime model (level, amplitude, curvature): one
  # more coefficient per signal, plus the shared tau.
  penalty = sum(math.log(preps[n].n) for n in fit_names) + math.log(n_steps)
  delta_bic = 2.0 * sum(delta_ll.values()) - penalty
  to_step = lambda x: first + x * span
  ci_steps = (to_step(ci_t[0]), to_step(ci_t[1]))

  for n in fit_names:
    _describe(fits[n], preps[n], model.two_regime_fit_at(preps[n], tau, kappa_G[n][g]),
              ones[n], delta_ll[n], span, config)
    # Each signal's own boundary: do the signals agree on where the change is?
    j, own_ci, _, _, _ = prof.interval([n], config.ci_level)
    fits[n].boundary_alone = round(float(to_step(tau_G[j])), 1)
    fits[n].ci_alone = [round(float(to_step(x)), 1) for x in own_ci]
  _describe_context(fits, preps, config, tau, span)

  result = PhaseResult(
      detected=False, boundary_step=None, ci=None, confidence=0.0, signals=fits, reason="",
      tau_candidate=to_step(tau), ci_candidate=ci_steps, delta_bic=float(delta_bic),
      n_steps=n_steps, first_step=first, last_step=last,
      profile_steps=to_step(tau_G), profile_ll=joint_G, ll_threshold=thresh)
  at_edge = bool(inside[0] == 0 or inside[-1] == tau_G.size - 1)
  if not math.isfinite(delta_bic):
    result.delta_bic = None
    result.reason = ("The fit failed numerically (non-finite likelihood); the values may "
                     "be degenerate.")
    return result
  exe = [n for n in fit_names if preps[n].role == EXECUTION]
  plan = [n for n in fit_names if preps[n].role == PLANNING]
  overlap_ci = None
  if exe and plan:
    overlap_ci = _line_up(result, fits, preps, prof, exe, plan, ones, config, to_step)
  _decide(result, fits, fit_names, config, at_edge=at_edge)
  if overlap_ci is not None:
    # Planning turned up clearly before consolidation ended: one shared tau is
    # a compromise between the two halves, so give each half its own boundary.
    # The shared-boundary answer stands only if it is the arc and this is not.
    shared = dataclasses.replace(result, signals={n: copy.copy(f) for n, f in fits.items()})
    _decide_overlap(result, fits, preps, prof, fit_names, ones, penalty, config, to_step,
                    span, *overlap_ci)
    if shared.detected and not result.detected:
      return shared
  return result


def _describe_context(fits, preps, config: PhaseConfig, tau: float, span: float) -> None:
  """Context signals: reported at tau, not fitted jointly."""
  for spec in config.signals:
    if spec.role == CONTEXT and spec.name in preps:
      p = dataclasses.replace(preps[spec.name], role=ACCURACY)
      one = model.one_regime_fit(p, model.one_regime_kappa_grid())
      two = model.two_regime_fit_at(p, tau, 0.0)
      ll2 = float(model.loglik(float(np.sum((p.y_N - two.predict(ACCURACY, p.t_N)) ** 2)),
                               p.n, p.scale))
      _describe(fits[spec.name], p, two, one, (ll2 - one.ll) / two.phi, span, config)
      fits[spec.name].role = CONTEXT
      fits[spec.name]._prep = preps[spec.name]


def _line_up(result: PhaseResult, fits, preps, prof: _Profiles, exe: list[str],
             plan: list[str], ones, config: PhaseConfig, to_step
             ) -> tuple[int, tuple[float, float], np.ndarray, float, np.ndarray, int,
                        tuple[float, float]] | None:
  """Where each half of the arc happens on its own; fills the planning fits' overlap fields.

  The end of consolidation is the joint boundary of the execution signals
  alone; planning's turn-up is the joint boundary of the planning signals alone
  (its minimum when it dips). Returns the pieces the overlap decision needs
  when planning turns up clearly (non-overlapping intervals) before
  consolidation ends, else None.
  """
  ge, ci_e, inside_e, thresh_e, prof_e = prof.interval(exe, config.ci_level)
  gp, ci_p, inside_p, _, _ = prof.interval(plan, config.ci_level)
  tau_G = prof.tau_G
  t_end = to_step(tau_G[ge])
  result.overlap_steps = float(to_step(tau_G[ge]) - to_step(tau_G[gp]))
  for n in plan:
    f, p = fits[n], preps[n]
    f.consolidation_end_step = round(float(t_end), 1)
    f.overlap_steps = round(float(t_end - f.boundary_alone), 1)
    # Back above its earlier level: at planning's own boundary, and its range
    # over every boundary in planning's interval (each with its best curvature).
    idx = np.unique(np.append(inside_p, gp))
    betas = model.two_regime_betas(p, tau_G[idx], prof.kappa_G[n][idx])
    rec = model.recovery_times(tau_G[idx], prof.kappa_G[n][idx], betas, float(p.t_N[0]),
                               float(p.t_N[-1]))
    at = float(rec[np.searchsorted(idx, gp)])
    f.recovery_step = round(float(to_step(at)), 1) if math.isfinite(at) else None
    f.recovery_ci = [round(float(to_step(rec.min())), 1) if math.isfinite(rec.min()) else None,
                     round(float(to_step(rec.max())), 1) if math.isfinite(rec.max()) else None]
  if not ci_p[1] < ci_e[0]:
    return None
  result.overlap = True
  result.turn_up = (to_step(tau_G[gp]), to_step(ci_p[0]), to_step(ci_p[1]))
  return ge, ci_e, inside_e, thresh_e, prof_e, gp, ci_p


def _decide_overlap(result: PhaseResult, fits, preps, prof: _Profiles, fit_names: list[str],
                    ones, penalty: float, config: PhaseConfig, to_step, span: float,
                    ge: int, ci_e: tuple[float, float], inside_e: np.ndarray, thresh_e: float,
                    prof_e: np.ndarray, gp: int, ci_p: tuple[float, float]) -> None:
  """Planning turned up clearly before consolidation ended: overlap or reversed order.

  The model now has two boundaries: execution (and accuracy) change at the end
  of consolidation, planning at its own turn-up (one more parameter in dBIC).
  It is the arc -- with overlapping phases, as in HICRA's Llama runs -- when
  execution falls then flattens, planning dips significantly, rises after its
  turn-up, and is back above its earlier level no earlier than the start of
  the consolidation-end interval. If its recovery range lies entirely before
  that interval (a planning rise that comes first), the order is reversed.
  Called only when one shared boundary does not show the arc.
  """
  tau_G = prof.tau_G
  tau_e = float(tau_G[ge])
  at = {n: (gp if preps[n].role == PLANNING else ge) for n in fit_names}
  delta_ll = {n: (prof.ll_G[n][at[n]] - ones[n].ll) / prof.phi[n] for n in fit_names}
  # One more parameter than the shared-boundary model: planning's own boundary.
  delta_bic = 2.0 * sum(delta_ll.values()) - penalty - math.log(result.n_steps)
  for n in fit_names:
    two = model.two_regime_fit_at(preps[n], float(tau_G[at[n]]), prof.kappa_G[n][at[n]])
    _describe(fits[n], preps[n], two, ones[n], delta_ll[n], span, config)
  _describe_context(fits, preps, config, tau_e, span)
  result.delta_bic = float(delta_bic)
  result.tau_candidate = to_step(tau_e)
  result.ci_candidate = (to_step(ci_e[0]), to_step(ci_e[1]))
  result.profile_ll, result.ll_threshold = prof_e, thresh_e
  # The end of consolidation is the boundary; planning's turn-up is reported.
  _decide(result, fits, fit_names, config,
          at_edge=bool(inside_e[0] == 0 or inside_e[-1] == tau_G.size - 1),
          turn_up=result.turn_up)


def _crossing(x: np.ndarray, y: np.ndarray, thresh: float, i: int, direction: int) -> float:
  """Where y crosses thresh between x[i] (inside) and its outside neighbour."""
  j = i + direction
  if j < 0 or j >= x.size:
    return float(x[i])
  if y[i] == y[j]:
    return float(x[j])
  frac = (y[i] - thresh) / (y[i] - y[j])
  return float(x[i] + frac * (x[j] - x[i]))


def _describe(fit: SignalFit, prep: model.PreparedSignal, two: model.TwoRegimeFit,
              one: model.OneRegimeFit, delta_ll: float, span: float,
              config: PhaseConfig) -> None:
  """Fills slopes, t-statistics and the pattern check of one signal.

  The checks run in standardised units; reported levels, changes and slopes
  are in the log's units.
  """
  t_first, t_last = float(prep.t_N[0]), float(prep.t_N[-1])
  tau = two.tau
  x_2 = model.two_regime_design(prep.role, np.array([t_first, t_last]), np.array([tau]),
                                two.kappa)[0]
  se = np.sqrt(np.maximum(np.diag(two.cov), 0.0))
  change_before = -two.beta[1] * x_2[0, 1]
  change_after = two.beta[2] * x_2[1, 2]
  se_before, se_after = abs(x_2[0, 1]) * se[1], abs(x_2[1, 2]) * se[2]
  slope_before = change_before / (max(tau - t_first, 1e-12) * span)
  slope_after = change_after / (max(t_last - tau, 1e-12) * span)
  t_before = change_before / se_before if se_before > 0 else 0.0
  t_after = change_after / se_after if se_after > 0 else 0.0
  units = lambda v: float(prep.unit * v) if math.isfinite(prep.unit * v) else math.inf
  fit.kappa = two.kappa
  fit.level_at_boundary = float(prep.in_units(two.beta[0]))
  fit.slope_before, fit.slope_after = units(slope_before), units(slope_after)
  fit.change_before, fit.change_after = units(change_before), units(change_after)
  fit.t_before, fit.t_after = float(t_before), float(t_after)
  fit.autocorr = two.rho
  fit.delta_loglik = float(delta_ll)
  fit.one_regime = {"shape": one.shape, "kappa": one.kappa,
                    "change": units(float(np.diff(one.predict(np.array([t_first, t_last])))[0]))}
  fit._two, fit._one = two, one
  tc, fr = config.t_crit, config.flat_ratio
  if prep.role == EXECUTION:
    falls = t_before <= -tc
    flat = abs(slope_after) <= fr * abs(slope_before)
    fit.pattern_ok = bool(falls and flat)
    fit.contradicts = bool(t_before >= tc)
    fit.pattern = ("falls, then flat" if fit.pattern_ok else
                   "rises before the boundary" if fit.contradicts else
                   "does not fall significantly before the boundary" if not falls else
                   "keeps changing after the boundary (not flat)")
  elif prep.role == PLANNING:
    rises = t_after >= tc
    flat_before = slope_before <= fr * slope_after
    fit.pattern_ok = bool(rises and flat_before)
    fit.contradicts = bool(t_after <= -tc)
    fit.pattern = ("flat or dipping, then rises" if fit.pattern_ok else
                   "falls after the boundary" if fit.contradicts else
                   "does not rise significantly after the boundary" if not rises else
                   "already rises as fast before the boundary")
  else:  # accuracy (joint) or context (report only)
    fit.contradicts = bool(t_before <= -tc)
    fit.pattern_ok = not fit.contradicts
    fit.pattern = ("falls before the boundary" if fit.contradicts else
                   "does not fall before the boundary")


def _role_ok(fits: list[SignalFit]) -> bool:
  """A role passes if one of its signals shows the pattern and none contradicts it."""
  return any(f.pattern_ok for f in fits) and not any(f.contradicts for f in fits)


def _decide(result: PhaseResult, fits: dict[str, SignalFit], fit_names: list[str],
            config: PhaseConfig, at_edge: bool,
            turn_up: tuple[float, float, float] | None = None) -> None:
  """Sets detected / boundary / ci / confidence / reason from the fitted pieces.

  `turn_up` (planning's own boundary and interval, in steps) is given when
  planning turned up clearly before consolidation ended; the boundary is then
  the end of consolidation and the patterns were checked at each half's own
  boundary.
  """
  by_role = {r: [fits[n] for n in fit_names if fits[n].role == r] for r in model.FIT_ROLES}
  checks = {r: _role_ok(f) for r, f in by_role.items() if f}
  pattern_ok = all(checks.values())
  strong = result.delta_bic >= config.bic_threshold
  tau_s, (lo, hi) = result.tau_candidate, result.ci_candidate
  lo_i, hi_i = int(math.floor(lo)), int(math.ceil(hi))
  where = f"step {round(tau_s)} ({100 * config.ci_level:.0f}% interval {lo_i}-{hi_i})"
  if turn_up is not None:
    where += " (the end of consolidation)"
  evid = (f"two regimes vs the best smooth one-regime curve: dBIC = {result.delta_bic:.1f} "
          f"(threshold {config.bic_threshold:g}, autocorrelation-corrected"
          + ("; execution and planning each at their own boundary" if turn_up else "") + ")")

  def describe(role: str) -> str:
    parts = []
    for f in by_role[role]:
      parts.append(f"{f.name} {f.pattern} (slope {f.slope_before:+.3g}/step before, "
                   f"{f.slope_after:+.3g}/step after)")
    return "; ".join(parts)

  missing = []
  if not by_role[EXECUTION]:
    missing.append("no execution signal (only 'planning flat, then rising' was tested)")
  if not by_role[PLANNING]:
    missing.append("no planning signal (only 'execution falls, then flattens' was tested)")
  dropped = [f"{f.name}: {f.note}" for f in fits.values() if f.missing and f.role != CONTEXT]
  note = ""
  if missing:
    note += " Note: " + "; ".join(missing) + "."
  if dropped:
    note += " Unused: " + "; ".join(dropped) + "."

  if not strong:
    ones = "; ".join(f"{n}: {fits[n].one_regime['shape']}" for n in fit_names)
    result.confidence = (_sigmoid((result.delta_bic - config.bic_threshold) / 2)
                         if pattern_ok else 0.0)
    result.outcome = "no_change"
    result.reason = (f"A single smooth regime explains the data as well ({ones}); {evid}. "
                     f"The best two-regime split would be at step {round(tau_s)}, without "
                     "support." + note)
    return
  if not pattern_ok:
    failing = [r for r, ok in checks.items() if not ok]
    result.confidence = 0.0
    result.outcome = "wrong_shape"
    result.failed_checks = tuple(f"{f.name} {f.pattern}" for r in failing for f in by_role[r])
    result.reason = (f"A change at {where} is supported ({evid}), but it is not the arc: "
                     + "; ".join(describe(r) for r in failing) + "." + note)
    return
  plan, exe = by_role[PLANNING], by_role[EXECUTION]
  if (turn_up is None and exe and plan
      and max(f.ci_alone[1] for f in plan) < min(f.ci_alone[0] for f in exe)):
    result.confidence = 0.0
    result.outcome = "reversed"
    result.reason = (
        f"A change at {where} is supported ({evid}), but the order is reversed: planning "
        f"starts rising (alone: step {', '.join(f'{f.boundary_alone:.0f}' for f in plan)}) "
        f"before execution stops falling (alone: step "
        f"{', '.join(f'{f.boundary_alone:.0f}' for f in exe)}), with non-overlapping "
        "intervals." + note)
    return
  if turn_up is not None:
    # Planning back above its earlier level clearly before consolidation ends:
    # a planning rise that comes first, not an overlap.
    rec_hi = [f.recovery_ci[1] if f.recovery_ci else None for f in plan]
    if all(r is not None and r < lo for r in rec_hi):
      result.confidence = 0.0
      result.outcome = "reversed"
      result.reason = (
          f"A change is supported ({evid}), but the order is reversed: planning starts "
          f"rising at step {round(turn_up[0])} (interval {math.floor(turn_up[1])}-"
          f"{math.ceil(turn_up[2])}) and is above its earlier level by step "
          f"{', '.join(f'{f.recovery_step:.0f}' for f in plan if f.recovery_step is not None)}"
          f", before execution stops falling at step {round(tau_s)} (interval {lo_i}-{hi_i})"
          "; the planning rise comes first "
          "instead of following the consolidation." + note)
      return
    dipped = any(f.t_before is not None and f.t_before <= -config.t_crit for f in plan)
    late = all(f.recovery_step is None or f.recovery_step >= lo for f in plan)
    if not (dipped and late):
      result.confidence = 0.0
      why = ("without a significant dip before it" if not dipped else
             "and is back above its earlier level by step "
             + ", ".join(f"{f.recovery_step:.0f}" for f in plan if f.recovery_step is not None)
             + ", before the consolidation interval starts")
      result.outcome = "unclear"
      result.reason = (
          f"A change is supported ({evid}), but the order is unclear: planning turns up at "
          f"step {round(turn_up[0])} (interval {math.floor(turn_up[1])}-"
          f"{math.ceil(turn_up[2])}), before execution stops falling at {where}, {why}; "
          "neither one phase after the other nor a clear overlap." + note)
      return
  # The arc's second half is planning diversity rising *above its earlier level*: a planning signal that
  # dipped and is not back above where it started by the end of the log has not shown it (yet).
  not_back = [f for f in plan if f.recovery_ci is not None and f.recovery_step is None]
  if not_back:
    result.confidence = 0.0
    result.outcome = "wrong_shape"
    result.failed_checks = tuple(f"{f.name} is not back above its earlier level" for f in not_back)
    result.reason = (
        f"A change at {where} is supported ({evid}) and execution consolidates, but it is not the arc "
        "(yet): " + "; ".join(f"{f.name} turns up at step {f.boundary_alone:.0f} but is not back above "
                              "its earlier level by the end of the log" for f in not_back)
        + "." + note)
    return
  result.detected = True
  result.outcome = "arc"
  result.confidence = _sigmoid((result.delta_bic - config.bic_threshold) / 2)
  result.boundary_step = int(round(tau_s))
  result.ci = (lo_i, hi_i)
  shown = [describe(r) for r in (EXECUTION, PLANNING, ACCURACY) if by_role[r]]
  edge = (" The interval reaches the edge of the admissible range, so the boundary is "
          "poorly determined." if at_edge else "")
  if turn_up is None:
    apart = [f"{fits[n].name} alone puts it at step {fits[n].boundary_alone:.0f}"
             for n in fit_names if not fits[n].ci_alone[0] <= tau_s <= fits[n].ci_alone[1]]
    if apart:
      edge += (" The signals disagree on where (" + "; ".join(apart) + "): the shared "
               "boundary is a compromise, and the phases may overlap or leave a gap.")
  result.reason = (f"Boundary at {where}: " + "; ".join(shown) + f". {evid[0].upper()}{evid[1:]}."
                   + _overlap_text(result, plan) + edge + note)


def _overlap_text(result: PhaseResult, plan: list[SignalFit]) -> str:
  """How the two halves line up, for a detected arc with both halves fitted."""
  if not plan or result.overlap_steps is None:
    return ""
  f = plan[0]
  back = (f"is back above its earlier level by step {f.recovery_step:.0f}"
          if f.recovery_step is not None else
          "has not yet got back above its earlier level by the last step")
  if result.overlap:
    up = result.turn_up
    return (f" The phases overlap by {result.overlap_steps:.0f} steps: planning turns up "
            f"at step {round(up[0])} (interval {math.floor(up[1])}-{math.ceil(up[2])}), "
            f"before execution stops falling, and {back}.")
  ov = round(result.overlap_steps)
  how = (f"turns up {ov} steps before" if ov > 0 else
         f"turns up {-ov} steps after" if ov < 0 else "turns up where")
  return (f" On their own, planning {how} execution stops falling (within the intervals); "
          f"it {back}.")


def _sigmoid(x: float) -> float:
  if not math.isfinite(x):
    return 0.0 if x != math.inf else 1.0
  return 1.0 / (1.0 + math.exp(-max(min(x, 700.0), -700.0)))
