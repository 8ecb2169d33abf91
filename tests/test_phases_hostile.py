"""rldyn.phases never raises on bad content, and its numerics are scale-free.

One test per reported failure (each crashed, or answered wrongly, before the fix).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from rldyn.phases import PhaseConfig, analyse, detect
from rldyn.phases.report import write_json_atomic
from rldyn.phases.synthetic import make_log

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_EXEC = "entropy/execution"
_PLAN = "semantic_entropy/planning"


def _arc(seed=13):
  return make_log(300, shape="linear", noise=0.1, seed=seed)


def _jsonl(recs) -> bytes:
  return b"".join(json.dumps({"step": s, **m}).encode() + b"\n" for s, m in recs)


def _analyse_bytes(tmp_path, name, content):
  path = tmp_path / name
  path.write_bytes(content)
  return analyse(str(path), str(tmp_path / "out"), plot=False)


@pytest.fixture(scope="module")
def clean():
  recs, tau = _arc()
  return recs, tau, detect(recs)


def test_non_utf8_bytes(tmp_path, clean):
  recs, _, base = clean
  junk = _jsonl(recs[:150]) + b'{"step": 999, "note": "\xff\xfe\x80"}\n\xc3\x28\n' + _jsonl(recs[150:])
  result, log = _analyse_bytes(tmp_path, "m.jsonl", junk)
  assert log.undecodable == 2 and log.bad_lines == 1  # the bare "\xc3(" line
  assert result.detected and result.boundary_step == base.boundary_step
  assert "non-UTF-8" in result.reason
  junk_csv = b"step,entropy/execution\n1,0.5\n2,\xff\xfe\n3,0.4\n"
  _, log = _analyse_bytes(tmp_path, "m.csv", junk_csv)
  assert [s for s, _ in log.records] == [1, 2, 3] and np.isnan(log.records[1][1][_EXEC])


def test_a_line_of_a_hundred_thousand_brackets(tmp_path, clean):
  recs, _, base = clean
  for bracket in (b"[", b"{\"a\":"):
    result, log = _analyse_bytes(tmp_path, "m.jsonl", _jsonl(recs) + bracket * 100_000 + b"\n")
    assert log.bad_lines == 1 and result.boundary_step == base.boundary_step
  nested_value = b'{"step": 3, "entropy/execution": ' + b"[" * 100_000 + b"\n"
  _, log = _analyse_bytes(tmp_path, "m.jsonl", _jsonl(recs) + nested_value)
  assert log.bad_lines == 1


def test_four_hundred_digit_numbers(tmp_path, clean):
  recs, _, base = clean
  big = b"9" * 400
  content = (_jsonl(recs) + b'{"step": 7, "entropy/execution": ' + big + b"}\n"
             + b'{"step": ' + big + b', "entropy/execution": 0.5}\n')
  result, log = _analyse_bytes(tmp_path, "m.jsonl", content)
  assert log.no_step == 1 and result.boundary_step == base.boundary_step
  assert detect([(1, {_EXEC: int("9" * 400)})]).signals[_EXEC].n == 0


def test_csv_field_over_the_csv_module_limit(tmp_path, clean):
  recs, _, base = clean
  rows = [f"{s},{m[_EXEC]},{m[_PLAN]}" for s, m in recs]
  rows.insert(100, "100," + "x" * 140_000 + ",0.5")
  rows.insert(200, '200,"' + "y" * 200_000 + '",0.5')  # a quoted one, too
  content = ("step,entropy/execution,semantic_entropy/planning\n" + "\n".join(rows) + "\n")
  result, log = _analyse_bytes(tmp_path, "m.csv", content.encode())
  assert log.bad_lines == 2 and len(log.records) == 300
  assert result.detected and abs(result.boundary_step - base.boundary_step) <= 3


@pytest.mark.parametrize("how", ["times 1e300", "times 1e-20", "plus 1e9", "full range"])
def test_value_scale_and_offset_do_not_matter(clean, how):
  recs, _, base = clean
  f = {"times 1e300": lambda v: v * 1e300, "times 1e-20": lambda v: v * 1e-20,
       "plus 1e9": lambda v: v + 1e9, "full range": lambda v: (v - 0.9) * 1.7e308}[how]
  moved = detect([(s, {k: None if v is None else f(v) for k, v in m.items()}) for s, m in recs])
  assert moved.detected and moved.boundary_step == base.boundary_step
  assert moved.delta_bic == pytest.approx(base.delta_bic, rel=1e-6)
  json.dumps(moved.to_json(), allow_nan=False)
  if how == "times 1e300":  # reported slopes are in the log's units
    slope = moved.signals[_EXEC].slope_before
    assert slope == pytest.approx(base.signals[_EXEC].slope_before * 1e300, rel=1e-6)


def test_values_near_the_float_limit_through_the_file(tmp_path, clean):
  recs, _, base = clean
  scaled = [(s, {k: None if v is None else v * 1e300 for k, v in m.items()}) for s, m in recs]
  result, _ = _analyse_bytes(tmp_path, "m.jsonl", _jsonl(scaled))
  assert result.detected and result.boundary_step == base.boundary_step
  assert json.loads((tmp_path / "out" / "phases.json").read_text())["detected"]


def test_step_numbers_beyond_float_differences():
  recs = [(s, {_EXEC: float(s % 7), _PLAN: float(s % 5)}) for s in range(20)]
  recs += [(-1e308, {_EXEC: 1.0}), (1.5e308, {_EXEC: 2.0})]
  result = detect(recs)
  assert not result.detected and "renumber" in result.reason


def test_nan_threshold_is_rejected_up_front_and_leaves_no_file(tmp_path):
  with pytest.raises(ValueError, match="bic_threshold must be a finite number"):
    PhaseConfig(bic_threshold=float("nan"))
  path = tmp_path / "m.jsonl"
  path.write_bytes(_jsonl(_arc()[0]))
  env = dict(os.environ, PYTHONPATH=_REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run([sys.executable, "-m", "rldyn.phases", f"--metrics={path}",
                         f"--out_dir={tmp_path / 'out'}", "--bic_threshold=nan", "--noplot"],
                        capture_output=True, text=True, env=env, timeout=120, check=False)
  assert proc.returncode != 0
  assert "bic_threshold must be a finite number" in proc.stderr
  assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


def test_failed_write_removes_its_temp_file(tmp_path):
  with pytest.raises(ValueError):
    write_json_atomic(str(tmp_path / "phases.json"), {"confidence": float("nan")})
  assert os.listdir(tmp_path) == []


def test_one_step_and_constant_logs_say_so():
  recs, _ = _arc()
  one = detect(recs[:1])
  assert not one.detected and "single usable step (step 0)" in one.reason
  const = detect([(s, {_EXEC: 0.5, _PLAN: 1.0, "ppl/execution_rel": 1.0}) for s in range(200)])
  assert not const.detected
  assert "constant over the log" in const.reason and "entropy/execution = 0.5" in const.reason
  half = detect([(s, {_EXEC: 0.5}) for s in range(200)])
  assert "constant" in half.reason and "absent" in half.reason


def test_random_bytes_in_every_format_never_raise(tmp_path):
  rng = np.random.default_rng(0)
  for fmt in ("jsonl", "csv", "tsv", "verl", "tensorboard", "trl"):
    for k in range(3):
      path = tmp_path / f"junk{k}.{fmt}"
      blob = rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()
      path.write_bytes(blob if k else blob.replace(b"\n", b"\n{\"step\": 1, ") + b"\n")
      result, log = analyse(str(path), str(tmp_path / "out"), plot=False, format=fmt)
      assert not result.detected and result.reason
      json.loads((tmp_path / "out" / "phases.json").read_text())
      assert log.format == fmt
