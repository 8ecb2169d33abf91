"""Multi-process runs on JAX's own multi-controller runtime (jax.distributed, CPU collectives over gloo).

The headline test runs the smoke study as 2 processes x 4 CPU devices on localhost and as 1 process x 8
devices, and checks that metrics.jsonl and eval.jsonl agree on every non-timing key (rtol 1e-5, atol
1e-6) and that only process 0 wrote (every event and sample once, the console progress line only on
process 0). A SIGTERM to one process stops both at the same step; a SIGKILL of one process mid-run (the
other killed as a launcher would) loses at most the steps since the last checkpoint; either way the rerun
resumes and matches the uninterrupted run. Pretraining on 2 processes gives the base of 1 process.
"""

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from rldyn import launch
from rldyn import parallel
from rldyn.metrics import writers
from rldyn.metrics.writers import JsonlWriter, read_jsonl
from rldyn.rl.emit import TIMING_KEYS
from rldyn.workdir import Workdir, write_json_atomic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 3
RTOL = 1e-5
# Differences of nearly equal float32 log-probs (the kl/* metrics while θ ≈ θ_ref, ~1e-4) carry absolute
# rounding noise of ~1e-8 that depends on how the collectives sum: compared with this absolute tolerance.
ATOL = 1e-6
OVERRIDES = {"reward.name": "random", "rl.steps": STEPS, "checkpoint.every": 2, "eval.every": 2,
             "pretrain.steps": 20}  # as conftest.smoke_config


