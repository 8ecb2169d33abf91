"""Tests for rldyn.phases: a small synthetic bank with known boundaries, nulls, edge cases."""
import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from rldyn import phases
from rldyn.phases import OnlinePhaseDetector, PhaseConfig, SignalSpec, detect, fit_phases
from rldyn.phases.synthetic import make_log

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PLAN = "semantic_entropy/planning"
_EXEC = "entropy/execution"


def _run_module(*args, cwd=None):
  env = dict(os.environ, PYTHONPATH=_REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                        cwd=cwd or _REPO, timeout=120, check=False)


# ----------------------------------------------------------------------------- the bank


def test_arc_bank_error_coverage_and_power():
  rows = []
  for shape in ("linear", "exp", "dip"):
    for length in (80, 400):
      for spacing in ("regular", "uneven"):
        for seed in range(3):
          recs, tau = make_log(length, shape=shape, noise=0.15, spacing=spacing,
                               tail_df=3.0 if seed == 2 else None, seed=100 + seed)
          r = detect(recs)
          rows.append((r.detected, abs(r.tau_candidate - tau) / length,
                       r.ci is not None and r.ci[0] <= tau <= r.ci[1]))
  det = [r for r in rows if r[0]]
  power = len(det) / len(rows)
  median_err = float(np.median([r[1] for r in det]))
  coverage = float(np.mean([r[2] for r in det]))
  assert power >= 0.85, power
  assert median_err <= 0.05, median_err
  assert coverage >= 0.8, coverage


@pytest.mark.parametrize("shape", ["decay", "noise", "rise", "decay_rise"])
def test_null_bank_says_no(shape):
  calls = []
  for length in (40, 120, 400):
    for seed in range(4):
      recs, _ = make_log(length, shape=shape, noise=(0.05, 0.15, 0.3)[seed % 3],
                         spacing="uneven" if seed == 3 and length > 40 else "regular",
                         seed=200 + seed)
      r = detect(recs)
      calls.append(r.detected)
      if not r.detected:
        assert r.boundary_step is None and r.ci is None and r.reason
  assert np.mean(calls) <= 0.1, calls


def test_low_noise_boundary_is_precise_and_confident():
  recs, tau = make_log(500, shape="linear", noise=0.05, tau_frac=0.4, seed=3)
  r = detect(recs)
  assert r.detected and r.confidence > 0.99
  assert abs(r.boundary_step - tau) <= 5
  assert r.ci[0] <= tau <= r.ci[1] and r.ci[1] - r.ci[0] <= 25
  sig = r.signals[_EXEC]
  assert sig.slope_before < 0 and abs(sig.slope_after) < 0.1 * abs(sig.slope_before)
  assert r.signals[_PLAN].slope_after > 0
  assert "Boundary at step" in r.reason


def test_ruptures_agrees_on_single_signal():
  rpt = pytest.importorskip("ruptures")
  n = 200
  x = np.arange(n, dtype=float)
  ours_err, rpt_err = [], []
  for role, name in (("planning", _PLAN), ("execution", _EXEC)):
    cfg = PhaseConfig(signals=(SignalSpec(name, role),))
    for seed in range(4):
      rng = np.random.default_rng(seed)
      tau = rng.uniform(60, 140)
      y = (np.maximum(x - tau, 0) / (n - tau) if role == "planning"
           else np.maximum(tau - x, 0) / tau) + 0.05 * rng.standard_normal(n)
      bkp = rpt.Dynp(model="linear", min_size=5, jump=1).fit(
          np.column_stack([y, x / n, np.ones(n)])).predict(n_bkps=1)[0]
      r = fit_phases({name: (x, y)}, cfg)
      assert r.detected
      assert abs(r.tau_candidate - bkp) <= 0.06 * n, (role, tau, r.tau_candidate, bkp)
      ours_err.append(abs(r.tau_candidate - tau))
      rpt_err.append(abs(bkp - tau))
  # The continuous two-regime model should be at least as accurate as ruptures'
  # discontinuous piecewise-linear cost on continuous-kink data.
  assert np.mean(ours_err) <= np.mean(rpt_err) + 1.0


# ----------------------------------------------------------------------------- the contract


