"""The one config source: every field settable from the command line, strict loading, one-line errors."""
import dataclasses
import json
import os
import subprocess
import sys

import pytest

from rldyn import config as config_lib
from rldyn import launch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TWO_PHASE = os.path.join(ROOT, "experiments", "two_phase.py")


def _leaves(obj, prefix=""):
  """(dotted key, default value) of every config key of a Config, derived fields excluded."""
  for f in dataclasses.fields(obj):
    value = getattr(obj, f.name)
    key = f"{prefix}{f.name}"
    if f.name in config_lib.DERIVED.get(prefix.rstrip("."), ()):
      continue
    if dataclasses.is_dataclass(value):
      yield from _leaves(value, key + ".")
    elif f.name == "options":  # task options belong to the task's own config class
      continue
    elif config_lib._is_pairs(value):  # a mapping (e.g. pretrain.easy_options): each entry is a key
      for k, v in value:
        yield f"{key}.{k}", v
    else:
      yield key, value


def _override_value(v):
  if isinstance(v, bool):
    return "True" if not v else "False", (not v)
  if isinstance(v, int):
    return str(v + 1), v + 1
  if isinstance(v, float):
    return repr(v * 0.5 + 0.25), v * 0.5 + 0.25
  if isinstance(v, str):
    return "zz", "zz"
  if isinstance(v, tuple):
    return "('a',)", ("a",)
  raise AssertionError(f"unexpected config value type {type(v)}")


def test_every_dataclass_field_is_a_config_key_and_settable_from_the_command_line():
  keys = dict(_leaves(config_lib.Config()))
  assert "model.attention" in keys and "rl.optim.lr" in keys and "checkpoint.keep" in keys
  argv = ["prog", f"--config={TWO_PHASE}"]
  expected = {}
  for key, value in keys.items():
    text, parsed = _override_value(value)
    argv.append(f"--config.{key}={text}")
    expected[key] = parsed
  script = ("import json\nfrom absl import app\nfrom ml_collections import config_flags\n"
            "C = config_flags.DEFINE_config_file('config', None, '', lock_config=True)\n"
            "app.run(lambda argv: print(json.dumps(C.value.to_dict())))\n")
  out = subprocess.run([sys.executable, "-c", script] + argv[1:], capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 0, out.stderr[-3000:]
  c = json.loads(out.stdout.strip().splitlines()[-1])
  for key, want in expected.items():
    node = c
    for part in key.split("."):
      node = node[part]
    got = tuple(node) if isinstance(want, tuple) else node
    assert (got == pytest.approx(want)) if isinstance(want, float) else got == want, key


def test_defaults_live_in_one_place():
  c = config_lib.default()
  cfg = config_lib.load(c, vocab_size=33, pad_id=0, stop_tokens=(2,))
  assert dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=1),
                             sampling=dataclasses.replace(cfg.sampling, pad_id=0, stop_tokens=())) == \
      config_lib.Config()
  # The default study's values (these are the numbers `make demo` is calibrated on).
  assert (cfg.pretrain.steps, cfg.pretrain.batch_size, cfg.pretrain.seq_len) == (900, 16, 192)
  assert (cfg.rl.optim.lr, cfg.rl.optim.b2, cfg.sampling.max_new_tokens) == (1e-4, 0.999, 128)
  assert cfg.task.kwargs["strategy_mix"] == {"greedy": 0.5, "dfs": 0.25, "random": 0.25}


def test_persist_variant_is_one_world_for_base_and_rl():
  """experiments/pretrain.py:persist and two_phase.py:persist build the same world (config.persist)."""
  from rldyn.experiments import pretrain, two_phase  # pylint: disable=g-import-not-at-top
  worlds = []
  for mod in (pretrain, two_phase):
    cfg = config_lib.load(mod.get_config("persist"), vocab_size=33, pad_id=0, stop_tokens=(2,))
    worlds.append((cfg.task, cfg.sampling.max_new_tokens, cfg.model, cfg.pretrain))
    # the demo's RL recipe (config.persist and README say why each)
    assert (cfg.rl.steps, cfg.rl.dynamic_sampling, cfg.sampling.temperature) == (100, True, 0.7)
    # held-out pass@1 at the base's temperature, from enough samples to see a +0.10 gain
    assert (cfg.eval.temperature, cfg.eval.samples, cfg.eval.every) == (1.0, 32, 100)
    assert (cfg.loss.kl_coef, cfg.reward.kl_coef, cfg.loss.kl_metrics_every) == (0.0, 0.0, 10)  # KL: metrics only
    with pytest.raises(ValueError, match="valid: '' \\(default\\), smoke, persist"):
      mod.get_config("persits")
  assert worlds[0] == worlds[1]
  task_cfg, max_new, _, pre = worlds[0]
  assert (task_cfg.kwargs["budget"], task_cfg.kwargs["long_budget"], task_cfg.kwargs["long_budget_rate"],
          max_new, pre.steps) == (8, 12, 0.3, 160, 1200)  # two_phase.py:persist pretrains its own base alike
  # the default world is untouched: every trace stops at 8 tries
  plain = config_lib.load(config_lib.default(), vocab_size=33, pad_id=0, stop_tokens=(2,))
  assert (plain.task.kwargs["long_budget_rate"], plain.sampling.max_new_tokens, plain.pretrain.steps,
          plain.sampling.temperature, plain.rl.dynamic_sampling, plain.eval.samples,
          plain.loss.kl_metrics_every) == (0.0, 128, 900, 1.0, False, 4, 1)


