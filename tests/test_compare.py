"""rldyn.compare on hand-written workdirs: grouping into arms, the t-interval numbers, hostile input."""

import dataclasses
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from rldyn import compare
from rldyn import config as config_lib

T_975 = {2: 4.302652729911275, 1: 12.706204736174694}  # Student t quantiles (df -> t_{0.975, df})


def _config(seed: int, reward: str) -> dict:
  c = config_lib.default()
  c.seed = seed
  c.reward.name = reward
  c.base_workdir = f"/bases/{seed}"  # per-seed keys must not split arms
  return c.to_dict()


def _write_run(root, name, seed, reward, evals, train_acc, finished=True, passk=None, phases=None):
  d = os.path.join(root, name)
  os.makedirs(d)
  cfg = _config(seed, reward)
  cfg["task"]["options"] = [[k, v] for k, v in cfg["task"]["options"].items()]
  with open(os.path.join(d, "config.json"), "w") as f:
    json.dump(cfg, f)
  with open(os.path.join(d, "metrics.jsonl"), "w") as f:
    for s, a in enumerate(train_acc):
      f.write(json.dumps({"step": s, "accuracy": a, "entropy/execution": 1.0 - 0.1 * s, "kl/k3": 0.01 * s,
                          "response_len/mean": 10 + s}) + "\n")
  with open(os.path.join(d, "eval.jsonl"), "w") as f:
    for s, (p1, g) in evals.items():
      f.write(json.dumps({"step": s, "eval/pass@1": p1, "eval/accuracy": g}) + "\n")
  with open(os.path.join(d, "events.jsonl"), "w") as f:
    f.write(json.dumps({"event": "run_start", "step": 0, "time": 0}) + "\n")
    if finished:
      f.write(json.dumps({"event": "run_end", "step": len(train_acc), "time": 1}) + "\n")
  if passk:
    os.makedirs(os.path.join(d, "replay"))
    with open(os.path.join(d, "replay", "passk.json"), "w") as f:
      json.dump({"checkpoints": [{"step": s, "k": list(c), "pass_at_k": list(c.values())}
                                 for s, c in passk.items()]}, f)
  if phases:
    with open(os.path.join(d, "phases.json"), "w") as f:
      json.dump(phases, f)
  return d


def test_t_interval_hand_numbers():
  e = compare.mean_ci([0.2, 0.3, 0.4])
  half = T_975[2] * 0.1 / math.sqrt(3)
  assert e.n == 3 and e.mean == pytest.approx(0.3)
  assert (e.lo, e.hi) == (pytest.approx(0.3 - half), pytest.approx(0.3 + half))
  one = compare.mean_ci([0.5, float("nan"), None])
  assert one.n == 1 and one.mean == 0.5 and math.isnan(one.lo)
  assert compare.mean_ci([]).n == 0
  # A small mean (a clip fraction) keeps 3 significant figures instead of printing as 0.000.
  assert compare.Estimate(4.2e-4, 1.1e-4, 7.3e-4, 3).fmt() == "0.00042 [0.00011, 0.00073]"
  assert compare.Estimate(0.25, 0.2, 0.3, 3).fmt() == "0.250 [0.200, 0.300]"
  # Welch with equal variances and sizes: df = 2(n-1) = 4; se = sqrt(2 s^2 / n).
  d = compare.welch_diff([1.0, 2.0, 3.0], [0.0, 1.0, 2.0])
  half = 2.7764451051977987 * math.sqrt(2 * 1.0 / 3)
  assert d.mean == pytest.approx(1.0) and d.hi == pytest.approx(1.0 + half)