def test_phases_json_schema_exact():
  for recs in (make_log(300, shape="linear", seed=1)[0], make_log(300, shape="noise", seed=1)[0],
               make_log(8, shape="linear", seed=1)[0], []):
    out = detect(recs).to_json()
    assert set(out) == {"detected", "boundary_step", "ci", "confidence", "signals", "reason",
                        "candidate_step", "candidate_ci", "delta_bic", "overlap_steps", "outcome",
                        "failed_checks", "task_changes", "stages"}
    json.dumps(out, allow_nan=False)  # strict JSON: no NaN/inf anywhere
    assert isinstance(out["detected"], bool) and isinstance(out["reason"], str) and out["reason"]
    assert 0.0 <= out["confidence"] <= 1.0
    if out["detected"]:
      assert isinstance(out["boundary_step"], int)
      lo, hi = out["ci"]
      assert isinstance(lo, int) and lo <= out["boundary_step"] <= hi
    else:
      assert out["boundary_step"] is None and out["ci"] is None
    assert all(isinstance(v, dict) for v in out["signals"].values())


def test_short_empty_and_degenerate_inputs_do_not_crash():
  assert "short" in detect(make_log(10, seed=0)[0]).reason.lower()
  assert not detect([]).detected
  nan_recs = [(i, {_EXEC: float("nan"), _PLAN: None}) for i in range(100)]
  r = detect(nan_recs)
  assert not r.detected and "usable" in r.reason
  const = [(i, {_EXEC: 0.5, _PLAN: 1.0}) for i in range(100)]
  r = detect(const)
  assert not r.detected and r.signals[_EXEC].missing and "constant" in r.signals[_EXEC].note
  same_step = [(5, {_EXEC: float(i), _PLAN: float(-i)}) for i in range(50)]
  assert not detect(same_step).detected


def test_missing_planning_detects_on_execution_and_says_so():
  recs, tau = make_log(400, shape="linear", noise=0.1, planning=False, seed=4)
  r = detect(recs)
  assert r.detected and abs(r.boundary_step - tau) <= 0.05 * 400
  assert r.signals["strategy/entropy"].missing  # neither the default planning signal nor its fallback
  assert "no planning signal" in r.reason


def test_change_in_wrong_direction_is_not_the_arc():
  x = np.arange(300.0)
  rng = np.random.default_rng(0)
  rises_then_flat = np.minimum(x, 150) / 150 + 0.05 * rng.standard_normal(300)
  falls_after = -np.maximum(x - 150, 0) / 150 + 0.05 * rng.standard_normal(300)
  r = fit_phases({_EXEC: (x, rises_then_flat), _PLAN: (x, falls_after)})
  assert r.delta_bic > PhaseConfig().bic_threshold  # a change is real...
  assert not r.detected and r.confidence == 0.0      # ...but it is not the arc
  assert "not the arc" in r.reason and r.outcome == "wrong_shape" and r.failed_checks


@pytest.mark.parametrize("exec_end,plan_start,detected,phrase", [
    (180, 420, True, "disagree"),   # consolidation ends, a gap, then planning rises
    (420, 180, False, "reversed"),  # planning rises long before execution stops falling
])
def test_order_of_the_two_halves(exec_end, plan_start, detected, phrase):
  x = np.arange(600.0)
  rng = np.random.default_rng(0)
  e = np.maximum(exec_end - x, 0) / exec_end + 0.1 * rng.standard_normal(600)
  p = np.maximum(x - plan_start, 0) / (600 - plan_start) + 0.1 * rng.standard_normal(600)
  r = fit_phases({_EXEC: (x, e), _PLAN: (x, p)})
  assert r.detected == detected and phrase in r.reason
  assert r.outcome == ("arc" if detected else "reversed")
  assert abs(r.signals[_EXEC].boundary_alone - exec_end) <= 25
  assert abs(r.signals[_PLAN].boundary_alone - plan_start) <= 25


def test_messy_records_match_clean_ones():
  recs, _ = make_log(300, shape="dip", noise=0.1, missing_frac=0.0, seed=5)
  clean = detect(recs)
  messy = [(s, dict(m)) for s, m in recs]
  for i in range(0, 300, 17):
    messy[i][1][_EXEC] = float("inf")
    messy[i][1][_PLAN] = "n/a"
  messy.append((10_000_000, {_EXEC: float("nan")}))   # a junk step with nothing usable
  messy.append((float("nan"), {_EXEC: 1.0}))          # a step that is not a number
  messy.extend(messy[50:60])                           # replayed steps after a resume
  messy = messy[::-1]                                  # any order
  r = detect(messy)
  assert r.detected and abs(r.boundary_step - clean.boundary_step) <= 3


