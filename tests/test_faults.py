"""No lost runs: SIGKILL + resume reproduces the uninterrupted log, corrupted checkpoints, NaNs, bad input."""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import smoke_config
from rldyn import launch
from rldyn.metrics.writers import JsonlWriter, read_jsonl
from rldyn.rl import rewards as rewards_lib
from rldyn.rl.emit import TIMING_KEYS
from rldyn.rl.loop import FaultError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 10


def _config(base_workdir: str, steps: int = STEPS, **overrides):
  return smoke_config(base_workdir, rl__steps=steps, checkpoint__every=2, eval__every=3, **overrides)


@pytest.fixture(scope="module")
def base_dir(smoke_base):
  return smoke_base


def _cmd(workdir: str, base: str) -> list[str]:
  return [sys.executable, "-m", "rldyn.main", "--config=experiments/two_phase.py:smoke",
          f"--workdir={workdir}", f"--config.base_workdir={base}", "--config.reward.name=random",
          f"--config.rl.steps={STEPS}", "--config.checkpoint.every=2", "--config.eval.every=3"]


def _env():
  env = dict(os.environ)
  env["JAX_PLATFORMS"] = "cpu"
  env["XLA_FLAGS"] = ""  # one CPU device, like an ordinary laptop run
  env["JAX_COMPILATION_CACHE_DIR"] = os.path.join(ROOT, ".jax_cache")
  env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"
  return env


def _comparable(path: str) -> list[dict]:
  return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in read_jsonl(path)]


def test_sigkill_then_resume_equals_uninterrupted_run(base_dir, tmp_path):
  ref, killed = str(tmp_path / "ref"), str(tmp_path / "killed")
  subprocess.run(_cmd(ref, base_dir), cwd=ROOT, env=_env(), check=True, capture_output=True)
  # Kill at a random moment once training is under way (after 1-4 logged steps).
  target = random.Random(os.getpid()).randint(1, 5)
  proc = subprocess.Popen(_cmd(killed, base_dir), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  metrics = os.path.join(killed, "metrics.jsonl")
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if len(read_jsonl(metrics)) >= target:
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert len(read_jsonl(metrics)) < STEPS, "the run finished before it could be killed"
  ckpts = os.path.join(killed, "checkpoints")
  had_checkpoint = os.path.isdir(ckpts) and any(n.isdigit() for n in os.listdir(ckpts))
  subprocess.run(_cmd(killed, base_dir), cwd=ROOT, env=_env(), check=True, capture_output=True)
  got, want = _comparable(metrics), _comparable(os.path.join(ref, "metrics.jsonl"))
  assert [r["step"] for r in got] == list(range(STEPS))
  assert got == want
  assert _comparable(os.path.join(killed, "eval.jsonl")) == _comparable(os.path.join(ref, "eval.jsonl"))
  events = [e["event"] for e in read_jsonl(os.path.join(killed, "events.jsonl"))]
  assert events.count("run_start") == (1 if had_checkpoint else 2) and "run_end" in events
  # Killed before its first checkpoint the rerun starts afresh; otherwise it says it resumed.
  assert ("run_resume" in events) == had_checkpoint


def test_corrupted_latest_checkpoint_falls_back(base_dir, tmp_path):
  d = str(tmp_path / "run")
  launch.run(_config(base_dir, steps=4), d)
  ref = _comparable(os.path.join(d, "metrics.jsonl"))
  # Corrupt checkpoint 4 (the latest): garble every file of its array store.
  for root, _, files in os.walk(os.path.join(d, "checkpoints", "4")):
    for f in files:
      with open(os.path.join(root, f), "wb") as fh:
        fh.write(b"\x00garbage")
  launch.run(_config(base_dir, steps=4), d)
  events = read_jsonl(os.path.join(d, "events.jsonl"))
  assert any(e["event"] == "checkpoint_unreadable" and e["step"] == 4 for e in events)
  resume = [e for e in events if e["event"] == "run_resume"][-1]
  assert resume["step"] == 2
  assert _comparable(os.path.join(d, "metrics.jsonl")) == ref  # steps 2, 3 redone identically
  assert os.path.isdir(os.path.join(d, "checkpoints.corrupt"))


@pytest.fixture
def nan_reward():
  name = "test_nan"
  if name not in rewards_lib.REWARDS:
    rewards_lib.REWARDS.register(name)(lambda ctx: np.where(np.arange(len(ctx.texts)) == 0, np.nan, 1.0))
  return name


def test_nonfinite_halt_keeps_last_good_checkpoint(base_dir, tmp_path, nan_reward):
  d = str(tmp_path / "run")
  with pytest.raises(FaultError, match="fault.on_nonfinite=halt"):
    launch.run(_config(base_dir, reward__name=nan_reward, fault__on_nonfinite="halt"), d)
  events = [e["event"] for e in read_jsonl(os.path.join(d, "events.jsonl"))]
  assert "nonfinite_halt" in events


def test_nonfinite_skip_continues(base_dir, tmp_path, nan_reward):
  d = str(tmp_path / "run")
  launch.run(_config(base_dir, steps=2, reward__name=nan_reward, fault__on_nonfinite="skip"), d)
  events = read_jsonl(os.path.join(d, "events.jsonl"))
  assert sum(e["event"] == "nonfinite_skip" for e in events) == 2
  rows = read_jsonl(os.path.join(d, "metrics.jsonl"))
  assert [r["step"] for r in rows] == [0, 1]
  assert all(r["update_norm"] == 0.0 for r in rows)  # every minibatch had the NaN row's group


def test_raising_reward_names_reward_and_sample(base_dir, tmp_path):
  name = "test_raises"
  if name not in rewards_lib.REWARDS:
    def bad(ctx):
      if any("try" in t for t in ctx.texts):
        raise KeyError("boom")
      return np.zeros(len(ctx.texts), np.float32)
    rewards_lib.REWARDS.register(name)(bad)
  with pytest.raises(RuntimeError, match=r"reward 'test_raises' failed on row \d+ \(problem countdown/"):
    launch.run(_config(base_dir, steps=1, reward__name=name), str(tmp_path / "run"))


def test_unwritable_workdir(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("x")
  with pytest.raises(ValueError, match="not writable"):
    launch.run(_config(""), str(blocker / "run"))
  assert blocker.read_text() == "x"


def test_vocab_mismatch_base_is_refused(base_dir, tmp_path):
  other = str(tmp_path / "other_base")
  shutil.copytree(base_dir, other)
  info_path = os.path.join(other, "base", "info.json")
  info = json.load(open(info_path))
  info["model"]["vocab_size"] = 50000
  json.dump(info, open(info_path, "w"))
  with pytest.raises(ValueError, match="vocab_size"):
    launch.run(_config(other), str(tmp_path / "run"))


def test_torn_line_is_cut_and_resume_drops_later_steps(tmp_path):
  path = str(tmp_path / "m.jsonl")
  w = JsonlWriter(path)
  for s in range(4):
    w.write({"step": s, "x": float("nan") if s == 1 else 1.0})
  w.close()
  with open(path, "a") as f:
    f.write('{"step": 4, "x": 1.')  # a kill in the middle of a write
  w = JsonlWriter(path)
  rows = read_jsonl(path)
  assert [r["step"] for r in rows] == [0, 1, 2, 3] and rows[1]["x"] is None
  assert w.truncate_after(2) == 2
  assert [r["step"] for r in read_jsonl(path)] == [0, 1]
