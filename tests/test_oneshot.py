"""One-shot RLVR: the historical-variance ranking (hand numbers), the rank CLI on a written run, and the
one-problem task wrapper driving the RL problem stream."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from rldyn import config as config_lib
from rldyn import launch
from rldyn import oneshot
from rldyn.rl import rollout
from rldyn.tasks import oneshot as oneshot_task
from rldyn.tasks.base import is_heldout


def _rows(uid, step, correct):
  return [{"step": step, "problem": uid, "prompt": f"p {uid}", "response": "", "reward": 0.0, "correct": c}
          for c in correct]


def test_rank_samples_by_hand():
  samples = (_rows("a", 0, [0, 0, 0, 0]) + _rows("a", 1, [1, 1, 1, 1]) +  # acc 0, 1: var 0.25
             _rows("b", 0, [1, 0, 0, 0]) + _rows("b", 2, [1, 1, 0, 0]) + _rows("b", 3, [1, 1, 1, 0]) +  # .25 .5 .75
             _rows("c", 1, [1, 1]) + _rows("c", 4, [1, 1]) +  # always solved: var 0
             _rows("d", 5, [1, 0]) + [{"step": 1}])  # one step: no history; a malformed row is skipped
  r = oneshot.rank_samples(samples)
  assert [x.uid for x in r] == ["a", "b", "c"]
  assert r[0].variance == pytest.approx(0.25) and r[0].mean == pytest.approx(0.5) and r[0].steps == 2
  assert r[1].variance == pytest.approx(np.var([0.25, 0.5, 0.75])) and r[1].first_step == 0
  assert r[2].variance == 0.0
  assert [x.uid for x in oneshot.rank_samples(samples, min_steps=3)] == ["b"]
  with pytest.raises(ValueError, match="at least 2"):
    oneshot.rank_samples(samples, min_steps=1)


def _cfg(**rl):
  c = config_lib.default()
  config_lib.shrink(c)
  for k, v in rl.items():
    c.rl[k] = v
  cfg, task = launch.make_config(c)
  return cfg, task


def test_fixed_problem_task_fills_every_batch_with_the_problem():
  cfg, task = _cfg()
  problem = rollout.step_problems(cfg, task, 3)[1]
  wrapped = oneshot_task.FixedProblemTask(task, problem)
  for step in (0, 7):
    assert rollout.step_problems(cfg, wrapped, step) == [problem] * cfg.rl.prompts_per_step
  held = wrapped.sample_problem(np.random.default_rng(0), heldout=True)  # held-out draws unchanged
  assert held == task.sample_problem(np.random.default_rng(0), heldout=True) and is_heldout(held)
  assert wrapped.name == task.name and wrapped.tokenizer is task.tokenizer
  assert wrapped.verify(problem, "nonsense") is False
  rng = np.random.default_rng(1)
  heldout_problem = task.sample_problem(rng, heldout=True)
  with pytest.raises(ValueError, match="held-out"):
    oneshot_task.FixedProblemTask(task, heldout_problem)


def test_fixed_problem_value_json_or_uid():
  cfg, task = _cfg()
  problem = rollout.step_problems(cfg, task, 2)[0]
  assert oneshot_task.parse_problem(task, oneshot_task.problem_json(problem)) == problem
  assert oneshot_task.parse_problem(task, problem.uid) is None
  assert oneshot.find_problem(cfg, task, problem.uid, range(5)) == problem
  with pytest.raises(ValueError, match="not among"):
    oneshot.find_problem(cfg, task, "countdown/0000000000000000", range(2))
  with pytest.raises(ValueError, match="neither a problem as JSON nor a countdown uid"):
    oneshot_task.parse_problem(task, "arithmetic/0123")
  with pytest.raises(ValueError, match="not a countdown problem"):
    oneshot_task.parse_problem(task, json.dumps({**json.loads(oneshot_task.problem_json(problem)),
                                                 "uid": "arithmetic/1"}))
  with pytest.raises(ValueError, match="not a problem as JSON"):
    oneshot_task.parse_problem(task, '{"uid": "countdown/1"}')


def test_rank_cli_on_a_written_run(tmp_path):
  cfg, task = _cfg()
  wd = str(tmp_path / "run")
  os.makedirs(os.path.join(wd, "samples"))
  with open(os.path.join(wd, "config.json"), "w") as f:
    json.dump(config_lib.to_dict(cfg), f)
  p0, p1 = rollout.step_problems(cfg, task, 0)[0], rollout.step_problems(cfg, task, 1)[0]
  rows = []
  for step, (p, correct) in enumerate([(p0, [0, 0]), (p1, [1, 1]), (p0, [1, 1]), (p1, [1, 1])]):
    rows += [{"step": step, "problem": p.uid, "prompt": p.prompt, "response": "", "reward": 0.0, "correct": c}
             for c in correct]
  with open(os.path.join(wd, "samples", "samples.jsonl"), "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  top = oneshot.rank(wd, top=5)
  assert [(r.uid, r.variance) for r, _ in top] == [(p0.uid, 0.25), (p1.uid, 0.0)]
  assert top[0][1] == p0  # regenerated from the run's config and step
  proc = subprocess.run([sys.executable, "-m", "rldyn.oneshot", "rank", f"--workdir={wd}"], capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert p0.uid in proc.stdout and oneshot_task.problem_json(p0) in proc.stdout
  empty = tmp_path / "empty"
  empty.mkdir()
  bad = subprocess.run([sys.executable, "-m", "rldyn.oneshot", "rank", f"--workdir={empty}"],
                       capture_output=True, text=True, timeout=120)
  assert bad.returncode == 2 and "no config.json" in bad.stderr