def test_report_groups_seeds_and_aggregates(tmp_path):
  root = str(tmp_path / "runs")
  gt = [_write_run(root, f"gt{s}", s, "ground_truth", {0: (0.1, 0.2), 10: (0.1 + dp, 0.3)}, [0.1, 0.5, 0.9],
                   passk={0: {1: 0.1, 4: 0.4}, 10: {1: 0.3 + dp, 4: 0.5}},
                   phases={"detected": True, "boundary_step": 5, "ci": [4, 6]})
        for s, dp in enumerate((0.2, 0.3, 0.4))]
  rnd = [_write_run(root, f"rnd{s}", s, "random", {0: (0.1, 0.2), 10: (0.1 + dp, 0.2)}, [0.1, 0.1, 0.1])
         for s, dp in enumerate((0.0, 0.1))]
  partial = _write_run(root, "rnd_partial", 7, "random", {0: (0.1, 0.2)}, [0.1], finished=False)
  missing = str(tmp_path / "nope")
  empty = str(tmp_path / "empty")
  os.makedirs(empty)
  out = str(tmp_path / "report")
  res = compare.compare(gt + rnd + [partial, missing, empty], out)

  assert set(res["arms"]) == {"reward.name=ground_truth", "reward.name=random"}
  g = res["arms"]["reward.name=ground_truth"]["summary"]
  half = T_975[2] * 0.1 / math.sqrt(3)
  assert g["Δ pass@1"]["n"] == 3 and g["Δ pass@1"]["mean"] == pytest.approx(0.3)
  assert g["Δ pass@1"]["hi"] == pytest.approx(0.3 + half)
  assert g["base pass@1"]["mean"] == pytest.approx(0.1) and g["base pass@1"]["lo"] == pytest.approx(0.1)
  assert g["Δ greedy"]["mean"] == pytest.approx(0.1)
  # final training accuracy: each seed's mean over its last 5 (here all 3) steps = 0.5
  assert g["final accuracy"]["mean"] == pytest.approx(0.5)
  assert g["final pass@4 (replay)"]["mean"] == pytest.approx(0.5)
  r = res["arms"]["reward.name=random"]["summary"]
  # random arm: the partial run counts as far as it got: its only eval is the base, so Δ = 0.
  assert r["Δ pass@1"]["n"] == 3
  assert r["Δ pass@1"]["mean"] == pytest.approx((0.0 + 0.1 + 0.0) / 3)
  diff = res["differences"]["reward.name=random"]["Δ pass@1"]
  assert diff["mean"] == pytest.approx(0.1 / 3 - 0.3)
  assert res["arms"]["reward.name=ground_truth"]["phases"] == ["arc: boundary 5 [4, 6]"] * 3

  probs = {(os.path.basename(p["run"]), p["problem"].split(":")[0]) for p in res["problems"]}
  assert ("nope", "not a directory") in probs
  assert ("empty", "no config.json") in probs
  assert ("rnd_partial", "partial") in probs

  md = open(os.path.join(out, "report.md")).read()
  assert f"0.300 [{0.3 - half:.3f}, {0.3 + half:.3f}]" in md
  assert "Student-t" in md and "## Problems" in md
  # the verdict table, run by run: logged steps, each seed's own held-out changes, the verdict
  assert "| reward.name=ground_truth | `gt0` | 3 | +0.200 | +0.100 | arc: boundary 5 [4, 6] |" in md
  for png in ("heldout", "train", "entropy", "kl", "strategy", "length", "passk"):
    assert os.path.getsize(os.path.join(out, f"{png}.png")) > 1000


