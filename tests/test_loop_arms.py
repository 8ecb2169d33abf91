"""The loop-level arms wired into the RL loop: scan_layers + remat + micro-batches on a per-layer base, KL
as a reward penalty, the reference reset (schedule and plateau, exact resume) and dynamic sampling."""
import dataclasses
import math
import os
import shutil
import socket
import subprocess
import sys
import types

import jax.numpy as jnp
import numpy as np

from conftest import smoke_config
from rldyn import launch
from rldyn.metrics.writers import read_jsonl
from rldyn.rl import loop
from rldyn.rl import rollout as rollout_lib
from rldyn.rl.emit import TIMING_KEYS
from rldyn.tasks.base import Problem


def _lines(d: str) -> list[dict]:
  rows = read_jsonl(os.path.join(d, "metrics.jsonl"))
  return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def _events(d: str, name: str) -> list[dict]:
  return [e for e in read_jsonl(os.path.join(d, "events.jsonl")) if e["event"] == name]


def _redo_from(d: str, step: int) -> None:
  """Drops every checkpoint after `step`, as if the run had died there: the rerun resumes at `step`."""
  ck = os.path.join(d, "checkpoints")
  for name in os.listdir(ck):
    if name.isdigit() and int(name) > step:
      shutil.rmtree(os.path.join(ck, name))


# ---- fitting real sizes: scan + remat + micro-batches on a per-layer base ------------------------------

def test_scan_remat_micro_batches_on_a_per_layer_base_match_the_plain_run(smoke_base, tmp_path):
  plain, scan = str(tmp_path / "plain"), str(tmp_path / "scan")
  launch.run(smoke_config(smoke_base, rl__steps=1), plain)
  launch.run(smoke_config(smoke_base, rl__steps=1, model__scan_layers=True, model__remat="full",
                          rl__micro_batches=2, loss__logit_chunk=8), scan)
  a, b = _lines(plain)[0], _lines(scan)[0]
  assert set(a) == set(b)
  assert a["accuracy"] == b["accuracy"] and a["response_len/mean"] == b["response_len/mean"]  # same samples
  for k in a:
    if a[k] is None:  # a metric with nothing to measure (e.g. no verdict yet) is null in both
      assert b[k] is None, k
      continue
    assert math.isclose(a[k], b[k], rel_tol=2e-3, abs_tol=2e-5), (k, a[k], b[k])
  assert a["update_norm"] > 0


def test_without_kl_metrics_the_reference_forward_is_skipped(smoke_base, tmp_path):
  launch.run(smoke_config(smoke_base, rl__steps=1, loss__kl_metrics=False), str(tmp_path))
  line = _lines(str(tmp_path))[0]
  assert not [k for k in line if k.startswith("kl/")] and line["update_norm"] > 0


def test_kl_metrics_every_thins_the_kl_lines_and_leaves_training_alone(smoke_base, tmp_path):
  every, thinned = str(tmp_path / "every"), str(tmp_path / "thinned")
  launch.run(smoke_config(smoke_base, rl__steps=3), every)
  launch.run(smoke_config(smoke_base, rl__steps=3, loss__kl_metrics_every=2), thinned)
  a, b = _lines(every), _lines(thinned)
  assert [bool([k for k in r if k.startswith("kl/")]) for r in b] == [True, False, True]  # steps 0, 2
  assert all(r["kl/k3"] is not None for r in a)
  for ra, rb in zip(a, b):  # the same bits, kl/* aside (step 2 is π_ref's KL in both)
    assert {k: v for k, v in ra.items() if not k.startswith("kl/") or k in rb} == rb
  assert read_jsonl(os.path.join(thinned, "metrics.jsonl"))[1]["perf/compile_s"] == 0.0  # no recompiling


# ---- KL as a reward penalty ----------------------------------------------------------------------------