def test_outliers_are_winsorised():
  recs, tau = make_log(300, shape="linear", noise=0.1, missing_frac=0.0, seed=6)
  rng = np.random.default_rng(0)
  for i in rng.choice(300, 6, replace=False):
    recs[i][1][_EXEC] = 1e3 * (1 if i % 2 else -1)
    recs[i][1][_PLAN] = -1e3
  r = detect(recs)
  assert r.detected and abs(r.boundary_step - tau) <= 0.05 * 300
  assert r.signals[_EXEC].n_clipped >= 6


def test_equivariant_in_steps_and_invariant_to_value_scale():
  recs, _ = make_log(200, shape="linear", noise=0.1, spacing="uneven", seed=7)
  base = detect(recs)
  moved = detect([(3 * s + 1000, {k: (None if v is None else 5.0 * v - 2.0) for k, v in m.items()})
                  for s, m in recs])
  assert moved.detected == base.detected
  assert moved.tau_candidate == pytest.approx(3 * base.tau_candidate + 1000, abs=1e-6)
  assert moved.delta_bic == pytest.approx(base.delta_bic, rel=1e-6, abs=1e-6)


def test_deterministic():
  recs, _ = make_log(500, shape="exp", noise=0.2, tail_df=3.0, seed=8)
  assert json.dumps(detect(recs).to_json()) == json.dumps(detect(recs).to_json())


def test_ten_thousand_steps():
  """A long log is binned for the grid search and still finds τ (speed: benchmarks/bench_phases.py)."""
  recs, tau = make_log(10_000, shape="exp", noise=0.2, seed=9)
  r = detect(recs)
  assert r.detected and abs(r.boundary_step - tau) <= 0.02 * 10_000


# ----------------------------------------------------------------------------- online


def test_online_emits_once_after_the_boundary():
  recs, tau = make_log(600, shape="linear", noise=0.15, seed=10)
  det = OnlinePhaseDetector(refit_every=20, patience=2)
  events = []
  for step, m in recs:
    ev = det.update(step, m)
    if ev is not None:
      events.append(ev)
  assert len(events) == 1, events
  ev = events[0]
  assert ev["event"] == "phase_boundary" and ev["step"] > tau
  assert ev["ci"][0] <= ev["boundary_step"] <= ev["ci"][1]
  assert abs(ev["boundary_step"] - tau) <= 0.05 * 600
  assert 0.5 <= ev["confidence"] <= 1.0
  json.dumps(ev, allow_nan=False)


def test_online_silent_on_null_and_after_warm_start():
  recs, _ = make_log(400, shape="decay_rise", noise=0.15, seed=11)
  det = OnlinePhaseDetector(refit_every=10)
  assert all(det.update(s, m) is None for s, m in recs)
  arc, _ = make_log(600, shape="dip", noise=0.1, seed=12)
  resumed = OnlinePhaseDetector(refit_every=10)
  resumed.warm_start(arc[:450])   # the crossing is already in the history
  assert resumed.latched
  assert all(resumed.update(s, m) is None for s, m in arc[450:])


def test_online_hysteresis_releases_and_rearms():
  det = OnlinePhaseDetector(refit_every=1, patience=2)
  calls = iter([True, False, True, True, True, False, False, True, True])

  class Fake:
    def __init__(self, on):
      self.detected, self.confidence = on, 0.99 if on else 0.0
      self.boundary_step, self.ci, self.delta_bic, self.reason = 5, (4, 6), 20.0, "r"

  det.result = lambda: Fake(next(calls))  # type: ignore[method-assign]
  emitted = [det.update(i, {}) is not None for i in range(9)]
  # on at the 2nd consecutive True (index 3); released after two False; re-armed at index 8.
  assert emitted == [False, False, False, True, False, False, False, False, True]


# ----------------------------------------------------------------------------- io and CLI


