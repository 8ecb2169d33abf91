"""The shipped demo base: it is the demo recipe's base, a trained model, refused when damaged or stale; and
every base's params carry a manifest that a restore checks."""
import json
import os
import shutil

import jax
import numpy as np
import pytest

from rldyn import config as config_lib
from rldyn import demo
from rldyn import launch
from rldyn import parallel
from rldyn import pretrain
from rldyn import shipped
from rldyn import state as state_lib
from rldyn.checkpoint import UnreadableCheckpoint
from rldyn.experiments import two_phase
from rldyn.metrics.sparsity import flatten
from rldyn.workdir import Workdir


def _persist():
  cfg, task = launch.make_config(two_phase.get_config("persist"))
  return cfg, task, parallel.make_mesh(cfg.mesh)


def test_the_shipped_base_is_the_demo_recipes():
  """Changing the demo's recipe (seed, task, model, pretraining) without shipping a new base fails here."""
  cfg, _, _ = _persist()
  assert shipped.recipe_differences(cfg) == []
  info = shipped.read_info()
  assert info["steps"] == cfg.pretrain.steps and info["task"] == "countdown"
  assert info["params_sha256"] == shipped._sha256(os.path.join(shipped.DEMO_BASE_DIR, shipped.PARAMS))  # pylint: disable=protected-access
  other, _ = launch.make_config(two_phase.get_config(""))  # the default world: another recipe
  assert shipped.recipe_differences(other) == ["pretrain.steps", "task.options"]
  seed1 = two_phase.get_config("persist")
  seed1.seed = 1
  assert shipped.recipe_differences(launch.make_config(seed1)[0]) == ["seed"]
  logging_only = two_phase.get_config("persist")
  logging_only.pretrain.log_every, logging_only.task.data_dir = 7, "/elsewhere"  # do not change the base
  assert shipped.recipe_differences(launch.make_config(logging_only)[0]) == []


def test_install_restores_a_trained_model_onto_any_mesh(tmp_path):
  cfg, task, mesh = _persist()  # 8 CPU devices here; it was saved from 2
  wd = Workdir(str(tmp_path / "run"))
  wd.ensure()
  info = shipped.install(cfg, wd, mesh)
  assert info["shipped_from"] == shipped.DEMO_BASE_DIR and wd.has_base()
  launch.check_base(cfg, wd)
  params = wd.base_params(cfg.model, mesh)
  with np.load(os.path.join(shipped.DEMO_BASE_DIR, shipped.PARAMS)) as z:
    for name, x in flatten(params).items():
      np.testing.assert_array_equal(np.asarray(x), z[name])
  # A trained model: its loss on the recipe's reference traces is far below an untrained one's.
  stream = pretrain.TraceStream(task, 123, 16, cfg.pretrain.seq_len, 0)
  batch = stream.make(0)
  stream.close()
  trained = float(pretrain.cross_entropy(cfg.model, params, batch)[0])
  untrained = float(pretrain.cross_entropy(cfg.model, state_lib.init_params(cfg.model, mesh, jax.random.key(0)),
                                           batch)[0])
  assert trained < 0.5 < 3.0 < untrained, (trained, untrained)


def test_a_damaged_or_stale_shipped_base_is_refused_and_nothing_is_written(tmp_path):
  cfg, _, mesh = _persist()
  copy = str(tmp_path / "shipped")
  shutil.copytree(shipped.DEMO_BASE_DIR, copy)
  path = os.path.join(copy, shipped.PARAMS)
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2] ^= 0x10  # one flipped bit in the middle of an array
  open(path, "wb").write(bytes(data))
  wd = Workdir(str(tmp_path / "run"))
  wd.ensure()
  with pytest.raises(shipped.ShippedBaseError, match=r"is damaged: its SHA-256"):
    shipped.install(cfg, wd, mesh, copy)
  assert not wd.has_base()
  other = two_phase.get_config("persist")
  other.pretrain.steps = 900
  with pytest.raises(shipped.ShippedBaseError, match=r"not trained with this run's recipe \(differs: pretrain.steps\)"):
    shipped.install(launch.make_config(other)[0], wd, mesh)
  assert not wd.has_base()
  with pytest.raises(shipped.ShippedBaseError, match="holds no shipped base"):
    shipped.load_params(cfg, mesh, str(tmp_path / "nothing"))


def test_demo_chooses_the_shipped_base_only_for_its_own_recipe(tmp_path, capsys):
  wd = Workdir(str(tmp_path / "demo"))
  assert demo.use_shipped_base(two_phase.get_config("persist"), wd, "auto")
  assert wd.has_base() and "the shipped demo base" in capsys.readouterr().out
  assert not demo.use_shipped_base(two_phase.get_config("persist"), wd, "auto")  # has one: left alone
  assert not demo.use_shipped_base(two_phase.get_config("persist"), wd, "shipped")
  with pytest.raises(config_lib.ConfigError, match="holds a run on the shipped base; --base=pretrain needs another"):
    demo.use_shipped_base(two_phase.get_config("persist"), wd, "pretrain")
  other = Workdir(str(tmp_path / "default_world"))
  assert not demo.use_shipped_base(two_phase.get_config(""), other, "auto")
  assert "pretraining the base here" in capsys.readouterr().out and not other.has_base()
  with pytest.raises(shipped.ShippedBaseError, match="differs: pretrain.steps, task.options"):
    demo.use_shipped_base(two_phase.get_config(""), other, "shipped")
  assert not demo.use_shipped_base(two_phase.get_config("persist"), Workdir(str(tmp_path / "p")), "pretrain")
  assert not os.path.exists(tmp_path / "p" / "base")


def test_a_base_with_a_flipped_bit_is_refused(tmp_path):
  c = config_lib.default()
  config_lib.shrink(c)
  cfg, _ = launch.make_config(c)
  mesh = parallel.make_mesh(cfg.mesh)
  wd = Workdir(str(tmp_path / "run"))
  wd.ensure()
  params = state_lib.init_params(cfg.model, mesh, jax.random.key(1))
  wd.write_base(params, {"model": {}, "task": cfg.task.name})
  manifest = json.load(open(os.path.join(wd.base_params_path, "MANIFEST.rldyn.json")))["files"]
  restored = wd.base_params(cfg.model, mesh)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(params), jax.device_get(restored))
  biggest = max(manifest, key=lambda rel: manifest[rel][0])
  path = os.path.join(wd.base_params_path, biggest)
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2] ^= 0x01
  open(path, "wb").write(bytes(data))
  with pytest.raises(UnreadableCheckpoint, match=r"is damaged: .* does not match its checksum"):
    wd.base_params(cfg.model, mesh)
