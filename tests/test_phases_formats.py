"""rldyn.phases reads other trainers' logs: verl console, TensorBoard, TRL trainer_state.json.

The fixtures in tests/fixtures/phases/ were generated from
`synthetic.make_log(120, shape="linear", noise=0.05, missing_frac=0.0,
tau_frac=0.45, seed=21)` with steps shifted by one (verl and TRL count from 1),
so every parsed value can be checked against the generator.
"""
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from rldyn.phases import analyse, read_metrics, tfevents
from rldyn.phases.io import FORMATS, sniff_format
from rldyn.phases.synthetic import make_log

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_FIX = os.path.join(_REPO, "tests", "fixtures", "phases")
_NAMES = ["entropy/execution", "ppl/execution_rel", "semantic_entropy/planning", "accuracy"]
_VERL_KEYS = {"entropy/execution": "actor/entropy", "ppl/execution_rel": "actor/ppl_exec_rel",
              "semantic_entropy/planning": "hicra/sg_semantic_entropy",
              "accuracy": "critic/score/mean"}
_TRL_KEYS = {"entropy/execution": "entropy", "ppl/execution_rel": "ppl_exec_rel",
             "semantic_entropy/planning": "se_planning", "accuracy": "reward"}
_TAU = 0.45 * 119 + 1  # the fixtures' boundary, in their (1-based) steps


def _truth():
  recs, _ = make_log(120, shape="linear", noise=0.05, missing_frac=0.0, tau_frac=0.45, seed=21)
  return {s + 1: m for s, m in recs}


def _by_step(log):
  out = {}
  for s, m in log.records:
    out.setdefault(s, {}).update({k: v for k, v in m.items() if np.isfinite(v)})
  return out


def test_verl_console_log_values_match_the_generator():
  path = os.path.join(_FIX, "verl_console.log")
  assert sniff_format(path) == "verl"
  log = read_metrics(path, keys=_VERL_KEYS, names=_NAMES)
  assert log.format == "verl" and not log.bad_lines and not log.no_step
  got, truth = _by_step(log), _truth()
  assert sorted(got) == list(range(0, 122))  # step:0 validation line .. torn step:121
  for s in range(1, 121):
    # Even lines print f"{v:.3f}", odd ones pprint's np.float64(v) repr (full precision).
    tol = 0.0 if s % 2 == 0 else 5e-4
    for n in _NAMES:
      assert abs(got[s][n] - truth[s][n]) <= tol, (s, n, got[s][n], truth[s][n])
  assert got[121] == {"entropy/execution": 0.3}
  assert "timing_s/gen" in log.fields and "actor/entropy" in log.fields


def test_trl_trainer_state_log_history():
  path = os.path.join(_FIX, "trainer_state.json")
  assert sniff_format(path) == "trl"
  log = read_metrics(path, keys=_TRL_KEYS, names=_NAMES)
  assert log.format == "trl" and not log.bad_lines and not log.no_step
  got, truth = _by_step(log), _truth()
  assert sorted(got) == list(range(1, 121))
  for s in range(1, 121):
    for n in _NAMES:
      assert got[s][n] == pytest.approx(truth[s][n], abs=1e-6)
  # The eval entries (every 40 steps) and the final summary entry share steps
  # with training entries; they carry none of the mapped names.
  assert len(log.records) == 120 + 3 + 1
  assert {"eval_loss", "train_runtime", "completions/mean_length"} <= set(log.fields)


def _write_tensorboard(logdir, truth, resumed_at=None):
  """Two runs' event files as tensorboardX writes them (scalars, a histogram, text)."""
  tbx = pytest.importorskip("tensorboardX")
  from tensorboardX.proto.summary_pb2 import Summary  # pylint: disable=g-import-not-at-top
  from tensorboardX.proto.tensor_pb2 import TensorProto  # pylint: disable=g-import-not-at-top
  from tensorboardX.proto.tensor_shape_pb2 import TensorShapeProto  # pylint: disable=g-import-not-at-top
  steps = sorted(truth)
  parts = [steps] if resumed_at is None else [steps[:resumed_at + 10], steps[resumed_at:]]
  for k, part in enumerate(parts):
    w = tbx.SummaryWriter(str(logdir), filename_suffix=f".{k}")
    for s in part:
      m = truth[s]
      w.add_scalar("actor/entropy", m["entropy/execution"], s)           # simple_value
      w.add_scalar("actor/ppl_exec_rel", m["ppl/execution_rel"] + 100 * k, s)
      # TF2 / new-style scalars: a 0-d float tensor, and a float64 as tensor_content.
      plan = TensorProto(dtype=1, float_val=[m["semantic_entropy/planning"]],
                         tensor_shape=TensorShapeProto())
      acc = TensorProto(dtype=2, tensor_content=struct.pack("<d", m["accuracy"]),
                        tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=1)]))
      w._get_file_writer().add_summary(Summary(value=[  # pylint: disable=protected-access
          Summary.Value(tag="hicra/sg_semantic_entropy", tensor=plan),
          Summary.Value(tag="critic/score/mean", tensor=acc)]), s)
      if s % 30 == 0:
        w.add_histogram("actor/logits", np.arange(10.0), s)
        w.add_text("samples", "<think>...", s)
    w.close()


