"""Overlapping phases are the arc (HICRA: planning dips, then rises, from mid-consolidation)."""
import json

import numpy as np

from rldyn.phases import detect, fit_phases, model
from rldyn.phases.synthetic import make_log

_EXEC = "entropy/execution"
_PLAN = "semantic_entropy/planning"


def test_dip_then_rise_from_mid_consolidation_is_detected():
  # The tracker's bank: 12 logs, 2 lengths x 2 spacings x 3 seeds (one heavy-tailed);
  # the detector used to say "order reversed" on 9 of them.
  hits, errs = 0, []
  for length in (80, 400):
    for spacing in ("regular", "uneven"):
      for seed in range(3):
        recs, tau = make_log(length, shape="overlap", noise=0.15, spacing=spacing,
                             tail_df=3.0 if seed == 2 else None, seed=100 + seed)
        r = detect(recs)
        hits += r.detected
        if r.detected:
          errs.append(abs(r.boundary_step - tau) / length)
  assert hits >= 11, hits
  assert np.median(errs) <= 0.05, errs  # the boundary is the end of consolidation


def test_overlap_is_measured_and_reported():
  length, tau_frac = 400, 0.5
  recs, tau = make_log(length, shape="overlap", noise=0.05, tau_frac=tau_frac, seed=7)
  r = detect(recs)
  assert r.detected and r.overlap
  plan = r.signals[_PLAN]
  exe_end = plan.consolidation_end_step
  assert abs(exe_end - tau) <= 0.03 * length
  assert abs(r.boundary_step - tau) <= 0.03 * length
  # Planning's own turn-up is its minimum, well inside the consolidation.
  assert 0.3 * tau - 10 <= plan.boundary_alone <= 0.7 * tau + 10
  assert plan.overlap_steps == round(exe_end - plan.boundary_alone, 1)
  assert plan.overlap_steps > 0.2 * tau
  # Back above its starting level just after consolidation ends (0-10 % of the run later).
  assert tau - 0.03 * length <= plan.recovery_step <= tau + 0.13 * length
  lo, hi = plan.recovery_ci
  assert lo <= plan.recovery_step <= hi
  out = r.to_json()
  json.dumps(out, allow_nan=False)
  assert set(out) == {"detected", "boundary_step", "ci", "confidence", "signals", "reason",
                      "candidate_step", "candidate_ci", "delta_bic", "overlap_steps", "outcome",
                      "failed_checks", "task_changes", "stages"}
  assert out["overlap_steps"] == r.overlap_steps and out["overlap_steps"] > 0
  assert out["outcome"] == "arc" and out["failed_checks"] == []
  sig = out["signals"][_PLAN]
  for key in ("consolidation_end_step", "overlap_steps", "recovery_step", "recovery_ci"):
    assert sig[key] is not None, key
  assert f"overlap by {r.overlap_steps:.0f} steps" in r.reason
  assert "end of consolidation" in r.reason


def test_a_planning_rise_that_comes_first_is_still_no():
  x = np.arange(600.0)
  rng = np.random.default_rng(1)
  e = np.maximum(420 - x, 0) / 420 + 0.1 * rng.standard_normal(600)
  # Planning dips a little, then rises from step 150: above its earlier level by ~170,
  # long before execution stops falling at 420.
  p = (np.where(x < 150, -0.05 * x / 150, -0.05 + (x - 150) / 450)
       + 0.1 * rng.standard_normal(600))
  r = fit_phases({_EXEC: (x, e), _PLAN: (x, p)})
  assert not r.detected and r.confidence == 0.0
  assert "order is reversed" in r.reason and r.outcome == "reversed"
  plan = r.signals[_PLAN]
  assert plan.recovery_ci[1] < 380 and plan.overlap_steps > 200


def test_sequential_arc_reports_its_line_up_without_calling_it_overlap():
  recs, tau = make_log(400, shape="linear", noise=0.05, tau_frac=0.4, seed=3)
  r = detect(recs)
  assert r.detected and not r.overlap
  plan = r.signals[_PLAN]
  assert abs(plan.overlap_steps) <= 0.05 * 400  # both halves change at tau
  assert "The phases overlap" not in r.reason and "On their own" in r.reason


def test_recovery_times_by_hand():
  # Planning curve at tau = 0.4 (linear rise, kappa = 0): level 0 at tau, slope
  # before -1 (so it was 0.4 higher at t = 0: a dip), slope after 2.
  # It is back at 0.4 when 2 (t - 0.4) = 0.4, i.e. t = 0.6.
  tau_G, kappa_G = np.array([0.4]), np.array([0.0])
  beta = np.array([[0.0, -1.0, 2.0]])  # [level at tau, coefficient of min(t - tau, 0), slope]
  t = model.recovery_times(tau_G, kappa_G, beta, 0.0, 1.0, points=6001)
  assert abs(t[0] - 0.6) <= 1e-3
  # No dip (rising before): the earlier level is the level at tau, recovered at once.
  assert model.recovery_times(tau_G, kappa_G, np.array([[0.0, 0.5, 2.0]]), 0.0, 1.0)[0] \
      <= 0.4 + 1e-2
  # A dip it never climbs out of within the run.
  assert np.isinf(model.recovery_times(tau_G, kappa_G, np.array([[0.0, -1.0, 0.1]]), 0.0, 1.0)[0])


def test_a_rise_that_ends_below_the_earlier_level_is_not_the_arc_yet():
  """Execution consolidates; planning dips, turns up after, but ends below where it started."""
  x = np.arange(400.0)
  rng = np.random.default_rng(2)
  e = np.maximum(200 - x, 0) / 200 + 0.03 * rng.standard_normal(400)
  p = np.where(x < 200, -x / 200, -1.0 + 0.5 * (x - 200) / 200) + 0.03 * rng.standard_normal(400)
  r = fit_phases({_EXEC: (x, e), _PLAN: (x, p)})
  assert not r.detected and r.outcome == "wrong_shape" and r.confidence == 0.0
  assert r.failed_checks == (f"{_PLAN} is not back above its earlier level",)
  assert "not back above its earlier level by the end of the log" in r.reason
  assert r.signals[_PLAN].recovery_step is None
  # The same rise continued until it is back above its start: the arc.
  x2 = np.arange(800.0)
  e2 = np.maximum(200 - x2, 0) / 200 + 0.03 * rng.standard_normal(800)
  p2 = np.where(x2 < 200, -x2 / 200, -1.0 + 0.5 * (x2 - 200) / 200) + 0.03 * rng.standard_normal(800)
  r2 = fit_phases({_EXEC: (x2, e2), _PLAN: (x2, p2)})
  assert r2.detected and r2.outcome == "arc" and r2.signals[_PLAN].recovery_step is not None
