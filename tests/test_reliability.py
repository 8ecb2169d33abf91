"""Fault injection: damage a run every way we know, resume, and demand the uninterrupted run's metrics.

Every case ends in one of two ways: recovered (the resumed run's metrics.jsonl equals the reference run's
on every non-timing key, each step once, and nothing bad was silently restored), or refused with a
message that leaves the workdir as it was. The README's reliability section reports these counts.
"""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import smoke_config
from rldyn import launch
from rldyn import runtime
from rldyn.checkpoint import MANIFEST
from rldyn.config import ConfigError
from rldyn.metrics.writers import read_jsonl
from rldyn.rl.emit import TIMING_KEYS
from rldyn.workdir import Workdir, WorkdirBusy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 6


def _config(base, **overrides):
  return smoke_config(base, rl__steps=STEPS, checkpoint__every=2, eval__every=3, **overrides)


def _comparable(path: str) -> list[dict]:
  return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in read_jsonl(path)]


def _events(d: str) -> list[dict]:
  return read_jsonl(os.path.join(d, "events.jsonl"))


@pytest.fixture(scope="module")
def reference(smoke_base, tmp_path_factory):
  d = str(tmp_path_factory.mktemp("reference"))
  launch.run(_config(smoke_base), d)
  return d


@pytest.fixture
def finished_copy(reference, tmp_path):
  """A copy of the finished reference run, to damage."""
  d = str(tmp_path / "run")
  shutil.copytree(reference, d)
  return d


def _assert_recovered(d: str, reference: str) -> None:
  got = _comparable(os.path.join(d, "metrics.jsonl"))
  assert [r["step"] for r in got] == list(range(STEPS))  # every step, once
  assert got == _comparable(os.path.join(reference, "metrics.jsonl"))
  assert _comparable(os.path.join(d, "eval.jsonl")) == _comparable(os.path.join(reference, "eval.jsonl"))


def _data_files(step_dir: str) -> list[str]:
  out = []
  for root, _, files in os.walk(step_dir):
    out += [os.path.join(root, f) for f in files if f != MANIFEST and os.path.getsize(os.path.join(root, f))]
  return sorted(out, key=os.path.getsize)


def _redo_last_steps(d: str) -> None:
  """As if the run had died after step 5's checkpoint 6 started: drop it, so resume needs checkpoint 4."""
  shutil.rmtree(os.path.join(d, "checkpoints", "6"))


@pytest.mark.parametrize("damage", ["flip_largest", "flip_every_file", "truncate", "delete_file"])
def test_damaged_checkpoint_is_set_aside_and_the_run_recovers(finished_copy, reference, smoke_base, damage):
  d = finished_copy
  _redo_last_steps(d)
  files = _data_files(os.path.join(d, "checkpoints", "4"))
  rng = random.Random(damage)
  targets = files if damage == "flip_every_file" else [files[-1]]
  for path in targets:
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
      if damage == "truncate":
        f.truncate(size // 2)
      elif damage != "delete_file":
        pos = rng.randrange(size)
        f.seek(pos)
        byte = f.read(1)
        f.seek(pos)
        f.write(bytes([byte[0] ^ 0x40]))
    if damage == "delete_file":
      os.remove(path)
  launch.run(_config(smoke_base), d)
  events = _events(d)
  assert any(e["event"] == "checkpoint_unreadable" and e["step"] == 4 for e in events)
  assert [e for e in events if e["event"] == "run_resume"][-1]["step"] == 2
  assert os.listdir(os.path.join(d, "checkpoints.corrupt"))
  _assert_recovered(d, reference)


def test_checkpoint_whose_meta_names_another_step_is_not_restored(finished_copy, reference, smoke_base):
  d = finished_copy
  _redo_last_steps(d)
  ck = os.path.join(d, "checkpoints")
  shutil.rmtree(os.path.join(ck, "4"))
  shutil.copytree(os.path.join(ck, "2"), os.path.join(ck, "4"))  # step 4's directory, step 2's content
  launch.run(_config(smoke_base), d)
  bad = [e for e in _events(d) if e["event"] == "checkpoint_unreadable"]
  assert bad and "meta says step 2" in bad[-1]["error"]
  _assert_recovered(d, reference)


def test_incompatible_checkpoint_is_refused_and_left_untouched(finished_copy, smoke_base):
  d = finished_copy
  before = sorted(os.listdir(os.path.join(d, "checkpoints")))
  metrics = open(os.path.join(d, "metrics.jsonl")).read()
  c = _config(smoke_base, model__d_ff=96)
  c.resume_anyway = True
  with pytest.raises(ConfigError, match="other shape"):
    launch.run(c, d)
  assert sorted(os.listdir(os.path.join(d, "checkpoints"))) == before
  assert not os.path.exists(os.path.join(d, "checkpoints.corrupt"))
  assert open(os.path.join(d, "metrics.jsonl")).read() == metrics


@pytest.mark.parametrize("damage", [b"{not json\n", b"\x00" * 4096 + b"\n", b'{"step": 1, "x": \xff\xfe}\n',
                                    b"[1, 2]\n"])
def test_log_damaged_in_the_middle_heals_without_duplicates(finished_copy, reference, smoke_base, damage):
  d = finished_copy
  _redo_last_steps(d)
  path = os.path.join(d, "metrics.jsonl")
  lines = open(path, "rb").read().splitlines(keepends=True)
  with open(path, "wb") as f:
    f.write(b"".join(lines[:2]) + damage + b"".join(lines[2:]))
  epath = os.path.join(d, "eval.jsonl")
  with open(epath, "ab") as f:
    f.write(damage)
  launch.run(_config(smoke_base), d)
  _assert_recovered(d, reference)
  repaired = [e for e in _events(d) if e["event"] == "log_repaired"]
  assert {e["log"] for e in repaired} >= {"metrics.jsonl", "eval.jsonl"}
  assert all(e["bad_lines"] == 1 for e in repaired)
  assert os.path.getsize(path + ".bad") > 0


def _cmd(workdir: str, base: str, steps: int = STEPS) -> list[str]:
  return [sys.executable, "-m", "rldyn.main", "--config=experiments/two_phase.py:smoke",
          f"--workdir={workdir}", f"--config.base_workdir={base}", "--config.reward.name=random",
          f"--config.rl.steps={steps}", "--config.checkpoint.every=2", "--config.eval.every=3",
          "--config.pretrain.steps=20"]  # as conftest.smoke_config, so CLI and in-process runs share a config


def _env():
  return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8",
              RLDYN_COMPILE_CACHE=os.path.join(ROOT, ".jax_cache"))


