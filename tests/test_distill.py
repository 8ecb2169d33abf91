"""rldyn.distill: SFT of the smoke base on teacher traces, written as an RL-style workdir that replay,
compare and a rerun (resume) read; both teachers; bad input refused before anything is written."""

import importlib
import json
import os

import jax
import numpy as np
import pytest

from rldyn import compare
from rldyn import config as config_lib
from rldyn import distill
from rldyn import launch
from rldyn import parallel
from rldyn.config import ConfigError
from rldyn.metrics.writers import read_jsonl
from rldyn.rl import rollout
from rldyn.workdir import Workdir


def _config(base):
  c = importlib.import_module("experiments.distill").get_config("smoke")
  c.base_workdir = base
  return c


@pytest.fixture(scope="module")
def clean_run(smoke_base, tmp_path_factory):
  d = str(tmp_path_factory.mktemp("distill") / "clean")
  ev = distill.run(_config(smoke_base), d, "clean")
  return d, ev


def test_clean_teacher_traces_verify_and_batches_are_deterministic(smoke_base):
  cfg, task = launch.make_config(_config(smoke_base))
  teacher = distill.make_teacher("clean", task)
  problems, responses = teacher.examples(np.random.default_rng(0), 16)
  assert all(task.verify(p, r) for p, r in zip(problems, responses))
  a = distill.batch(task, teacher, 0, 3, 8, 96)
  b = distill.batch(task, teacher, 0, 3, 8, 96)
  assert all(np.array_equal(a[k], b[k]) for k in a)
  assert not np.array_equal(a["tokens"], distill.batch(task, teacher, 0, 4, 8, 96)["tokens"])
  assert a["loss_mask"].sum() > 0


def test_distill_writes_an_rl_style_workdir(clean_run):
  d, ev = clean_run
  wd = Workdir(d)
  assert [m["step"] for m in wd.read_metrics()] == [0, 1, 2, 3]
  assert all(np.isfinite(m["loss"]) and m["tokens"] > 0 for m in wd.read_metrics())
  assert [e["step"] for e in wd.read_evals()] == [0, 2, 4]
  assert wd.checkpoint_steps() == [2, 4]
  events = [e["event"] for e in wd.read_events()]
  assert events[0] == "distill_start" and "run_start" in events and events[-1] == "run_end"
  assert next(e for e in wd.read_events() if e["event"] == "distill_start")["teacher"] == "clean"
  cfg, _ = wd.load_config()
  mesh = parallel.make_mesh(cfg.mesh)
  params, base = wd.checkpoint_params(4, cfg, mesh), wd.base_params(cfg.model, mesh)
  moved = sum(float(np.abs(np.asarray(a) - np.asarray(b)).sum()) for a, b in
              zip(jax.tree.leaves(params), jax.tree.leaves(base)))
  assert moved > 0  # the fine-tuned policy differs from the base it started from
  assert ev == {k: v for k, v in wd.read_evals()[-1].items() if k.startswith("eval/")}
  res = compare.compare([d], os.path.join(d, "..", "report"), plots=False)
  assert not res["problems"]


def test_rerun_resumes_and_changes_nothing(clean_run, smoke_base):
  d, ev = clean_run
  before = open(os.path.join(d, "metrics.jsonl")).read()
  assert distill.run(_config(smoke_base), d, "clean") == ev
  after = open(os.path.join(d, "metrics.jsonl")).read()
  strip = lambda text: [{k: v for k, v in json.loads(x).items() if k != "time_s"} for x in text.splitlines()]  # noqa: E731
  assert strip(after) == strip(before)
  assert [e["event"] for e in read_jsonl(os.path.join(d, "events.jsonl"))].count("run_resume") == 1


def test_replay_reads_distilled_checkpoints(clean_run):
  from rldyn.replay import runner  # pylint: disable=g-import-not-at-top
  d, _ = clean_run
  res = runner.replay(d, runner.ReplayOptions(steps=(4,), n=2, probe=8, batch_size=16, plots=False,
                                              progress=False))
  assert sorted(res.records) == [0, 4]
  passk = json.load(open(os.path.join(d, "replay", "passk.json")))
  assert [c["step"] for c in passk["checkpoints"]] == [0, 4]


def test_samples_teacher_uses_only_correct_matched_samples(smoke_base, tmp_path):
  cfg, task = launch.make_config(_config(smoke_base))
  teacher_dir = tmp_path / "rl"
  (teacher_dir / "samples").mkdir(parents=True)
  (teacher_dir / "config.json").write_text(json.dumps(config_lib.to_dict(cfg)))
  clean = distill.make_teacher("clean", task)
  rows = []
  for step in (0, 1):
    p = rollout.step_problems(cfg, task, step)[0]
    good = clean.task.reference_trace(p, np.random.default_rng(step))
    assert task.verify(p, good)
    rows += [{"step": step, "problem": p.uid, "prompt": p.prompt, "response": good, "reward": 1.0, "correct": True},
             {"step": step, "problem": p.uid, "prompt": p.prompt, "response": "junk", "reward": 0.0,
              "correct": False}]
  (teacher_dir / "samples" / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  teacher = distill.make_teacher("samples", task, str(teacher_dir))
  assert len(teacher.pairs) == 2 and all(task.verify(p, r) for p, r in teacher.pairs)
  with pytest.raises(ConfigError, match="needs --teacher_workdir"):
    distill.make_teacher("samples", task)
  with pytest.raises(ConfigError, match="valid: clean, samples"):
    distill.make_teacher("oracle", task)
  with pytest.raises(ConfigError, match="no config.json"):
    distill.make_teacher("samples", task, str(tmp_path))


def test_missing_base_is_refused_before_writing(tmp_path):
  d = str(tmp_path / "run")
  with pytest.raises(ConfigError, match="base_workdir"):
    distill.run(_config(""), d, "clean")
  assert not os.path.exists(d)