def _rollout(rewards, logp, mask):
  b, n = logp.shape
  return rollout_lib.Rollout(
      problems=[None] * b, prompt_tokens_BP=np.zeros((b, 1), np.int32), prompt_mask_BP=np.ones((b, 1), bool),
      tokens_BN=np.zeros((b, n), np.int32), mask_BN=np.asarray(mask, bool),
      logp_BN=np.asarray(logp, np.float32),
      entropy_BN=np.zeros((b, n), np.float32), length_B=np.asarray(mask).sum(1).astype(np.int32),
      truncated_B=np.zeros(b, bool), texts=[""] * b, correct_B=np.asarray(rewards) > 0,
      rewards_B=np.asarray(rewards, np.float32), group_size=2, sample_s=0.0, score_s=0.0)


def test_kl_reward_penalty_by_hand():
  """r − β·Σ_t clamp(log π_old − log π_ref, ±10) on response tokens; reward/kl_penalty its mean
  β·Σk1; exactly 0 when θ = θ_ref bit for bit."""
  logp = np.array([[-1.0, -2.0, -3.0], [-0.5, -0.5, -0.5]], np.float32)
  ref = np.array([[-1.5, -1.0, -30.0], [-0.5, -1.5, -9.0]], np.float32)
  mask = np.array([[1, 1, 1], [1, 1, 0]])
  ro = _rollout([1.0, 0.0], logp, mask)
  for equal, want_kl in ((False, [0.5 - 1.0 + 10.0, 0.0 + 1.0]), (True, [0.0, 0.0])):
    ctx = types.SimpleNamespace(cfg=types.SimpleNamespace(reward=types.SimpleNamespace(kl_coef=0.1)),
                                progs=types.SimpleNamespace(at_ref=lambda a, b, e=equal: e))
    out, host = loop.kl_penalised(ctx, types.SimpleNamespace(params=None, ref_params=None), ro,
                                  jnp.asarray(ref))
    np.testing.assert_allclose(out.rewards_B, np.array([1.0, 0.0]) - 0.1 * np.array(want_kl), rtol=1e-6)
    assert math.isclose(host["reward/kl_penalty"], 0.1 * np.mean(want_kl), rel_tol=1e-6)
    np.testing.assert_array_equal(ro.rewards_B, [1.0, 0.0])  # the rollout's own rewards are untouched


def test_kl_penalty_run(smoke_base, tmp_path):
  """KL in the reward (with the loss's KL metrics off: the reference is scored for credit only)."""
  d = str(tmp_path)
  launch.run(smoke_config(smoke_base, rl__steps=3, reward__kl_coef=0.05, loss__kl_metrics=False), d)
  rows = _lines(d)
  assert [r["step"] for r in rows] == [0, 1, 2]
  assert rows[0]["reward/kl_penalty"] == 0.0  # θ = θ_ref: no penalty from compilation noise
  assert all(r["reward/kl_penalty"] != 0 for r in rows[1:])  # k1 is a sample estimate: either sign
  assert not [k for k in rows[0] if k.startswith("kl/")]
  samples = read_jsonl(os.path.join(d, "samples", "samples.jsonl"))
  assert {s["reward"] for s in samples} <= {0.0, 1.0}  # logged rewards are the configured reward's


# ---- reference reset -----------------------------------------------------------------------------------

def test_scheduled_reset_zeroes_the_kl(smoke_base, tmp_path):
  d = str(tmp_path)
  launch.run(smoke_config(smoke_base, rl__steps=4, rl__ref_reset_every=2, rl__updates_per_batch=1,
                          loss__kl_coef=0.01), d)
  rows = _lines(d)
  assert [e["step"] for e in _events(d, "ref_reset")] == [2]
  assert _events(d, "ref_reset")[0]["reason"] == "schedule"
  # one update per step: kl/* is measured at θ before the update,= θ_ref at step 0 and right after the reset
  assert [r["kl/k1"] == 0.0 and r["kl/k3"] == 0.0 for r in rows] == [True, False, True, False]