def test_read_metrics_jsonl_and_foreign_csv(tmp_path):
  p = tmp_path / "m.jsonl"
  p.write_text('{"step": 1, "entropy/execution": NaN, "accuracy": null}\n'
               '{"step": 2, "entropy/execution": 0.5, "accuracy": Infinity}\n'
               '\n["not", "a", "dict"]\n'
               '{"entropy/execution": 0.1}\n'
               '{"step": 3, "entropy/exec')
  log = phases.read_metrics(str(p), names=[_EXEC, "accuracy"])
  assert [s for s, _ in log.records] == [1, 2]
  assert log.bad_lines == 2 and log.no_step == 1
  assert math.isnan(log.records[0][1][_EXEC]) and log.records[1][1][_EXEC] == 0.5
  q = tmp_path / "other.csv"
  with open(q, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["global_step", "ent_exec", "se_plan"])
    w.writerow([10, "0.4", ""])
    w.writerow([20, "nan", "1.5"])
  keys = phases.parse_keys("step=global_step, entropy/execution=ent_exec,"
                           "semantic_entropy/planning=se_plan")
  log = phases.read_metrics(str(q), keys=keys, names=[_EXEC, _PLAN])
  assert [s for s, _ in log.records] == [10, 20]
  assert log.records[0][1][_EXEC] == 0.4 and math.isnan(log.records[0][1][_PLAN])
  assert phases.parse_keys('{"step": "it"}') == {"step": "it"}
  with pytest.raises(ValueError):
    phases.parse_keys("no_equals_sign")


def test_cli_workdir_and_foreign_log(tmp_path):
  recs, tau = make_log(300, shape="linear", noise=0.1, seed=13)
  wd = tmp_path / "run"
  wd.mkdir()
  with open(wd / "metrics.jsonl", "w") as f:
    for s, m in recs:
      f.write(json.dumps({"step": s, **m}) + "\n")
    f.write('{"step": 301, "entropy/exe')  # torn last line
  proc = _run_module("-m", "rldyn.phases", f"--workdir={wd}")
  assert proc.returncode == 0, proc.stderr
  out = json.loads((wd / "phases.json").read_text())
  assert out["detected"] and abs(out["boundary_step"] - tau) <= 15
  assert (wd / "phases.png").stat().st_size > 10_000
  assert "DETECTED" in proc.stdout and "unparsable" in proc.stdout
  # A foreign CSV with other names, no plot, output elsewhere.
  csv_path = tmp_path / "foreign.csv"
  with open(csv_path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["it", "H_exec", "SE_plan"])
    for s, m in recs:
      w.writerow([s, m[_EXEC], m[_PLAN]])
  out_dir = tmp_path / "out"
  proc = _run_module("-m", "rldyn.phases", f"--metrics={csv_path}", f"--out_dir={out_dir}",
                     "--keys=step=it,entropy/execution=H_exec,semantic_entropy/planning=SE_plan",
                     "--noplot")
  assert proc.returncode == 0, proc.stderr
  out2 = json.loads((out_dir / "phases.json").read_text())
  assert out2["detected"] and abs(out2["boundary_step"] - out["boundary_step"]) <= 3
  assert not (out_dir / "phases.png").exists()
  assert _run_module("-m", "rldyn.phases").returncode != 0  # neither --workdir nor --metrics


def test_library_never_imports_jax():
  code = ("import sys; import rldyn.phases, rldyn.phases.plot, rldyn.phases.synthetic; "
          "assert 'jax' not in sys.modules and 'matplotlib' not in sys.modules, 'heavy import'")
  proc = _run_module("-c", code)
  assert proc.returncode == 0, proc.stderr


def test_display_smoothing_is_centred_and_fit_uses_raw_values():
  from rldyn.phases import model  # pylint: disable=g-import-not-at-top
  v = np.abs(np.arange(101.0) - 50.0)
  for window in (5, 21, 51):
    smooth = model.running_median(v, window)
    lowest = np.nonzero(smooth == smooth.min())[0]
    assert np.allclose(smooth, smooth[::-1]) and lowest.mean() == 50  # the kink stays put
  # Winsorisation leaves Gaussian-noise data (almost) untouched.
  rng = np.random.default_rng(0)
  y = rng.standard_normal(1000)
  prep = model.prepare_signal("s", "planning", np.arange(1000.0), y, first_step=0.0,
                              span=999.0, winsor_c=3.0, max_points=1000)
  assert prep.n_clipped <= 10 and np.array_equal(prep.t_M, prep.t_N)


def test_accuracy_role_and_step_from_line_order(tmp_path):
  recs, tau = make_log(300, shape="linear", noise=0.1, seed=14)
  cfg = PhaseConfig(signals=tuple(SignalSpec(s.name, "accuracy" if s.name == "accuracy" else s.role)
                                  for s in PhaseConfig().signals))
  r = detect(recs, cfg)
  assert r.detected and r.signals["accuracy"].role == "accuracy"
  assert r.signals["accuracy"].slope_before > 0 and abs(r.boundary_step - tau) <= 15
  p = tmp_path / "nostep.jsonl"
  p.write_text("".join(json.dumps(m) + "\n" for _, m in recs))
  log = phases.read_metrics(str(p), names=[_EXEC])
  assert log.step_from_index and [s for s, _ in log.records[:3]] == [0, 1, 2]


