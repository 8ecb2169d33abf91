"""rl.curriculum: parsing, validation at launch, which world each RL step's problems come from."""
import json

import pytest

from rldyn import config as config_lib
from rldyn import launch
from rldyn.config import ConfigError
from rldyn.rl import rollout
from rldyn.tasks import make_task


def _cfg(**rl):
  c = config_lib.default()
  for k, v in rl.items():
    c.rl[k] = v
  return config_lib.load(c, 33, 0, (2,))


def test_parse_curriculum():
  assert config_lib.parse_curriculum("") is None
  assert config_lib.parse_curriculum("num_count=3@0,4@200, 5@400") == (
      "num_count", ((0, 3), (200, 4), (400, 5)))
  assert config_lib.parse_curriculum("error_rate=0.1@0,0@50") == ("error_rate", ((0, 0.1), (50, 0)))
  assert config_lib.parse_curriculum("echo_target=false@0,true@9") == ("echo_target", ((0, False), (9, True)))


@pytest.mark.parametrize("spec,match", [
    ("num_count", "KEY=VALUE@STEP"),
    ("num_count=3", "has no VALUE@STEP"),
    ("num_count=3@x", "STEP must be an integer"),
    ("num_count=3@5,4@10", "start at step 0"),
    ("num_count=3@0,4@200,5@200", "rise strictly"),
])
def test_bad_curriculum_is_a_config_error(spec, match):
  with pytest.raises(ConfigError, match=match):
    _cfg(curriculum=spec)


def test_launch_checks_the_key_and_every_stage():
  with pytest.raises(ConfigError, match="'numbers' is not an option of task countdown; valid: .*num_count"):
    launch.validate(_cfg(curriculum="numbers=3@0"), 1)
  with pytest.raises(ConfigError, match="num_count=0 .*from step 100"):
    launch.validate(_cfg(curriculum="num_count=3@0,0@100"), 1)
  launch.validate(_cfg(curriculum="num_count=3@0,4@100"), 1)
  c = config_lib.default()
  c.rl.curriculum, c.task.fixed_problem = "num_count=3@0,4@100", "countdown/0123456789abcdef"
  with pytest.raises(ConfigError, match="keep one"):
    launch.validate(config_lib.load(c, 33, 0, (2,)), 1)


def test_steps_draw_from_their_stage_and_replay_exactly():
  cfg = _cfg(curriculum="num_count=2@0,4@10,5@20")
  task = make_task("countdown", **cfg.task.kwargs)
  counts = {s: {len(json.loads(p.data)["numbers"]) for p in rollout.step_problems(cfg, task, s)}
            for s in (0, 9, 10, 19, 20, 500)}
  assert counts == {0: {2}, 9: {2}, 10: {4}, 19: {4}, 20: {5}, 500: {5}}
  assert rollout.step_problems(cfg, task, 13) == rollout.step_problems(cfg, task, 13)  # a pure function
  assert rollout.curriculum_stage(cfg, 15) == (1, "num_count", 4)
  # without a curriculum: the task's own problems, the same stream as before the option existed
  plain = _cfg()
  assert rollout.task_at(plain, task, 7) is task and rollout.curriculum_stage(plain, 7) is None
  world = rollout.task_at(cfg, task, 25)
  p = rollout.step_problems(cfg, task, 25)[0]
  assert task.verify(p, world.reference_trace(p, __import__("numpy").random.default_rng(0))) in (True, False)