def test_missing_and_unknown_keys_are_rejected_with_the_valid_ones():
  d = config_lib.default().to_dict()
  del d["rl"]["optim"]["b2"]
  with pytest.raises(config_lib.ConfigError, match=r"'rl.optim.b2'\] missing"):
    config_lib.load(d, 33, 0, (2,))
  d = config_lib.default().to_dict()
  del d["pretrain"]
  with pytest.raises(config_lib.ConfigError, match=r"\['pretrain'\] missing"):
    config_lib.load(d, 33, 0, (2,))
  d = config_lib.default().to_dict()
  d["loss"]["kl_coeff"] = 0.1
  with pytest.raises(config_lib.ConfigError, match=r"loss.kl_coeff.*valid keys in loss: \[.*'kl_coef'"):
    config_lib.load(d, 33, 0, (2,))
  # A saved config.json of an older version (a key missing) still loads, non-strictly.
  d = config_lib.default().to_dict()
  del d["model"]["attention"]
  assert config_lib.load(d, 33, 0, (2,), strict=False).model.attention == "xla"


@pytest.mark.parametrize("section,key,value,match", [
    ("checkpoint", "keep", 0, "checkpoint.keep"),
    ("seed", None, -1, "seed must be >= 0"),
    ("task", "eval_size", 0, "task.eval_size"),
    ("optim", "decay", "linear", "valid: constant, cosine"),
    ("loss", "dual_clip", 0.5, "dual_clip"),
    ("stage", None, "finetune", "valid: pretrain, rl"),
    ("checkpoint", "every", 0, "checkpoint.every must be positive"),
    ("eval", "every", 0, "eval.every must be positive"),
    ("log", "every", 0, "log.every must be positive"),
    ("eval", "samples", 0, "eval.samples must be positive"),
    ("eval", "temperature", -1.0, "eval.temperature must be >= 0"),
    ("reward", "random_p", 2.0, r"in \[0, 1\]"),
    ("advantage", "eps", -1.0, "advantage.eps must be >= 0"),
    ("loss", "kl_coef", -1.0, "loss.kl_coef and loss.entropy_coef must be >= 0"),
])
def test_values_out_of_range_are_config_errors(section, key, value, match):
  c = config_lib.default()
  if section == "optim":
    c.rl.optim.decay = value
  elif key is None:
    c[section] = value
  else:
    c[section][key] = value
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.load(c, 33, 0, (2,))


@pytest.mark.parametrize("key,value,match", [
    ("max_new_tokens", 100000, "does not fit model.max_seq_len=256"),
    ("seq_len", 1000, "pretrain.seq_len=1000 exceeds model.max_seq_len=256"),
])
def test_cross_field_checks_live_in_launch_validate(key, value, match):
  c = config_lib.default()
  (c.sampling if key == "max_new_tokens" else c.pretrain)[key] = value
  cfg = config_lib.load(c, 33, 0, (2,))  # each section is fine alone
  with pytest.raises(config_lib.ConfigError, match=match):
    launch.validate(cfg, num_devices=8)


def test_saved_config_round_trips():
  cfg = config_lib.load(config_lib.default(), 33, 0, (2,))
  assert config_lib.from_saved(config_lib.to_dict(cfg), 33, 0, (2,)) == cfg


def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="", RLDYN_COMPILE_CACHE="")
  workdir = tmp_path / "run"
  for bad, needle in [("--config.reward.name=oracle", "valid: distinct_correct, format, ground_truth, incorrect_label, majority_vote, random"),
                      ("--config.rl.grup_size=2", 'unknown config key \'rl.grup_size\'; Did you mean "group_size"'),
                      ("--config.rl.steps=abc", "--config.rl.steps=abc"),
                      ("--config.model.attention=flash", "valid: cudnn, xla")]:
    out = subprocess.run([sys.executable, "-m", "rldyn.main", "--config=two_phase:smoke",
                          f"--workdir={workdir}", bad], cwd=str(tmp_path), env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 2, (bad, out.stderr[-2000:])
    errors = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1 and errors[0].startswith("rldyn: error:") and needle in errors[0], errors
    assert not workdir.exists(), bad


def test_console_script_help_lists_its_flags():
  exe = os.path.join(os.path.dirname(sys.executable), "rldyn-train")
  if not os.path.exists(exe):
    pytest.skip("rldyn is not installed as a package in this environment")
  out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
  assert "--config" in out.stdout and "--workdir" in out.stdout and "two_phase" in out.stdout


def test_empty_workdir_is_refused(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(config_lib.ConfigError, match="--workdir must name a directory"):
    launch.prepare(config_lib.default(), "")
  assert os.listdir(tmp_path) == []


def test_distributed_settings_from_flags_or_environment():
  from rldyn import parallel
  spec = parallel.DistributedSpec("10.0.0.1:1234", 2, 1)
  assert parallel.distributed_args(spec, env={}) == {"coordinator_address": "10.0.0.1:1234",
                                                     "num_processes": 2, "process_id": 1}
  with pytest.raises(ValueError, match="go together"):
    parallel.distributed_args(parallel.DistributedSpec("h:1", None, None), env={})
  with pytest.raises(ValueError, match="must be in"):
    parallel.distributed_args(parallel.DistributedSpec("h:1", 2, 2), env={})
  # The documented environment recipe: all three variables, passed explicitly (jax reads none of them).
  env = {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
  assert parallel.distributed_args(env=env) == {"coordinator_address": "h:1", "num_processes": 4,
                                                "process_id": 3}
  with pytest.raises(ValueError, match="set all three"):
    parallel.distributed_args(env={"JAX_COORDINATOR_ADDRESS": "h:1"})
  assert parallel.distributed_args(env={"RLDYN_DISTRIBUTED": "1"}) == {}  # tpu/ launches: auto-detect
  assert parallel.distributed_args(env={"SLURM_NTASKS": "8"}) == {}
  assert parallel.distributed_args(env={"SLURM_NTASKS": "1"}) is None
  assert parallel.distributed_args(env={}) is None