def test_planning_signal_is_strategy_entropy_with_a_fallback_for_old_logs():
  """The default planning signal is strategy/entropy; a log without it is read through
  semantic_entropy/planning (same fit, keyed by the name read, with a note); the online detector too."""
  recs, tau = make_log(300, shape="linear", noise=0.1, seed=2)
  old = detect(recs)  # make_log writes semantic_entropy/planning only
  assert old.detected and "strategy/entropy" not in old.signals
  assert "read in place of strategy/entropy" in old.signals[_PLAN].note
  new_recs = [(s, {**{k: v for k, v in m.items() if k != _PLAN}, "strategy/entropy": m[_PLAN]})
              for s, m in recs]
  new = detect(new_recs)
  assert new.signals["strategy/entropy"].note == "" and _PLAN not in new.signals
  assert new.boundary_step == old.boundary_step and new.ci == old.ci
  # Both present: the new signal is read, the old one ignored (even when it says something else).
  both = detect([(s, {**m, _PLAN: 1.0 + 0.001 * s}) for s, m in new_recs])
  assert both.boundary_step == new.boundary_step and _PLAN not in both.signals
  online = phases.OnlinePhaseDetector(refit_every=50)
  for s, m in recs:
    online.update(s, m)
  assert online.last_result is not None and _PLAN in online.last_result.signals


def test_true_role_execution_signal_replaces_the_taggers():
  """A placebo run logs entropy/* on its random mask and truth/entropy/execution on the true roles: the
  detector reads the latter in place of both tagger execution signals and says so."""
  recs, tau = make_log(500, shape="linear", noise=0.05, tau_frac=0.4, seed=3)
  plain = detect(recs)
  rng = np.random.default_rng(0)
  masked = [(t, {**r, "truth/entropy/execution": r["entropy/execution"],
                 "entropy/execution": 0.5 + 0.01 * rng.standard_normal(),  # a chance-level mask: flat
                 "ppl/execution_rel": 1.0 + 0.01 * rng.standard_normal()}) for t, r in recs]
  r = detect(masked)
  assert r.detected and r.boundary_step == plain.boundary_step
  assert "entropy/execution" not in r.signals and "ppl/execution_rel" not in r.signals
  note = r.signals["truth/entropy/execution"].note
  assert "in place of entropy/execution and ppl/execution_rel" in note
  assert not detect([(t, {k: v for k, v in m.items() if k != "truth/entropy/execution"})
                     for t, m in masked]).detected


def test_cli_until_step_and_a_placebo_log(tmp_path):
  """`--until_step` judges a run as of that step; a log with truth/entropy/execution goes through the CLI
  (the reader and the report index the replaced signals correctly)."""
  recs, tau = make_log(400, shape="linear", noise=0.05, tau_frac=0.5, seed=3)
  rng = np.random.default_rng(1)
  path = tmp_path / "metrics.jsonl"
  with open(path, "w") as f:
    for t, r in recs:
      f.write(json.dumps({"step": t, **r, "truth/entropy/execution": r["entropy/execution"],
                          "entropy/execution": 0.5 + 0.01 * rng.standard_normal()}) + "\n")
  full = _run_module("-m", "rldyn.phases", "--workdir", str(tmp_path), "--noplot")
  assert full.returncode == 0, full.stderr
  out = json.loads((tmp_path / "phases.json").read_text())
  assert out["detected"] and "truth/entropy/execution" in out["signals"]
  early = _run_module("-m", "rldyn.phases", "--workdir", str(tmp_path), "--noplot", "--until_step", str(int(tau) - 20),
                      "--out_dir", str(tmp_path / "early"))
  assert early.returncode == 0, early.stderr
  cut = json.loads((tmp_path / "early" / "phases.json").read_text())
  n_cut, n_full = (d["signals"]["truth/entropy/execution"]["n"] for d in (cut, out))
  assert not cut["detected"] and n_cut <= int(tau) - 19 < n_full  # steps 0 .. tau - 20 only


