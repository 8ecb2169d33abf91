"""Benchmark of rldyn.phases on synthetic logs with a known boundary.

    python benchmarks/bench_phases.py            # full bank (~2-3 min on 2 cores)
    python benchmarks/bench_phases.py --reps=2   # quicker

Prints, for arc logs (boundary known): power (fraction detected), median and 90th
percentile |tau_hat - tau| as % of the run length, and coverage of the 95 %
interval, by noise level, length, shape, spacing and tails; the detection rate
of every synthetic family (arc shapes, including `overlap`, whose planning
signal dips and rises again from mid-consolidation; tau is the end of
consolidation) on the whole bank and on the tracker's 12-log bank; for
one-regime logs (pure decay, pure noise, monotone rise, decay + rise) the
false-positive rate;
AR(1) noise and a missing planning signal separately; the ruptures cross-check;
the time of one fit on a 10,000-step log and the online detector's cost per update.
Noise is the standard deviation relative to each signal's total change (1.0).
"""
import argparse
import dataclasses
import multiprocessing
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rldyn.phases import OnlinePhaseDetector, PhaseConfig, SignalSpec  # noqa: E402
from rldyn.phases import detect, fit_phases  # noqa: E402
from rldyn.phases.synthetic import ARC_SHAPES, NULL_SHAPES, make_log  # noqa: E402

LENGTHS = (30, 100, 300, 1000, 2000)
NOISES = (0.05, 0.15, 0.3)
MODERATE = 0.15


@dataclasses.dataclass(frozen=True)
class Case:
  shape: str
  length: int
  noise: float
  spacing: str
  tail_df: float | None
  ar: float
  planning: bool
  seed: int


def _run(args: tuple[Case, float]) -> dict:
  case, threshold = args
  recs, tau = make_log(case.length, shape=case.shape, noise=case.noise, spacing=case.spacing,
                       tail_df=case.tail_df, ar=case.ar, planning=case.planning, seed=case.seed)
  r = detect(recs, PhaseConfig(bic_threshold=threshold))
  return {**dataclasses.asdict(case), "tau": tau, "detected": r.detected,
          "cand": r.tau_candidate, "ci": r.ci, "dbic": r.delta_bic}


def _cases(reps: int) -> list[Case]:
  out = []
  seed = 0
  for shape in ARC_SHAPES + NULL_SHAPES:
    for length in LENGTHS:
      for noise in NOISES:
        for spacing in ("regular", "uneven"):
          if spacing == "uneven" and length < 100:
            continue  # ~20 points: below what two phases need
          for tail in (None, 3.0):
            for _ in range(reps):
              seed += 1
              out.append(Case(shape, length, noise, spacing, tail, 0.0, True, seed))
    for length in (100, 300, 1000):
      for _ in range(reps):
        seed += 1
        out.append(Case(shape, length, MODERATE, "regular", None, 0.5, True, seed))
        if shape in ARC_SHAPES:
          seed += 1
          out.append(Case(shape, length, MODERATE, "regular", None, 0.0, False, seed))
  return out


def _summary(rows: list[dict]) -> str:
  if not rows:
    return "n=0"
  det = [r for r in rows if r["detected"]]
  power = len(det) / len(rows)
  if not det:
    return f"n={len(rows):4d} power {power:5.2f}"
  err = [100 * abs(r["cand"] - r["tau"]) / r["length"] for r in det]
  cov = np.mean([r["ci"][0] <= r["tau"] <= r["ci"][1] for r in det])
  return (f"n={len(rows):4d} power {power:5.2f}  median err {np.median(err):5.2f}%  "
          f"p90 err {np.percentile(err, 90):5.2f}%  coverage {cov:5.2f}")


def _bank(reps: int, threshold: float) -> None:
  cases = _cases(reps)
  start = time.perf_counter()
  with multiprocessing.Pool(min(2, os.cpu_count() or 1)) as pool:
    rows = pool.map(_run, [(c, threshold) for c in cases], chunksize=8)
  print(f"bank: {len(rows)} synthetic logs in {time.perf_counter() - start:.1f} s "
        f"(bic_threshold {threshold:g})")
  base = [r for r in rows if r["ar"] == 0 and r["planning"]]
  arcs = [r for r in base if r["tau"] is not None]
  print("\n== arc logs (known tau), error as % of run length, 95% interval coverage ==")
  for noise in NOISES:
    sub = [r for r in arcs if r["noise"] == noise]
    print(f"noise {noise:4.2f}: {_summary(sub)}")
  mod = [r for r in arcs if r["noise"] == MODERATE]
  print(f"-- moderate noise ({MODERATE}) by length / shape / spacing / tails --")
  for length in LENGTHS:
    print(f"  length {length:5d}: {_summary([r for r in mod if r['length'] == length])}")
  for shape in ARC_SHAPES:
    print(f"  shape {shape:7s}: {_summary([r for r in mod if r['shape'] == shape])}")
  for spacing in ("regular", "uneven"):
    print(f"  {spacing:13s}: {_summary([r for r in mod if r['spacing'] == spacing])}")
  for tail in (None, 3.0):
    name = "gaussian" if tail is None else "student-t3"
    print(f"  {name:13s}: {_summary([r for r in mod if r['tail_df'] == tail])}")
  print("-- detection rate by family, all noise levels / lengths / spacings / tails --")
  for shape in ARC_SHAPES:
    sub = [r for r in arcs if r["shape"] == shape]
    print(f"  {shape:8s}: {sum(r['detected'] for r in sub):4d} / {len(sub):4d} = "
          f"{np.mean([r['detected'] for r in sub]):.3f}")
  all_err = [100 * abs(r["cand"] - r["tau"]) / r["length"] for r in mod if r["cand"] is not None]
  print(f"  all moderate-noise arcs, best split even when not detected: median err "
        f"{np.median(all_err):.2f}%")
  print("\n== one-regime logs: false-positive rate (detected: true) ==")
  nulls = [r for r in base if r["tau"] is None]
  for shape in NULL_SHAPES:
    sub = [r for r in nulls if r["shape"] == shape]
    print(f"  {shape:10s}: {np.mean([r['detected'] for r in sub]):.3f} of {len(sub)}")
  print(f"  {'all':10s}: {np.mean([r['detected'] for r in nulls]):.3f} of {len(nulls)}")
  print("\n== AR(1) noise, rho = 0.5, moderate noise ==")
  ar = [r for r in rows if r["ar"] > 0]
  print(f"  arcs : {_summary([r for r in ar if r['tau'] is not None])}")
  print(f"  nulls: false-positive rate "
        f"{np.mean([r['detected'] for r in ar if r['tau'] is None]):.3f}")
  print("\n== planning signal absent (execution only), moderate noise ==")
  print(f"  arcs : {_summary([r for r in rows if not r['planning']])}")


