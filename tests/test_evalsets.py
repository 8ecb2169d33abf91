"""Tests for the TFDS-backed held-out eval sets and the JSONL loader."""

import json
import sys

import numpy as np
import pytest

from rldyn import tasks
from rldyn.tasks import base
from rldyn.tasks import evalsets


# Tasks whose held-out problems are generated (textmath reads them from a file: tests/test_textmath.py).
GENERATED = sorted(n for n, cls in tasks.TASKS.items() if cls.has_role_truth)


@pytest.mark.parametrize("name", GENERATED)
def test_eval_set_builds_offline_and_reads_back(name, tmp_path):
  task = tasks.make_task(name)
  first = evalsets.load_eval_set(task, 64, seed=1, data_dir=str(tmp_path))
  second = evalsets.load_eval_set(task, 64, seed=1, data_dir=str(tmp_path))
  assert first == second == evalsets.generate_eval_problems(task, 64, seed=1)
  assert all(isinstance(p, tasks.Problem) for p in first)
  assert len({p.uid for p in first}) == 64
  assert all(base.is_heldout(p) for p in first)
  assert "tensorflow" not in sys.modules
  # Disjoint from training problems.
  rng = np.random.default_rng(1)
  train = {task.sample_problem(rng).uid for _ in range(2000)}
  assert not train & {p.uid for p in first}


def test_eval_set_without_tfds_is_the_same_set(tmp_path, monkeypatch, caplog):
  """A pre-built image without tensorflow_datasets gets the same problems, generated in memory."""
  task = tasks.make_task("countdown")
  built = evalsets.load_eval_set(task, 32, seed=2, data_dir=str(tmp_path / "tfds"))
  evalsets.tfds_available.cache_clear()
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import raises ImportError
  try:
    with caplog.at_level("WARNING"):
      generated = evalsets.load_eval_set(task, 32, seed=2, data_dir=str(tmp_path / "none"))
    assert not evalsets.tfds_available()
  finally:
    evalsets.tfds_available.cache_clear()
  assert generated == built
  assert "tensorflow_datasets is not installed" in caplog.text
  assert not (tmp_path / "none").exists()  # nothing written


def test_eval_set_keys():
  countdown = tasks.make_task("countdown")
  name = lambda task, size=32, seed=0: evalsets.eval_set_builder(
      task, size, seed, data_dir="/nonexistent").builder_config.name
  assert name(countdown) == name(countdown)
  assert name(countdown) != name(countdown, seed=1)
  assert name(countdown) != name(countdown, size=33)
  assert name(countdown) != name(tasks.make_task("countdown", num_count=4))
  # Trace knobs do not change the problems, so they share the set.
  assert name(countdown) == name(
      tasks.make_task("countdown", error_rate=0.3, budget=4))
  assert evalsets.generate_eval_problems(countdown, 16, 0) == (
      evalsets.generate_eval_problems(
          tasks.make_task("countdown", error_rate=0.3), 16, 0))
  assert evalsets.generate_eval_problems(countdown, 16, 0) != (
      evalsets.generate_eval_problems(countdown, 16, 1))


def test_eval_set_too_large_for_config():
  task = tasks.make_task("countdown", num_count=2, max_number=3, max_target=5)
  with pytest.raises(ValueError, match="distinct held-out"):
    evalsets.generate_eval_problems(task, 50)


def test_load_jsonl(tmp_path):
  path = tmp_path / "gsm.jsonl"
  rows = [{"question": "Tom has 3 apples and buys 4. How many?",
           "answer": "3 + 4 = <<3+4=7>>7\n#### 7"},
          {"question": "What is 1,000 + 1?", "answer": "1,001"}]
  path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
  problems = evalsets.load_jsonl(str(path))
  assert [p.answer for p in problems] == ["7", "1,001"]
  assert problems[0].prompt == rows[0]["question"]
  assert problems[0].uid != problems[1].uid
  assert json.loads(problems[0].data)["solution"] == rows[0]["answer"]
  with pytest.raises(ValueError, match="needs keys 'q'"):
    evalsets.load_jsonl(str(path), question_key="q")


@pytest.mark.parametrize("answer,response,expected", [
    ("7", "so the total is 7 apples.", True),
    ("7", "#### 7", True),
    ("7", "#### 7.0", True),
    ("1,001", "The answer is 1001", True),
    ("-3", "it drops to -3", True),
    ("7", "7 apples, then 8", False),
    ("7", "#### 8 (7 was wrong)", False),
    ("7", "no number here", False),
    ("none", "7", False),
    ("7", "9" * 100_000, False),
])
def test_verify_numeric(answer, response, expected):
  assert evalsets.verify_numeric(answer, response) is expected


_RACE = """
import sys, time
from rldyn import tasks
from rldyn.tasks import evalsets
task = tasks.make_task("countdown")
generate = evalsets.generate_eval_problems
def slow(*args, **kwargs):  # a build long enough that the processes overlap in it
  time.sleep(2.0)
  return generate(*args, **kwargs)
evalsets.generate_eval_problems = slow
while time.time() < float(sys.argv[2]):  # every process starts building at the same moment
  time.sleep(0.001)
problems = evalsets.load_eval_set(task, 48, seed=3, data_dir=sys.argv[1])
print(",".join(p.uid for p in problems))
"""


def test_concurrent_launches_build_one_eval_set(tmp_path):
  """Launches that prepare the same set at once (robustness.py --jobs=2 on a fresh cache) all get it: one
  builds, the others wait and read it (without the lock the second died in TFDS's final rename)."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  start = str(time.time() + 8.0)  # after every interpreter has imported TFDS
  procs = [subprocess.Popen([sys.executable, "-c", _RACE, str(tmp_path), start], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for _ in range(3)]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-2000:]
  uids = {out.strip() for out, _ in outs}
  want = ",".join(p.uid for p in evalsets.generate_eval_problems(tasks.make_task("countdown"), 48, seed=3))
  assert uids == {want}