def test_plateau_reset_and_exact_resume(smoke_base, tmp_path):
  """patience 2 with an unreachable delta: a reset at the 3rd evaluation since the last one (steps 2, 4);
  resuming from checkpoint 2 (before step 2's evaluation) replays the run exactly, history included."""
  d = str(tmp_path)
  c = smoke_config(smoke_base, rl__steps=5, rl__ref_reset_patience=2, rl__ref_reset_delta=1.0,
                   rl__updates_per_batch=1, loss__kl_coef=0.01, eval__every=1, checkpoint__every=2)
  launch.run(c, d)
  before = _lines(d)
  assert [e["step"] for e in _events(d, "ref_reset")] == [2, 4]
  assert all(e["reason"] == "plateau" for e in _events(d, "ref_reset"))
  assert [r["kl/k1"] == 0.0 for r in before] == [True, False, True, False, True]
  _redo_from(d, 2)
  launch.run(c, d)
  assert _events(d, "run_resume")[-1]["step"] == 2
  assert _lines(d) == before
  assert [e["step"] for e in _events(d, "ref_reset")] == [2, 4, 2, 4]  # the replayed steps reset again


def test_run_state_meta_round_trip():
  s = loop.RunState(params=1, opt_state=2, ref_params=3, step=7, nll_exec0=0.5, evals=((0, 0.25), (5, 0.5)),
                    last_reset=5)
  back = loop.RunState.from_checkpoint(s.tree(), s.meta())
  assert back == s
  old = loop.RunState.from_checkpoint(s.tree(), {"step": 7, "nll_exec0": 0.5})  # a checkpoint from before
  assert old.evals == () and old.last_reset == 0


# ---- dynamic sampling ----------------------------------------------------------------------------------

def _fake_round(rewards_PG, p_width, n_width, tag):
  p, g = np.shape(rewards_PG)
  b = p * g
  ro = _rollout(np.asarray(rewards_PG, np.float32).reshape(-1), np.full((b, n_width), -1.0),
                np.ones((b, n_width)))
  return dataclasses.replace(
      ro, group_size=g, problems=[Problem(uid=f"{tag}{i // g}", prompt="", answer="", data="{}")
                                  for i in range(b)],
      prompt_tokens_BP=np.full((b, p_width), 7, np.int32), prompt_mask_BP=np.ones((b, p_width), bool),
      tokens_BN=np.full((b, n_width), 9, np.int32), texts=[f"{tag}{i}" for i in range(b)], sample_s=1.0)


def test_select_groups_concatenates_group_major_and_pads():
  r0 = _fake_round([[1, 1], [0, 1], [0, 0]], p_width=2, n_width=3, tag="a")
  r1 = _fake_round([[1, 0], [1, 1], [0, 1]], p_width=4, n_width=2, tag="b")
  sel = [(0, 1), (1, 0), (1, 2), (0, 0)]
  whole = rollout_lib.select_groups([r0, r1], sel, pad_id=0)
  assert [p.uid for p in whole.problems] == ["a1", "a1", "b0", "b0", "b2", "b2", "a0", "a0"]
  assert whole.texts == ["a2", "a3", "b0", "b1", "b4", "b5", "a0", "a1"]
  np.testing.assert_array_equal(whole.rewards_B, [0, 1, 1, 0, 0, 1, 1, 1])
  assert whole.prompt_tokens_BP.shape == (8, 4) and whole.tokens_BN.shape == (8, 3)
  np.testing.assert_array_equal(whole.prompt_mask_BP[0], [False, False, True, True])  # left-padded
  np.testing.assert_array_equal(whole.prompt_tokens_BP[0], [0, 0, 7, 7])
  np.testing.assert_array_equal(whole.mask_BN[2], [True, True, False])  # right-padded
  np.testing.assert_array_equal(whole.logp_BN[2], [-1.0, -1.0, 0.0])
  assert whole.sample_s == 2.0


def test_dynamic_sampling_run_and_resume(smoke_base, tmp_path):
  """A low-γ random reward leaves many all-equal groups: the trained batch holds none except the padded
  ones, every row is logged (log.samples) so groups are checked row by row; resume replays exactly."""
  d = str(tmp_path)
  c = smoke_config(smoke_base, rl__steps=3, rl__dynamic_sampling=True, rl__refill_rounds=1,
                   reward__random_p=0.15, log__samples=32)
  launch.run(c, d)
  rows = _lines(d)
  assert [r["step"] for r in rows] == [0, 1, 2]
  samples = read_jsonl(os.path.join(d, "samples", "samples.jsonl"))
  for r in rows:
    assert 1 <= r["dynamic/rounds"] <= 2 and 0 <= r["dynamic/kept_frac"] <= 1
    step = [s["reward"] for s in samples if s["step"] == r["step"]]
    assert len(step) == 32
    equal = sum(len(set(step[i:i + 4])) == 1 for i in range(0, 32, 4))
    assert equal == r["dynamic/padded_groups"] == r["groups/zero_std_frac"] * 8
    if r["dynamic/rounds"] == 1:
      assert r["dynamic/padded_groups"] == 0
  assert max(r["dynamic/rounds"] for r in rows) == 2  # γ = 0.15 leaves too few informative groups in one
  _redo_from(d, 2)
  launch.run(c, d)
  assert _events(d, "run_resume")[-1]["step"] == 2
  assert _lines(d) == rows


