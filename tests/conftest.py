"""Test setup: 8 fake CPU devices (so sharded code runs without accelerators) and a persistent compile cache."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
  os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()

import jax  # noqa: E402  (must come after XLA_FLAGS)

_CACHE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".jax_cache")
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


import pytest  # noqa: E402

from rldyn import config as config_lib  # noqa: E402
from rldyn import launch  # noqa: E402


def smoke_config(base_workdir: str = "", **overrides):
  """The CPU smoke study with a random reward (so an untrained model still gets non-zero advantages).

  overrides: section__key=value, e.g. rl__steps=4.
  """
  c = config_lib.default()
  config_lib.shrink(c)
  c.reward.name = "random"
  c.pretrain.steps = 20  # the random reward needs no competent base: keep the shared fixture cheap
  c.base_workdir = base_workdir
  for k, v in overrides.items():
    section, key = k.split("__")
    c[section][key] = v
  return c


@pytest.fixture(scope="session")
def smoke_base(tmp_path_factory):
  """A pretrained smoke base model, shared by every test that runs RL."""
  d = str(tmp_path_factory.mktemp("smoke_base"))
  c = smoke_config()
  c.stage = "pretrain"
  launch.run(c, d)
  return d