def _wait_for_lines(path: str, n: int, proc, timeout: float = 300) -> None:
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None and len(read_jsonl(path)) < n:
    time.sleep(0.05)


def test_sigterm_at_a_random_step_checkpoints_exits_75_and_resumes_exactly(reference, smoke_base, tmp_path):
  d = str(tmp_path / "run")
  proc = subprocess.Popen(_cmd(d, smoke_base), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  _wait_for_lines(os.path.join(d, "metrics.jsonl"), random.Random(os.getpid()).randint(1, 3), proc)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == runtime.PREEMPTED_EXIT, err[-2000:]
  stopped = [e for e in _events(d) if e["event"] == "preempted"]
  assert len(stopped) == 1 and stopped[0]["step"] in Workdir(d).checkpoint_steps()
  out = subprocess.run(_cmd(d, smoke_base), cwd=ROOT, env=_env(), capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-2000:]
  assert [e for e in _events(d) if e["event"] == "run_resume"][-1]["step"] == stopped[0]["step"]
  _assert_recovered(d, reference)


def test_a_second_writer_is_refused_while_the_first_runs(reference, smoke_base, tmp_path):
  d = str(tmp_path / "run")
  first_err = open(tmp_path / "first.stderr", "w+")  # a file, not a pipe: nobody reads it while it runs
  proc = subprocess.Popen(_cmd(d, smoke_base), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                          stderr=first_err)
  _wait_for_lines(os.path.join(d, "metrics.jsonl"), 1, proc)
  assert proc.poll() is None, "the first run ended before the second could race it"
  with pytest.raises(WorkdirBusy, match=f"in use by pid {proc.pid}"):
    launch.run(_config(smoke_base), d)
  second = subprocess.run(_cmd(d, smoke_base), cwd=ROOT, env=_env(), capture_output=True, text=True)
  assert second.returncode == 2 and "is in use by pid" in second.stderr, second.stderr[-3000:]
  rc = proc.wait(timeout=300)
  first_err.seek(0)
  assert rc == 0, f"the first run exited {rc}:\n{first_err.read()[-5000:]}"
  _assert_recovered(d, reference)


def test_a_reader_leaves_the_save_in_flight_of_a_live_run_alone(tmp_path):
  """A refused launch, replay or validation opens a workdir another process may be saving into. Opening it
  as a writer removes every half-written (tmp) checkpoint, the live run's save in flight included, and
  that run then dies at its next save (how a refused second launch once killed the first)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from rldyn import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  wd = Workdir(str(tmp_path / "run"))
  tree = {"w": jnp.arange(4.0)}
  writer = wd.checkpointer(async_save=False)
  writer.save(1, tree, {"step": 1})
  writer.close()
  in_flight = os.path.join(wd.checkpoints_dir, "2.orbax-checkpoint-tmp-1700000000")
  os.makedirs(in_flight)
  reader = wd.checkpointer(async_save=False, read_only=True)
  _, meta = reader.restore(1, ckpt_lib.abstract_like(tree))
  assert meta["step"] == 1 and reader.steps() == [1]
  with pytest.raises(RuntimeError, match="read-only"):
    reader.save(2, tree, {"step": 2})
  reader.close()
  assert os.path.isdir(in_flight)
  wd.checkpointer(async_save=False).close()  # a writer starting up: a killed run's tmp save is debris
  deadline = time.time() + 30  # (orbax removes it in the background)
  while os.path.exists(in_flight) and time.time() < deadline:
    time.sleep(0.05)
  assert not os.path.exists(in_flight)


def test_stale_lock_of_a_killed_run_is_taken_over(reference, smoke_base, tmp_path):
  d = str(tmp_path / "run")
  proc = subprocess.Popen(_cmd(d, smoke_base), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  _wait_for_lines(os.path.join(d, "metrics.jsonl"), 2, proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert json.load(open(os.path.join(d, ".lock")))["pid"] == proc.pid  # the dead holder's record
  launch.run(_config(smoke_base), d)
  assert any(e["event"] == "lock_taken_over" and e["previous"]["pid"] == proc.pid for e in _events(d))
  _assert_recovered(d, reference)


@pytest.mark.parametrize("case", ["missing_base", "base_of_another_task", "missing_lexicon", "bad_regex",
                                  "unwritable_data_dir"])
def test_launch_problems_are_found_before_anything_is_written(smoke_base, tmp_path, case):
  """Each of these used to fail only after config.json, logs and base_pointer.json were written."""
  c = _config(smoke_base)
  if case == "missing_base":
    c.base_workdir = str(tmp_path / "nowhere")
  elif case == "base_of_another_task":
    other = str(tmp_path / "arith_base")
    shutil.copytree(smoke_base, other)
    info_path = os.path.join(other, "base", "info.json")
    info = json.load(open(info_path))
    info["task"] = "arithmetic"
    json.dump(info, open(info_path, "w"))
    c.base_workdir = other
  elif case == "missing_lexicon":
    c.roles.tagger = "lexicon"
    c.roles.lexicon_path = str(tmp_path / "no_such_lexicon.json")
  elif case == "bad_regex":
    c.roles.tagger = "spans"
    c.roles.span_patterns = ("<think>(.*", )
  else:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    c.task.data_dir = str(blocker / "tfds")
  run = tmp_path / "run"
  with pytest.raises(ConfigError):
    launch.run(c, str(run))
  assert not run.exists()


def test_a_finished_run_extends_exactly_and_never_shortens(reference, smoke_base, tmp_path):
  d = str(tmp_path / "run")
  launch.run(smoke_config(smoke_base, rl__steps=4, checkpoint__every=2, eval__every=3), d)
  launch.run(_config(smoke_base), d)  # rl.steps 4 -> 6: continues from checkpoint 4
  ext = [e for e in _events(d) if e["event"] == "run_extended"]
  assert len(ext) == 1 and (ext[0]["from_steps"], ext[0]["to_steps"]) == (4, STEPS)
  _assert_recovered(d, reference)
  with pytest.raises(ConfigError, match="extended, not shortened"):
    launch.run(smoke_config(smoke_base, rl__steps=2, checkpoint__every=2, eval__every=3), d)


def test_a_base_from_before_new_model_fields_is_accepted(smoke_base, tmp_path):
  """info.json written before a model field existed (e.g. qk_norm) means that field's default."""
  other = str(tmp_path / "old_base")
  shutil.copytree(smoke_base, other)
  info_path = os.path.join(other, "base", "info.json")
  info = json.load(open(info_path))
  for k in ("qk_norm", "rope_scaling", "rope_hf_freqs"):
    info["model"].pop(k, None)
  json.dump(info, open(info_path, "w"))
  launch.prepare(_config(other), str(tmp_path / "run"))  # no error
  info["model"]["qk_norm"] = True
  json.dump(info, open(info_path, "w"))
  with pytest.raises(ConfigError, match="qk_norm"):
    launch.prepare(_config(other), str(tmp_path / "run"))