def _tracker_bank() -> None:
  """The 12-log bank per family (2 lengths x 2 spacings x 3 seeds, one heavy-tailed)."""
  print("\n== tracker bank: 12 logs per family, noise 0.15 ==")
  for shape in ARC_SHAPES + NULL_SHAPES:
    counts = []
    for clean in (True, False):
      hits = 0
      for length in (80, 400):
        for spacing in ("regular", "uneven"):
          for seed in range(3):
            recs, _ = make_log(length, shape=shape, noise=0.15,
                               spacing="regular" if clean else spacing,
                               tail_df=None if clean or seed != 2 else 3.0,
                               missing_frac=0.0 if clean else 0.05,
                               seed=100 + seed + (10 * (spacing == "uneven") if clean else 0))
            hits += detect(recs).detected
      counts.append(hits)
    kind = "detected" if shape in ARC_SHAPES else "false alarms"
    print(f"  {shape:10s}: clean {counts[0]:2d}/12, with NaNs/gaps/heavy tails "
          f"{counts[1]:2d}/12 {kind}")


def _ruptures_check() -> None:
  try:
    import ruptures as rpt  # pylint: disable=g-import-not-at-top
  except ImportError:
    print("\nruptures not installed: cross-check skipped")
    return
  n = 300
  x = np.arange(n, dtype=float)
  ours, theirs, gap = [], [], []
  for role, name in (("planning", "semantic_entropy/planning"), ("execution", "entropy/execution")):
    cfg = PhaseConfig(signals=(SignalSpec(name, role),))
    for seed in range(20):
      rng = np.random.default_rng(seed)
      tau = rng.uniform(0.25 * n, 0.65 * n)
      y = (np.maximum(x - tau, 0) / (n - tau) if role == "planning"
           else np.maximum(tau - x, 0) / tau) + 0.1 * rng.standard_normal(n)
      bkp = rpt.Dynp(model="linear", min_size=5, jump=1).fit(
          np.column_stack([y, x / n, np.ones(n)])).predict(n_bkps=1)[0]
      r = fit_phases({name: (x, y)}, cfg)
      ours.append(abs(r.tau_candidate - tau))
      theirs.append(abs(bkp - tau))
      gap.append(abs(r.tau_candidate - bkp))
  print(f"\n== ruptures cross-check (single signal, n={n}, noise 0.1, 40 logs) ==")
  print(f"  median |tau_hat - tau|: rldyn {100 * np.median(ours) / n:.2f}%, "
        f"ruptures Dynp(linear) {100 * np.median(theirs) / n:.2f}%; "
        f"median |rldyn - ruptures| {100 * np.median(gap) / n:.2f}% of the run")


def _timings() -> None:
  recs, _ = make_log(10_000, shape="exp", noise=0.2, seed=1)
  detect(recs[:300])
  times = []
  for _ in range(5):
    start = time.perf_counter()
    r = detect(recs)
    times.append(time.perf_counter() - start)
  print(f"\n== timings ==\n  offline fit, 10,000-step log: {1e3 * np.median(times):.0f} ms "
        f"(median of 5; detected={r.detected}, boundary {r.boundary_step})")
  for refit_every in (25, 10):
    recs, _ = make_log(2000, shape="linear", noise=0.15, seed=2)
    det = OnlinePhaseDetector(refit_every=refit_every)
    per = []
    for s, m in recs:
      start = time.perf_counter()
      det.update(s, m)
      per.append(time.perf_counter() - start)
    per = np.array(per)
    print(f"  online, refit_every={refit_every}, 2000 steps: "
          f"mean {1e3 * per.mean():.2f} ms/update, "
          f"max {1e3 * per.max():.0f} ms (a refit), p50 {1e6 * np.median(per):.0f} us")


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--reps", type=int, default=4)
  parser.add_argument("--bic_threshold", type=float, default=PhaseConfig().bic_threshold)
  args = parser.parse_args()
  _bank(args.reps, args.bic_threshold)
  _tracker_bank()
  _ruptures_check()
  _timings()


if __name__ == "__main__":
  main()
