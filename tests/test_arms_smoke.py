"""Every control-arm study's smoke variant: all arms pass launch's checks (prepare: everything short of
compiling), and a set covering the paths no other test runs end to end (a spurious reward with clip off and
1 update, another with clip on and 4, the KL loss, the KL reward penalty, the reference reset, dynamic
sampling, kl_cov, the entropy-only and rank arms) trains for 2 steps
on the shared smoke base; rldyn.compare and the one-shot rank read the real workdirs they wrote."""

import importlib
import math
import os

import pytest

from rldyn import compare
from rldyn import launch
from rldyn import oneshot
from rldyn.metrics.writers import read_jsonl

STUDIES = {
    "spurious": [f"{r},{c},{u}" for r in ("ground_truth", "random", "incorrect", "format", "majority")
                 for c in ("clip", "noclip") for u in ("u1", "u4")],
    "prorl": ["kl_loss", "clip_higher", "kl_penalty", "reset", "dynamic"],
    "entropy_control": ["grpo", "clip_cov", "kl_cov", "clip_low", "clip_high", "entropy", "passk"],
    "oneshot": ["rank", "oneshot", "entropy_only"],
    "verifree": ["verifree", "verifier"],  # runs end to end in tests/test_verifree_loop.py
}
# clip_cov, passk, entropy shaping and majority_vote run end to end in tests/test_loop.py already.
RUN = [("spurious", "incorrect,noclip,u1"), ("spurious", "format,clip,u4"), ("prorl", "kl_loss"),
       ("prorl", "kl_penalty"), ("prorl", "reset"), ("prorl", "dynamic"), ("entropy_control", "kl_cov"),
       ("oneshot", "entropy_only"), ("oneshot", "rank")]
STEPS = 2


def _config(study, arm, base):
  c = importlib.import_module(f"experiments.{study}").get_config(arm + ",smoke")
  c.base_workdir = base
  return c


def _run_config(study, arm, base):
  c = _config(study, arm, base)
  c.rl.steps = STEPS
  return c


@pytest.mark.parametrize("study", sorted(STUDIES))
def test_every_arm_passes_launch_checks(study, smoke_base, tmp_path):
  for arm in STUDIES[study]:
    d = str(tmp_path / arm.replace(",", "_"))
    launch.prepare(_config(study, arm, smoke_base), d)
    assert not os.path.exists(d)  # prepare writes nothing


def test_bad_arms_are_refused_with_the_valid_ones():
  with pytest.raises(ValueError, match="valid: one of .*'dynamic'"):
    importlib.import_module("experiments.prorl").get_config("verifree,smoke")
  with pytest.raises(ValueError, match="both clip and noclip"):
    importlib.import_module("experiments.spurious").get_config("random,clip,noclip")


@pytest.fixture(scope="module")
def arm_runs(smoke_base, tmp_path_factory):
  root = tmp_path_factory.mktemp("arms")
  out = {}
  for study, arm in RUN:
    d = str(root / f"{study}-{arm.replace(',', '_')}")
    launch.run(_run_config(study, arm, smoke_base), d)
    out[(study, arm)] = d
  return out


def test_arms_run_end_to_end(arm_runs):
  for (study, arm), d in arm_runs.items():
    rows = read_jsonl(os.path.join(d, "metrics.jsonl"))
    assert [r["step"] for r in rows] == list(range(STEPS)), (study, arm)
    assert all(math.isfinite(r["loss/total"]) for r in rows), (study, arm)
    assert any(e["event"] == "run_end" for e in read_jsonl(os.path.join(d, "events.jsonl")))
  entropy_only = read_jsonl(os.path.join(arm_runs[("oneshot", "entropy_only")], "metrics.jsonl"))
  assert all(r["reward/mean"] == 0.0 and r["loss/pg"] == 0.0 for r in entropy_only)
  assert entropy_only[-1]["update_norm"] > 0  # the entropy bonus alone moves the policy
  clipped = read_jsonl(os.path.join(arm_runs[("spurious", "format,clip,u4")], "metrics.jsonl"))
  assert max(r["clip_frac"] for r in clipped) > 0  # the spurious study's lr makes the clip bind
  kl_cov = read_jsonl(os.path.join(arm_runs[("entropy_control", "kl_cov")], "metrics.jsonl"))
  assert all(r["clip_frac"] == 0.0 for r in kl_cov)  # kl_cov never clips
  penalty = read_jsonl(os.path.join(arm_runs[("prorl", "kl_penalty")], "metrics.jsonl"))
  assert penalty[0]["reward/kl_penalty"] == 0.0  # θ = θ_ref: exactly no penalty
  assert (penalty[1]["reward/kl_penalty"] != 0) == (penalty[0]["update_norm"] > 0)  # once the policy moved
  resets = read_jsonl(os.path.join(arm_runs[("prorl", "reset")], "events.jsonl"))
  assert [e["step"] for e in resets if e["event"] == "ref_reset"] == [1]
  dynamic = read_jsonl(os.path.join(arm_runs[("prorl", "dynamic")], "metrics.jsonl"))
  assert all(r["dynamic/rounds"] >= 1 and r["groups/zero_std_frac"] * 8 == r["dynamic/padded_groups"]
             for r in dynamic)


def test_rank_and_compare_read_the_runs(arm_runs, tmp_path):
  rank_dir = arm_runs[("oneshot", "rank")]
  samples = read_jsonl(os.path.join(rank_dir, "samples", "samples.jsonl"))
  assert len(samples) == STEPS * 8 * 4  # every row of every step
  ranked = oneshot.rank_samples(samples)
  for r in ranked:
    assert r.steps >= 2 and 0.0 <= r.variance <= 0.25
  res = compare.compare(list(arm_runs.values()), str(tmp_path / "report"), plots=False)
  assert len(res["arms"]) == len(arm_runs)
  assert all(a["summary"]["Δ pass@1"]["n"] == 1 for a in res["arms"].values())
  assert not [p for p in res["problems"] if "partial" in p["problem"]]


def test_oneshot_trains_on_the_ranked_problem(arm_runs, smoke_base, tmp_path):
  """A training problem's uid (looked up in the stream) as task.fixed_problem is every training row."""
  uid = read_jsonl(os.path.join(arm_runs[("oneshot", "rank")], "samples", "samples.jsonl"))[-1]["problem"]
  c = _run_config("oneshot", "oneshot", smoke_base)
  c.task.fixed_problem = uid
  c.log.samples = 8
  d = str(tmp_path / "oneshot")
  launch.run(c, d)
  samples = read_jsonl(os.path.join(d, "samples", "samples.jsonl"))
  assert samples and {s["problem"] for s in samples} == {uid}
  rows = read_jsonl(os.path.join(d, "metrics.jsonl"))
  assert [r["step"] for r in rows] == list(range(STEPS)) and "eval/pass@1" in rows[0]
  bad = _run_config("oneshot", "oneshot", smoke_base)
  bad.task.fixed_problem = "countdown/not-a-uid"
  with pytest.raises(launch.ConfigError, match="fixed_problem"):
    launch.prepare(bad, str(tmp_path / "bad"))