def test_explicit_arms_and_cli(tmp_path):
  root = str(tmp_path / "runs")
  a = _write_run(root, "a", 0, "random", {0: (0.0, 0.0), 5: (0.5, 0.5)}, [0.2])
  b = _write_run(root, "b", 1, "random", {0: (0.0, 0.0), 5: (0.3, 0.5)}, [0.2] * 8)
  out = str(tmp_path / "rep")
  proc = subprocess.run([sys.executable, "-m", "rldyn.compare", f"--arm=first={a}", f"--arm=second={b}",
                         f"--out={out}", "--noplots", "--run_means=kl/k3"], capture_output=True, text=True,
                        timeout=120,
                        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert proc.returncode == 0, proc.stderr
  assert "first: 1 run(s), Δ held-out pass@1 +0.500" in proc.stdout
  res = json.load(open(os.path.join(out, "compare.json")))
  assert res["arms"]["second"]["summary"]["Δ pass@1"]["mean"] == pytest.approx(0.3)
  assert res["arms"]["second"]["summary"]["Δ pass@1"]["lo"] is None  # one seed: no interval
  # --run_means: the mean over all 8 logged steps (kl/k3 = 0.01 s), next to the last-5-steps "final" one
  second = res["arms"]["second"]["summary"]
  assert second["run mean kl/k3"]["mean"] == pytest.approx(0.035)
  assert second["final kl/k3"]["mean"] == pytest.approx(0.05)
  assert "run mean kl/k3" in open(os.path.join(out, "report.md")).read()
  bad = subprocess.run([sys.executable, "-m", "rldyn.compare", str(tmp_path / "none"), f"--out={out}"],
                       capture_output=True, text=True, timeout=120)
  assert bad.returncode == 2 and "no readable run" in bad.stderr
  with pytest.raises(ValueError, match="NAME=DIR"):
    compare.parse_arm("justaname")


def test_phase_verdict_cells_from_the_detector():
  """The verdict table's cell says arc or not, where, with what evidence, and which check failed."""
  from rldyn.phases.detect import detect
  from rldyn.phases.synthetic import make_log

  def cell(recs):
    return compare.phase_verdict(compare.Run(path="x", config={}, metrics=[], evals=[], events=[],
                                             phases=detect(recs).to_json(), passk=None, problems=[]))

  arc = detect(make_log(300, shape="linear", seed=1)[0]).to_json()
  assert arc["detected"]
  got = cell(make_log(300, shape="linear", seed=1)[0])
  assert got.startswith(f"arc: boundary {arc['boundary_step']} [{arc['ci'][0]}, {arc['ci'][1]}], ΔBIC ")
  assert f"{arc['delta_bic']:.1f}" in got
  assert arc["candidate_step"] == pytest.approx(arc["boundary_step"], abs=1)
  # One regime with planning falling as execution does: no supported change.
  noise = detect(make_log(300, shape="noise", seed=1)[0]).to_json()
  assert not noise["detected"] and noise["delta_bic"] < 6 and noise["outcome"] == "no_change"
  assert cell(make_log(300, shape="noise", seed=1)[0]).startswith("no arc: one smooth regime (best split ")
  # A supported change whose planning signal does not rise after it: the failing pattern is named.
  rng = np.random.default_rng(0)
  fail = [(i, {"entropy/execution": 1.0 - 0.5 * min(i, 150) / 150 + 0.01 * rng.standard_normal(),
               "strategy/entropy": 2.0 - i / 300 + 0.01 * rng.standard_normal()}) for i in range(300)]
  res = detect(fail).to_json()
  assert not res["detected"] and res["delta_bic"] > 6 and abs(res["candidate_step"] - 150) < 5
  assert res["outcome"] == "wrong_shape"
  assert res["failed_checks"] == ["strategy/entropy falls after the boundary"]
  lo, hi = res["candidate_ci"]
  assert cell(fail) == (f"no arc: change at {res['candidate_step']:.0f} [{lo:.0f}, {hi:.0f}], ΔBIC "
                        f"{res['delta_bic']:.1f}, not the arc's shape "
                        "(strategy/entropy falls after the boundary)")
  # Not run, and a log too short to fit: no traceback, a plain reason.
  assert compare.phase_verdict(compare.Run(path="x", config={}, metrics=[], evals=[], events=[],
                                           phases=None, passk=None, problems=[])) == "not run"
  assert cell(make_log(8, shape="linear", seed=1)[0]).startswith("no arc: ")


def test_at_step_reads_every_run_as_of_one_step(tmp_path):
  """--at_step=N: later metrics, evals and checkpoints are ignored, the verdict is re-judged up to N (the
  same answer as the detector on the truncated log), a run that stopped before N is a problem."""
  from rldyn.phases.detect import detect
  from rldyn.phases.synthetic import make_log
  root = str(tmp_path / "runs")
  recs = make_log(300, shape="linear", seed=1)[0]
  long = _write_run(root, "long", 0, "ground_truth", {0: (0.1, 0.2), 100: (0.3, 0.4), 300: (0.9, 0.9)},
                    [0.5] * 300, passk={0: {1: 0.1, 4: 0.3}, 100: {1: 0.3, 4: 0.5}, 300: {1: 0.9, 4: 0.95}},
                    phases={"detected": True, "boundary_step": 1, "ci": [0, 2], "delta_bic": 99.0})
  with open(os.path.join(long, "metrics.jsonl"), "w") as f:  # the synthetic arc's signals, one per step
    for step, rec in recs:
      f.write(json.dumps({"step": step, **rec}) + "\n")
  short = _write_run(root, "short", 1, "ground_truth", {0: (0.1, 0.2), 50: (0.2, 0.2)}, [0.4] * 50,
                     finished=False)
  run = compare.at_step(compare.read_run(long), 100)
  assert max(m["step"] for m in run.metrics) == 100 and [e["step"] for e in run.evals] == [0, 100]
  assert compare.base_and_final(run, "eval/pass@1") == (0.1, 0.3)
  assert compare.final_passk(run) == ({1: 0.1, 4: 0.3}, {1: 0.3, 4: 0.5})
  want = detect([r for r in recs if r[0] <= 100]).to_json()
  assert run.phases == want and run.phases["delta_bic"] != 99.0
  assert compare.phase_verdict(run) == compare.phase_verdict(dataclasses.replace(run, phases=want))
  assert run.problems == []
  cut = compare.at_step(compare.read_run(short), 100)
  assert cut.problems[-1] == "stops before --at_step=100 (reached step 50)"
  assert not any(p.startswith("partial:") for p in cut.problems)
  out = str(tmp_path / "rep")
  res = compare.compare([], out, [f"a={long}", f"b={short}"], plots=False, at=100)
  assert res["at_step"] == 100
  assert res["arms"]["a"]["summary"]["Δ pass@1"]["mean"] == pytest.approx(0.2)
  assert res["arms"]["a"]["phases"] == [compare.phase_verdict(run)]
  report = open(os.path.join(out, "report.md")).read()
  assert "as of step 100" in report and "re-judged at step 100" in report
  with pytest.raises(ValueError, match="--at_step must be >= 0"):
    compare.compare([], out, [f"a={long}"], plots=False, at=-1)


def test_entropy_columns_read_the_true_roles_where_logged(tmp_path):
  """A placebo-style run logs entropy/* on its mask and truth/entropy/* on the true roles: the columns
  take the truth; a run without it keeps entropy/*."""
  root = str(tmp_path / "runs")
  a = _write_run(root, "a", 0, "ground_truth", {0: (0.1, 0.1), 10: (0.2, 0.2)}, [0.5] * 10)
  b = _write_run(root, "b", 1, "ground_truth", {0: (0.1, 0.1), 10: (0.2, 0.2)}, [0.5] * 10)
  with open(os.path.join(b, "metrics.jsonl"), "w") as f:
    for s in range(10):
      f.write(json.dumps({"step": s, "entropy/execution": 9.0, "truth/entropy/execution": 0.25 + 0.01 * s,
                          "entropy/planning": 7.0, "truth/entropy/planning": 0.5}) + "\n")
  ra, rb = compare.read_run(a), compare.read_run(b)
  assert compare.final_metric(ra, "entropy/execution") == pytest.approx(np.mean([1.0 - 0.1 * s for s in range(5, 10)]))
  assert compare.final_metric(rb, "entropy/execution") == pytest.approx(0.25 + 0.07)
  assert compare.final_metric(rb, "entropy/planning") == pytest.approx(0.5)
  got = compare.curve([rb], "entropy/execution")
  assert [got[s].mean for s in range(10)] == pytest.approx([0.25 + 0.01 * s for s in range(10)])
  assert compare.curve([ra], "entropy/execution")[3].mean == pytest.approx(0.7)
  # the display's trailing mean: step 3 averages steps 1-3 of the run
  assert compare.curve([ra], "entropy/execution", smooth=3)[3].mean == pytest.approx(0.8)
  assert compare.curve([ra], "entropy/execution", smooth=3)[0].mean == pytest.approx(1.0)
