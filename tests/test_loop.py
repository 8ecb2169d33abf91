"""The RL loop end to end on the smoke config: metric keys, resume, bad input."""
import math
import os

import pytest

from conftest import smoke_config
from rldyn import config as config_lib
from rldyn import launch
from rldyn.metrics.writers import read_jsonl

DESIGN_KEYS = (
    "step time_s reward/mean reward/std accuracy entropy/all entropy/planning entropy/execution "
    "ppl/execution_rel semantic_entropy/planning tokens/planning_frac kl/k1 kl/k3 clip_frac "
    "clip_frac/planning clip_frac/execution adv_mass/planning adv_mass/execution loss/pg grad_norm "
    "update_norm param_norm response_len/mean response_len/truncated_frac groups/zero_std_frac "
    "sampler/logp_diff_max sampler/logp_diff_mean perf/rollout_tok_s perf/update_tok_s perf/step_s").split()


def sharded_smoke_config(base_workdir, **overrides):
  """The smoke study on a (2, 2, 2) mesh of the 8 fake CPU devices."""
  return smoke_config(base_workdir, mesh__data=2, mesh__fsdp=2, mesh__tensor=2, **overrides)


@pytest.fixture(scope="module")
def base_dir(smoke_base):
  return smoke_base


@pytest.fixture(scope="module")
def smoke_run(base_dir, tmp_path_factory):
  d = str(tmp_path_factory.mktemp("run"))
  launch.run(sharded_smoke_config(base_dir, log__tensorboard=True), d)
  return d


def test_every_design_key_on_every_line_and_finite(smoke_run):
  rows = read_jsonl(os.path.join(smoke_run, "metrics.jsonl"))
  assert [r["step"] for r in rows] == [0, 1, 2]
  for r in rows:
    missing = [k for k in DESIGN_KEYS if k not in r]
    assert not missing, missing
    bad = [k for k in DESIGN_KEYS if r[k] is None or not math.isfinite(r[k])]
    assert not bad, bad
    # The sampler's log-probs are the policy's: the update's recomputation agrees on minibatch 0.
    assert r["sampler/logp_diff_max"] < 1e-4
    assert 0 <= r["response_len/truncated_frac"] <= 1
  assert "eval/accuracy" in rows[0] and "eval/pass@1" in rows[0]  # the base, at step 0
  evals = read_jsonl(os.path.join(smoke_run, "eval.jsonl"))
  assert [e["step"] for e in evals] == [0, 2, 3]
  events = [e["event"] for e in read_jsonl(os.path.join(smoke_run, "events.jsonl"))]
  assert events[0] == "run_start" and events[-1] == "run_end" and "checkpoint_saved" in events
  assert os.path.exists(os.path.join(smoke_run, "base_pointer.json"))
  assert read_jsonl(os.path.join(smoke_run, "samples", "samples.jsonl"))
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(smoke_run, "tensorboard")))


def test_rerun_of_a_finished_run_changes_nothing(smoke_run, base_dir):
  before = open(os.path.join(smoke_run, "metrics.jsonl")).read()
  evals_mtime = os.stat(os.path.join(smoke_run, "eval.jsonl")).st_mtime_ns
  launch.run(sharded_smoke_config(base_dir, log__tensorboard=True), smoke_run)
  assert open(os.path.join(smoke_run, "metrics.jsonl")).read() == before
  assert os.stat(os.path.join(smoke_run, "eval.jsonl")).st_mtime_ns == evals_mtime  # not re-evaluated


def test_workdir_of_another_config_is_refused(smoke_run, base_dir):
  c = sharded_smoke_config(base_dir, loss__eps_high=0.28)
  with pytest.raises(ValueError, match="resume_anyway"):
    launch.run(c, smoke_run)


@pytest.mark.parametrize("override,match", [
    (("reward__name", "oracle"), "valid: distinct_correct, format, ground_truth, incorrect_label, majority_vote, random"),
    (("advantage__name", "ppo"), "valid: drgrpo, grpo, passk, rloo"),
    (("rl__group_size", 1), "group_size must be >= 2"),
    (("rl__prompts_per_step", 3), "mesh's data axis"),
])
def test_bad_input_fails_before_compiling(tmp_path, base_dir, override, match):
  c = sharded_smoke_config(base_dir, **{override[0]: override[1]})
  with pytest.raises(ValueError, match=match):
    launch.run(c, str(tmp_path))
  assert not os.path.exists(os.path.join(tmp_path, "metrics.jsonl"))