def _config(base: str, steps: int = STEPS):
  path = os.path.join(ROOT, "experiments", "two_phase.py")
  spec = importlib.util.spec_from_file_location("two_phase", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config("smoke")
  for k, v in {**OVERRIDES, "base_workdir": base, "rl.steps": steps}.items():
    section, _, key = k.rpartition(".")
    (c[section] if section else c)[key] = v
  return c


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _launch_pair(workdir: str, base: str, steps: int = STEPS, stage: str = "rl") -> list[subprocess.Popen]:
  """Two processes of one run, 4 CPU devices each, through rldyn.main's --coordinator_address flags."""
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4",
             RLDYN_COMPILE_CACHE=os.path.join(ROOT, ".jax_cache"))
  env.pop("RLDYN_DISTRIBUTED", None)
  flags = [f"--config.{k}={v}" for k, v in {**OVERRIDES, "rl.steps": steps, "stage": stage}.items()]
  return [subprocess.Popen(
      [sys.executable, "-m", "rldyn.main", "--config=experiments/two_phase.py:smoke", f"--workdir={workdir}",
       f"--config.base_workdir={base}", *flags, f"--coordinator_address=localhost:{port}",
       "--num_processes=2", f"--process_id={i}"],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]


def _wait(procs: list[subprocess.Popen], timeout: float = 540) -> list[tuple[int, str]]:
  deadline, out = time.time() + timeout, []
  try:
    for p in procs:
      text, _ = p.communicate(timeout=max(deadline - time.time(), 1))
      out.append((p.returncode, text))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  return out


def _assert_same_lines(got: list[dict], want: list[dict]) -> None:
  assert [r["step"] for r in got] == [r["step"] for r in want]
  for g, w in zip(got, want):
    keys = set(w) - set(TIMING_KEYS)
    assert keys == set(g) - set(TIMING_KEYS), (g["step"], sorted(keys ^ (set(g) - set(TIMING_KEYS))))
    for k in sorted(keys):
      if w[k] is None or g[k] is None:
        assert w[k] is g[k], (g["step"], k, g[k], w[k])
      else:
        np.testing.assert_allclose(g[k], w[k], rtol=RTOL, atol=ATOL, err_msg=f"step {g['step']} {k}")


@pytest.fixture(scope="module")
def reference(smoke_base, tmp_path_factory):
  """The study as 1 process x 8 devices (this test process)."""
  d = str(tmp_path_factory.mktemp("one_process"))
  launch.run(_config(smoke_base), d)
  return Workdir(d)


def test_two_processes_equal_one_and_only_process_0_writes(reference, smoke_base, tmp_path):
  d = str(tmp_path / "two")
  results = _wait(_launch_pair(d, smoke_base))
  for rc, text in results:
    assert rc == 0, text[-3000:]
  assert "[rldyn] 8 cpu device(s)" in results[0][1]
  assert "[rl] step" in results[0][1] and "[rl] step" not in results[1][1]  # the console line: process 0
  wd = Workdir(d)
  _assert_same_lines(wd.read_metrics(), reference.read_metrics())
  _assert_same_lines(wd.read_evals(), reference.read_evals())
  # One writer: every event and sample once, the lock file recorded (and cleared) by process 0 only.
  names = [e["event"] for e in wd.read_events()]
  assert names.count("run_start") == 1 and names.count("run_end") == 1
  assert names.count("checkpoint_saved") == len(wd.checkpoint_steps()) == 2
  assert [(s["step"], s["response"]) for s in wd.read_samples()] == \
      [(s["step"], s["response"]) for s in reference.read_samples()]
  assert wd.saved_config() == reference.saved_config()
  assert not [n for n in os.listdir(d) if n.endswith((".bad", ".tmp"))]


def test_sigterm_to_one_process_stops_both_at_the_same_step_and_the_rerun_matches(
    reference, smoke_base, tmp_path):
  d = str(tmp_path / "preempted")
  procs = _launch_pair(d, smoke_base)
  events = os.path.join(d, "events.jsonl")
  deadline = time.time() + 400  # run_start: both processes are in the loop, step 0 (compiles) ahead
  while time.time() < deadline and not read_jsonl(events) and all(p.poll() is None for p in procs):
    time.sleep(0.05)
  procs[1].send_signal(signal.SIGTERM)  # the non-writer only: the stop is agreed at the next step boundary
  results = _wait(procs)
  assert [rc for rc, _ in results] == [75, 75], [t[-2000:] for _, t in results]
  stops = [e["step"] for e in Workdir(d).read_events() if e["event"] == "preempted"]
  assert len(stops) == 1 and stops[0] < STEPS and stops[0] in Workdir(d).checkpoint_steps()
  for _, text in results:  # each process says where it stopped: the same step
    assert f"stopped at RL step {stops[0]} (SIGTERM)" in text, text[-2000:]
  for rc, text in _wait(_launch_pair(d, smoke_base)):
    assert rc == 0, text[-3000:]
  _assert_same_lines(Workdir(d).read_metrics(), reference.read_metrics())


def test_sigkill_of_one_process_mid_run_and_a_rerun_of_both_resumes_exactly(reference, smoke_base, tmp_path):
  """A host dies without warning (SIGKILL) after the first checkpoint; the other is killed as a launcher
  would (it may be stuck in a collective); rerunning both resumes from the last complete checkpoint.

  The run is 2 steps longer than the reference so the kill lands mid-run; its first STEPS lines (and the
  evaluations before the reference's final one) must equal the uninterrupted reference's (the RL learning
  rate is constant, so nothing before step STEPS depends on rl.steps)."""
  d, steps = str(tmp_path / "killed"), STEPS + 2
  procs = _launch_pair(d, smoke_base, steps=steps)
  events = os.path.join(d, "events.jsonl")
  deadline = time.time() + 400
  while (time.time() < deadline and all(p.poll() is None for p in procs) and
         not [e for e in read_jsonl(events) if e["event"] == "checkpoint_saved"]):
    time.sleep(0.02)
  procs[1].kill()
  try:
    procs[0].wait(timeout=60)
  except subprocess.TimeoutExpired:
    procs[0].kill()
  out = _wait(procs, timeout=30)
  names = [e["event"] for e in read_jsonl(events)]
  assert "checkpoint_saved" in names and "run_end" not in names, (names, [t[-1500:] for _, t in out])
  for rc, text in _wait(_launch_pair(d, smoke_base, steps=steps)):
    assert rc == 0, text[-3000:]
  wd = Workdir(d)
  got = wd.read_metrics()
  assert [r["step"] for r in got] == list(range(steps))
  _assert_same_lines(got[:STEPS], reference.read_metrics())
  _assert_same_lines([e for e in wd.read_evals() if e["step"] < STEPS],
                     [e for e in reference.read_evals() if e["step"] < STEPS])
  assert [e["event"] for e in wd.read_events()].count("run_end") == 1


def test_a_busy_workdir_stops_both_processes(smoke_base, tmp_path):
  """Process 0 cannot take the lock: both processes exit 2 at once (process 1 does not wait in a collective)."""
  d = str(tmp_path / "busy")
  os.makedirs(d)
  with Workdir(d).lock():
    results = _wait(_launch_pair(d, smoke_base), timeout=300)
  assert [rc for rc, _ in results] == [2, 2], [t[-2000:] for _, t in results]
  assert f"in use by pid {os.getpid()}" in results[0][1]
  assert "is in use" in results[1][1]


def test_two_processes_pretrain_the_same_base(smoke_base, tmp_path):
  d = str(tmp_path / "base")
  for rc, text in _wait(_launch_pair(d, "", stage="pretrain")):
    assert rc == 0, text[-3000:]
  got, want = Workdir(d), Workdir(smoke_base)
  lines = lambda w: [{k: v for k, v in r.items() if k != "perf/tok_s"}  # noqa: E731  (timing)
                     for r in read_jsonl(w.base_metrics_path)]
  _assert_same_lines(lines(got), lines(want))
  mine, ref = got.base_info(), want.base_info()
  assert mine["steps"] == ref["steps"] == 20
  for k in ("eval/accuracy", "eval/pass@1"):
    np.testing.assert_allclose(mine[k], ref[k], rtol=RTOL)
  events = [(e["event"], e["step"]) for e in got.read_events()]
  assert len(events) == len(set(events))  # each written once


# ---- the single-writer rule and epath workdirs, in this process ------------------------------------------


def test_a_process_other_than_0_writes_nothing(monkeypatch, tmp_path):
  import jax  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  assert not writers.is_writer()
  wd = Workdir(str(tmp_path / "run"))
  wd.ensure()
  with wd.lock():
    wd.event("run_start", 0)
    write_json_atomic(wd.config_path, {"a": 1})
    w = JsonlWriter(wd.metrics_path, unique_key="step")
    w.write({"step": 0})
    assert w.truncate_after(0) == 0
    w.close()
  assert not os.path.exists(tmp_path / "run")
  monkeypatch.setattr(jax, "process_index", lambda: 0)
  wd.ensure()
  wd.event("run_start", 0)
  assert [e["event"] for e in wd.read_events()] == ["run_start"]


def test_rows_of_a_process_are_whole_groups_and_fetch_reads_only_its_own(monkeypatch):
  import jax  # pylint: disable=g-import-not-at-top
  mesh = parallel.make_mesh(parallel.MeshConfig())
  assert parallel.process_rows(mesh, 16, multiple=2) == slice(0, 16)  # one process: every row
  x = parallel.shard_batch(mesh, {"a": np.arange(16 * 3).reshape(16, 3)})["a"]
  np.testing.assert_array_equal(parallel.fetch_rows(x, slice(4, 12)), np.arange(16 * 3).reshape(16, 3)[4:12])
  assert parallel.allgather_objects(["é", {"k": 1}]) == ["é", {"k": 1}]
  assert parallel.any_process(True) and not parallel.any_process(False)
  # What process 1 of 2 would hold on this mesh: devices 4..7 -> rows 8..15; groups of 4 are whole, of 3 not.
  local = set(jax.devices()[4:])
  real = parallel.batch_sharding

  class _Half:
    def __init__(self, s):
      self.s = s

    def addressable_devices_indices_map(self, shape):
      return {d: i for d, i in self.s.devices_indices_map(shape).items() if d in local}

  monkeypatch.setattr(parallel, "batch_sharding", lambda m, nd: _Half(real(m, nd)))
  assert parallel.process_rows(mesh, 16, multiple=4) == slice(8, 16)
  with pytest.raises(ValueError, match="whole groups of 3"):
    parallel.process_rows(mesh, 16, multiple=3)


def _gcs_mock(tmp_path):
  """epath's gs:// backend replaced by a local directory that, like an object store, cannot append."""
  from etils.epath import testing  # pylint: disable=g-import-not-at-top
  local = lambda p: str(p).replace("gs://", str(tmp_path) + "/")  # noqa: E731

  def opener(open_fn, path, mode):
    assert "a" not in mode, "object stores cannot append"
    return open_fn(local(path), mode)

  fns = {name: (lambda f, p, *a, **k: f(local(p), *a, **k)) for name in (
      "exists", "isdir", "listdir", "makedirs", "mkdir", "remove", "rmtree", "stat")}
  fns["walk"] = lambda f, p, *a, **k: f(local(p), *a, **k)
  fns["glob"] = lambda f, p: [q.replace(str(tmp_path) + "/", "gs://") for q in f(local(p))]
  fns["rename"] = fns["replace"] = lambda f, p, q: f(local(p), local(q))
  return testing.mock_epath(open=opener, **fns)


def test_gs_workdir_logs_config_and_reads_through_epath(tmp_path):
  with _gcs_mock(tmp_path):
    wd = Workdir("gs://bucket/run/")
    assert wd.root == "gs://bucket/run" and wd.metrics_path == "gs://bucket/run/metrics.jsonl"
    wd.check_writable()
    wd.ensure()
    write_json_atomic(wd.config_path, {"seed": 3})
    assert wd.saved_config() == {"seed": 3}
    w = JsonlWriter(wd.metrics_path, unique_key="step")
    for step in range(3):
      w.write({"step": step, "loss": float(step)})
    assert w.truncate_after(2) == 1
    w.write({"step": 2, "loss": 7.0})
    w.close()
    assert [r["loss"] for r in wd.read_metrics()] == [0.0, 1.0, 7.0]
    wd.event("run_start", 0)
    assert wd.read_events()[0]["event"] == "run_start"
    assert wd.checkpoint_steps() == []
  with open(tmp_path / "bucket" / "run" / "metrics.jsonl") as f:  # where the mock keeps the objects
    assert [json.loads(x)["step"] for x in f] == [0, 1, 2]


def test_gs_checkpoint_manifest_through_epath(tmp_path):
  from rldyn import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  os.makedirs(tmp_path / "bucket" / "ck" / "7" / "state")
  (tmp_path / "bucket" / "ck" / "7" / "state" / "a").write_bytes(b"abc")
  (tmp_path / "bucket" / "ck" / "7" / "meta").write_bytes(b"{}")
  with _gcs_mock(tmp_path):
    ckpt_lib.write_manifest("gs://bucket/ck/7")
    assert ckpt_lib.verify_manifest("gs://bucket/ck/7") is None
    manifest = json.loads((tmp_path / "bucket" / "ck" / "7" / ckpt_lib.MANIFEST).read_text())
    assert manifest["files"] == {"meta": [2, 2745614147], "state/a": [3, 891568578]}  # zlib.crc32
    (tmp_path / "bucket" / "ck" / "7" / "state" / "a").write_bytes(b"abd")
    assert "does not match its checksum" in ckpt_lib.verify_manifest("gs://bucket/ck/7")