# ---- every arm on 2 processes x 4 devices equals 1 process x 8 -----------------------------------------

MP_OVERRIDES = {"reward.name": "random", "reward.random_p": 0.15, "rl.steps": 3, "checkpoint.every": 2,
                "eval.every": 2, "pretrain.steps": 20, "rl.dynamic_sampling": True, "rl.refill_rounds": 1,
                "reward.kl_coef": 0.05, "rl.ref_reset_every": 2, "loss.kl_coef": 0.01, "log.samples": 32}


def test_arms_on_two_processes_equal_one(smoke_base, tmp_path):
  """Dynamic sampling (selection on gathered rewards, each process training its block of the selected
  groups), the KL reward penalty (each process's rows) and a reset: the same lines and samples."""
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  c = smoke_config(smoke_base)
  for k, v in MP_OVERRIDES.items():
    section, key = k.split(".")
    c[section][key] = v
  launch.run(c, one)
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4",
             RLDYN_COMPILE_CACHE=os.path.join(root, ".jax_cache"))
  env.pop("RLDYN_DISTRIBUTED", None)
  flags = [f"--config.{k}={v}" for k, v in MP_OVERRIDES.items()]
  procs = [subprocess.Popen(
      [sys.executable, "-m", "rldyn.main", "--config=experiments/two_phase.py:smoke", f"--workdir={two}",
       f"--config.base_workdir={smoke_base}", *flags, f"--coordinator_address=localhost:{port}",
       "--num_processes=2", f"--process_id={i}"],
      cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
  try:
    for p in procs:
      text, _ = p.communicate(timeout=540)
      assert p.returncode == 0, text[-3000:]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  got, want = _lines(two), _lines(one)
  assert [r["step"] for r in got] == [0, 1, 2] and set(got[0]) == set(want[0])
  assert max(r["dynamic/rounds"] for r in want) == 2 and want[1]["reward/kl_penalty"] != 0
  for g, w in zip(got, want):
    for k in w:
      if w[k] is None:  # nothing to measure (e.g. no verdict yet): null on both
        assert g[k] is None, (w["step"], k)
        continue
      np.testing.assert_allclose(g[k], w[k], rtol=1e-5, atol=1e-6, err_msg=f"step {w['step']} {k}")
  texts = lambda d: [(s["step"], s["response"], s["reward"])  # noqa: E731
                     for s in read_jsonl(os.path.join(d, "samples", "samples.jsonl"))]
  assert texts(two) == texts(one)
  assert [e["step"] for e in _events(two, "ref_reset")] == [2]


# ---- rl.curriculum --------------------------------------------------------------------------------------

def test_curriculum_run_logs_its_stage_and_samples_from_it(smoke_base, tmp_path):
  """Steps 0-1 on 2-number problems, step 2 on 3-number ones (refills too: dynamic sampling on); the held-out
  evaluation stays in task.options' world."""
  d = str(tmp_path)
  launch.run(smoke_config(smoke_base, rl__curriculum="num_count=2@0,3@2", rl__dynamic_sampling=True,
                          rl__refill_rounds=1, log__samples=32), d)
  assert [r["curriculum/stage"] for r in _lines(d)] == [0.0, 0.0, 1.0]
  samples = read_jsonl(os.path.join(d, "samples", "samples.jsonl"))
  numbers = {}
  for s in samples:
    numbers.setdefault(s["step"], set()).add(s["prompt"].count(",") + 1)
  assert numbers[0] == {2} and numbers[2] == {3}