def test_unknown_keys_and_values(tmp_path):
  c = config_lib.default()
  c.task.name = "sudoku"
  with pytest.raises(ValueError, match="valid: \\['arithmetic', 'countdown', 'textmath'\\]"):
    launch.prepare(c, str(tmp_path))
  c = config_lib.default()
  c.model.unlock()
  c.model.widthh = 3
  with pytest.raises(ValueError, match="model.widthh"):
    launch.prepare(c, str(tmp_path))
  c = config_lib.default()
  c.sampling.top_p = 0.0
  with pytest.raises(ValueError, match="top_p"):
    launch.prepare(c, str(tmp_path))
  c = config_lib.default()
  c.stage = "finetune"
  with pytest.raises(ValueError, match="valid: pretrain, rl"):
    launch.prepare(c, str(tmp_path))


def test_online_phase_detector_writes_boundary_event(tmp_path):
  """The loop's metric emission feeds the online detector, whose crossing lands in events.jsonl."""
  from rldyn.phases import synthetic
  from rldyn.rl import emit
  from rldyn.rl import loop
  from rldyn.workdir import Workdir

  records, tau = synthetic.make_log(300, shape="exp", tau_frac=0.4, noise=0.05, missing_frac=0.0, seed=3)
  cfg = launch.prepare(smoke_config(rl__steps=300), str(tmp_path))[0]
  out = emit.Emitter(cfg, Workdir(str(tmp_path)), start_step=0)  # emission alone: no model, no compile
  state = loop.RunState(params=None, opt_state=None, ref_params=None, step=0, nll_exec0=None)
  timing = {"time_s": 1.0, "perf/rollout_tok_s": 1.0, "perf/update_tok_s": 1.0, "perf/step_s": 1.0}
  for step, m in records:
    device = {"nll/execution": 1.0, "reward/mean": 0.0, "accuracy": 0.0, "entropy/planning": 0.0,
              **{k: v for k, v in m.items() if k != "ppl/execution_rel"}}
    state = loop.write_line(out, state, (step, device, {}, timing))
  out.close()
  assert state.nll_exec0 == 1.0  # set from the first line
  events = [e for e in read_jsonl(str(tmp_path / "events.jsonl")) if e["event"] == "phase_boundary"]
  assert len(events) == 1  # hysteresis: announced once
  assert abs(events[0]["boundary_step"] - tau) <= 0.1 * 300


def test_control_arms_run_end_to_end(tmp_path, base_dir):
  """The new registry entries, wired through credit and the update: a smoke run finishes with finite lines."""
  c = sharded_smoke_config(base_dir, reward__name="majority_vote", advantage__name="passk",
                           advantage__pass_k=2, advantage__transform="entropy", loss__name="clip_cov",
                           rl__steps=2)
  launch.run(c, str(tmp_path))
  rows = read_jsonl(os.path.join(tmp_path, "metrics.jsonl"))
  assert [r["step"] for r in rows] == [0, 1]
  assert all(math.isfinite(r["loss/pg"]) and math.isfinite(r["grad_norm"]) for r in rows)
  c = sharded_smoke_config(base_dir, advantage__name="passk", advantage__pass_k=9)
  with pytest.raises(ValueError, match="pass_k=9 must be in"):
    launch.run(c, str(tmp_path / "other"))


def test_task_truncate_responses_cuts_masks_lengths_and_truncation():
  """rollout.truncate applies a task's truncate_responses (text tasks cut at stop strings)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from rldyn.rl import rollout as rollout_lib  # pylint: disable=g-import-not-at-top

  class Cut:  # cuts every response after its first token 7
    def truncate_responses(self, tokens_BN, mask_BN):
      out = mask_BN.copy()
      for i, row in enumerate(tokens_BN):
        hits = np.flatnonzero(row == 7)
        if hits.size:
          out[i, hits[0] + 1:] = False
      return out

  tokens = np.array([[1, 7, 2, 3], [4, 5, 6, 8], [7, 0, 0, 0]], np.int32)
  mask = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [1, 0, 0, 0]], bool)
  length, truncated = np.array([4, 4, 1], np.int32), np.array([True, True, False])
  m, n, t = rollout_lib.truncate(Cut(), tokens, mask, length, truncated)
  np.testing.assert_array_equal(m, [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
  np.testing.assert_array_equal(n, [2, 4, 1])
  np.testing.assert_array_equal(t, [False, True, False])  # cut at a stop string: it stopped
  assert rollout_lib.truncate(object(), tokens, mask, length, truncated)[0] is mask  # no method: unchanged

  class Longer:
    def truncate_responses(self, tokens_BN, mask_BN):
      return np.ones_like(mask_BN)

  with pytest.raises(ValueError, match="never longer"):
    rollout_lib.truncate(Longer(), tokens, mask, length, truncated)