def test_a_task_change_inside_the_log_is_not_the_arc(tmp_path):
  """A curriculum stage change inside the judged span turns an arc into outcome task_change (a new stage
  moves the signals by itself); a constant stage changes nothing; a non-arc verdict gets a note; the
  online detector judges what it has seen; --from_step/--until_step judge one stage on its own."""
  recs, tau = make_log(400, shape="linear", noise=0.05, tau_frac=0.5, seed=3)
  plain = detect(recs)
  assert plain.detected and plain.task_changes == ()
  same = detect([(t, {**r, "curriculum/stage": 0.0}) for t, r in recs])
  assert same.detected and same.to_json()["task_changes"] == []
  staged = [(t, {**r, "curriculum/stage": float(t >= 250)}) for t, r in recs]
  res = detect(staged)
  assert not res.detected and res.outcome == "task_change" and res.task_changes == (250.0,)
  assert res.boundary_step is None and res.ci is None and res.confidence == 0.0
  assert res.tau_candidate == pytest.approx(plain.tau_candidate)
  assert "a curriculum stage starts at step 250" in res.reason and "--from_step" in res.reason
  out = res.to_json()
  json.dumps(out, allow_nan=False)
  assert out["task_changes"] == [250.0] and out["candidate_step"] is not None
  from rldyn import compare
  cell = compare.phase_verdict(compare.Run("x", {}, [], [], [], out, None, []))
  assert cell.startswith("no verdict: the arc's shape at ") and "the task changes at step 250 (curriculum)" in cell
  # a change outside the judged span (before the first fitted step) is not counted
  assert detect([(t, r) for t, r in staged if t >= 260]).task_changes == ()
  # each stage judged alone: stage 0 (steps 0-249) holds the whole arc, stage 1 (250-399) none of it
  first, second = out["stages"]
  assert (first["first_step"], first["last_step"], second["first_step"]) == (0.0, 249.0, 250.0)
  assert first["outcome"] == "arc" and first["detected"] and second["outcome"] != "arc"
  alone = detect([(t, r) for t, r in recs if t < 250])
  assert first["candidate_step"] == pytest.approx(alone.tau_candidate)
  assert first["summary"].startswith(f"arc at {alone.tau_candidate:.0f} [") and "steps 0-249: arc at" in res.reason
  assert " — each stage alone: 0-249: arc at " in cell
  # a non-arc verdict keeps its outcome and gets the note
  noise = [(t, {**r, "curriculum/stage": float(t >= 100)}) for t, r in make_log(300, shape="noise", seed=1)[0]]
  nres = detect(noise)
  assert nres.outcome == "no_change" and "the task changes during the log" in nres.reason
  assert [st["first_step"] for st in nres.stages] == [0.0, 100.0]
  assert all(st["outcome"] == "no_change" for st in nres.stages)
  # online: within stage 0 (steps 0-249, boundary ~200) the arc is the arc; once the log spans the stage
  # change the answer is task_change, as offline
  online = OnlinePhaseDetector(PhaseConfig(), refit_every=25)
  events = [(t, e) for t, r in staged if (e := online.update(t, r))]
  assert [t for t, _ in events] == [249] and online.result().outcome == "task_change"
  # the CLI: judging the first stage alone (--until_step) or the second (--from_step) drops the change
  path = tmp_path / "metrics.jsonl"
  with open(path, "w") as f:
    for t, r in staged:
      f.write(json.dumps({"step": t, **r}) + "\n")
  whole = _run_module("-m", "rldyn.phases", "--workdir", str(tmp_path), "--noplot")
  assert whole.returncode == 0, whole.stderr
  assert json.loads((tmp_path / "phases.json").read_text())["outcome"] == "task_change"
  first = _run_module("-m", "rldyn.phases", "--workdir", str(tmp_path), "--noplot", "--until_step", "249",
                      "--out_dir", str(tmp_path / "s0"))
  assert first.returncode == 0, first.stderr
  s0 = json.loads((tmp_path / "s0" / "phases.json").read_text())
  assert s0["task_changes"] == [] and s0["outcome"] == "arc" and s0["stages"] == []
  second = _run_module("-m", "rldyn.phases", "--workdir", str(tmp_path), "--noplot", "--from_step", "250",
                       "--out_dir", str(tmp_path / "s1"))
  assert second.returncode == 0, second.stderr
  s1 = json.loads((tmp_path / "s1" / "phases.json").read_text())
  from rldyn.phases.detect import finite_float
  n_late = sum(t >= 250 and finite_float(r.get("entropy/execution")) is not None for t, r in staged)
  assert s1["task_changes"] == [] and s1["signals"]["entropy/execution"]["n"] == n_late < 150