def test_tensorboard_events_read_without_tensorflow(tmp_path):
  truth = _truth()
  run = tmp_path / "tensorboard_log" / "countdown" / "run1"
  _write_tensorboard(run, truth, resumed_at=60)
  files = tfevents.event_files(str(tmp_path / "tensorboard_log"))
  assert len(files) == 2
  assert sniff_format(str(tmp_path / "tensorboard_log")) == "tensorboard"
  assert sniff_format(files[0]) == "tensorboard"
  log = read_metrics(str(tmp_path / "tensorboard_log"), keys=_VERL_KEYS, names=_NAMES)
  assert log.format == "tensorboard" and not log.bad_lines
  got = _by_step(log)
  assert sorted(got) == list(range(1, 121))
  for s in range(1, 121):
    for n in _NAMES:
      # float32 on disk; the resumed run's file (sorted after) overrides steps 61-70.
      want = truth[s][n] + (100 if n == "ppl/execution_rel" and s > 60 else 0)
      assert got[s][n] == pytest.approx(want, rel=1e-6), (s, n)
  assert "actor/logits" not in log.fields and "samples" not in log.fields
  # The reader needs neither TensorFlow, tensorboard nor protobuf.
  code = ("import sys; from rldyn.phases import read_metrics; "
          f"log = read_metrics({str(tmp_path / 'tensorboard_log')!r}); "
          "assert len(log.records) > 100, log.summary(); "
          "heavy = [m for m in ('tensorflow', 'tensorboard', 'google.protobuf', 'tensorboardX') "
          "if m in sys.modules]; assert not heavy, heavy")
  env = dict(os.environ, PYTHONPATH=_REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                        timeout=60, check=False)
  assert proc.returncode == 0, proc.stderr


def test_tensorboard_damage_is_counted_not_raised(tmp_path):
  truth = _truth()
  _write_tensorboard(tmp_path, truth)
  (path,) = tfevents.event_files(str(tmp_path))
  data = bytearray(open(path, "rb").read())
  data[200] ^= 0xFF                     # a flipped byte inside one record: checksum fails
  bad = tmp_path / "events.out.tfevents.1.damaged"
  bad.write_bytes(bytes(data[:-7]))     # and a torn last record
  for p in tfevents.event_files(str(tmp_path)):
    if p != str(bad):
      os.remove(p)
  log = read_metrics(str(tmp_path), keys=_VERL_KEYS, names=_NAMES)
  assert log.bad_lines == 2             # one checksum failure, one torn file end
  assert 110 <= len(_by_step(log)) <= 120
  garbage = tmp_path / "x.tfevents.garbage"
  garbage.write_bytes(os.urandom(4096))
  log = read_metrics(str(garbage), names=_NAMES)
  assert log.records == [] and log.error and log.bad_lines == 1


def test_crc32c_matches_the_standard_check_value():
  assert tfevents.crc32c(b"123456789") == 0xE3069283  # CRC-32C check value (RFC 3720)
  assert tfevents.crc32c(b"") == 0


@pytest.mark.parametrize("fixture,keys,fmt", [
    ("verl_console.log", _VERL_KEYS, "verl"),
    ("trainer_state.json", _TRL_KEYS, "trl"),
])
def test_foreign_logs_give_the_arc(tmp_path, fixture, keys, fmt):
  result, log = analyse(os.path.join(_FIX, fixture), str(tmp_path), keys=keys, plot=False)
  assert log.format == fmt
  assert result.detected and abs(result.boundary_step - _TAU) <= 6, result.reason
  out = json.loads((tmp_path / "phases.json").read_text())
  assert out["detected"] and out["boundary_step"] == result.boundary_step


def test_unmapped_foreign_log_says_which_fields_it_has(tmp_path):
  result, _ = analyse(os.path.join(_FIX, "verl_console.log"), str(tmp_path), plot=False)
  assert not result.detected
  assert "None of the phase signals" in result.reason
  assert "actor/entropy" in result.reason and "--keys" in result.reason


def test_unknown_format_names_the_choices(tmp_path):
  with pytest.raises(ValueError, match="choose one of auto, jsonl, csv, tsv, verl"):
    read_metrics(os.path.join(_FIX, "verl_console.log"), format="wandb")
  assert FORMATS[0] == "auto"


def test_cli_on_tensorboard_folder_and_verl_log(tmp_path):
  _write_tensorboard(tmp_path / "tb", _truth())
  env = dict(os.environ, PYTHONPATH=_REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  keys = ",".join(f"{k}={v}" for k, v in _VERL_KEYS.items())
  for target in (tmp_path / "tb", os.path.join(_FIX, "verl_console.log")):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "rldyn.phases", f"--metrics={target}",
                           f"--out_dir={out}", f"--keys={keys}", "--noplot"],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "DETECTED" in proc.stdout, proc.stdout
    assert abs(json.loads((out / "phases.json").read_text())["boundary_step"] - _TAU) <= 6
