"""rldyn.plan: compiled per-device memory and FLOPs of the RL programs, on the 8 fake CPU test devices."""
import json
import os
import subprocess
import sys

import jax
import pytest

from rldyn import plan as plan_lib
from rldyn.config import ConfigError
from tests.conftest import smoke_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny(mesh=(2, 2, 2), prompts=8, **overrides):
  c = smoke_config(**overrides)
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = mesh
  c.rl.prompts_per_step = prompts
  return plan_lib.load_config(c)


def test_tiny_plan_numbers_exist_and_are_consistent():
  cfg = tiny()
  report = plan_lib.plan(cfg, jax.devices(), prompt_len=16)
  assert report["mesh"] == {"data": 2, "fsdp": 2, "tensor": 2}
  assert set(report["programs"]) == {"update", "ref", "sampler"}
  for name, r in report["programs"].items():
    for k in ("argument_bytes", "temp_bytes", "peak_bytes", "live_bytes", "flops"):  # code: 0 on CPU
      assert r[k] > 0, (name, k)
    assert r["peak_bytes"] == r["argument_bytes"] + r["output_bytes"] - r["alias_bytes"] + r["temp_bytes"]
  upd = report["programs"]["update"]
  # The donated policy + optimizer state come back in place; the step's loop runs once per minibatch.
  resident = report["resident_bytes"]
  assert upd["alias_bytes"] >= resident["policy"] + resident["optimizer"]
  assert upd["flops_per_step"] == cfg.rl.updates_per_batch * upd["flops"]
  # Resident bytes by hand: fp32 policy, two fp32 Adam moments per parameter, fp32 reference; each
  # parameter's bytes on the busiest device are its size over the mesh axes that shard it.
  mesh_size = {"data": 2, "fsdp": 2, "tensor": 2}
  per_device = 0
  for p in report["params"]:
    n = 1
    for dim, ax in zip(p["shape"], p["spec"]):
      axes = [] if ax is None else ([ax] if isinstance(ax, str) else ax)
      n *= dim // max(1, int(jax.numpy.prod(jax.numpy.array([mesh_size[a] for a in axes] or [1]))))
    copies = cfg.model.n_layers if p["param"].startswith("layers/") else 1
    per_device += 4 * n * copies
    assert p["device_bytes"] == 4 * n
  assert resident["policy"] == resident["reference"] == per_device
  assert resident["optimizer"] >= 2 * per_device
  text = plan_lib.format_plan({**report, "memory_per_device": 80 * plan_lib.GiB})
  assert "layers/*/self_attn/q_proj/kernel" in text and "P(fsdp, tensor, None)" in text
  assert text.count(" yes ") == 3


def test_memory_grows_with_the_batch():
  small = plan_lib.plan(tiny(prompts=8), jax.devices(), 16, ("update", "sampler"))["programs"]
  big = plan_lib.plan(tiny(prompts=16), jax.devices(), 16, ("update", "sampler"))["programs"]
  for name in ("update", "sampler"):
    assert big[name]["temp_bytes"] > small[name]["temp_bytes"], name
    assert big[name]["live_bytes"] > small[name]["live_bytes"], name
    assert big[name]["flops"] > small[name]["flops"], name


def test_sharding_shrinks_per_device_parameter_bytes():
  one = plan_lib.plan(tiny(mesh=(1, 1, 1), prompts=2), jax.devices()[:1], 16, ("ref",))
  eight = plan_lib.plan(tiny(mesh=(1, 4, 2), prompts=8), jax.devices(), 16, ("ref",))
  assert eight["resident_bytes"]["reference"] < one["resident_bytes"]["reference"] / 2
  # The compiler agrees: the reference program's arguments (params + a few token rows) shrink too.
  assert eight["programs"]["ref"]["argument_bytes"] < one["programs"]["ref"]["argument_bytes"] / 2


def test_bad_names_are_one_line_errors_naming_the_choices():
  with pytest.raises(ConfigError, match="valid: local, 8xh100.*v5p-64"):
    plan_lib.get_topology("v9-1")
  with pytest.raises(ConfigError, match="valid presets: qwen2.5-0.5b, qwen2.5-1.5b, qwen2.5-7b, llama3-8b"):
    plan_lib.load_config(smoke_config(), "qwen-9000")
  with pytest.raises(ConfigError, match="valid: update, ref, sampler"):
    plan_lib.plan(tiny(), jax.devices(), 16, ("updte",))
  with pytest.raises(ConfigError, match="data-parallel devices"):
    plan_lib.plan(tiny(prompts=3), jax.devices(), 16, ("ref",))


def test_presets_have_the_published_sizes():
  sizes = {"qwen2.5-0.5b": 0.494e9, "qwen2.5-1.5b": 1.544e9, "qwen2.5-7b": 7.616e9, "llama3-8b": 8.030e9}
  for name, n in sizes.items():
    cfg = plan_lib.model_config(name, "float32", "bfloat16", "xla")
    assert abs(cfg.num_params() - n) / n < 2e-3, (name, cfg.num_params())
  assert plan_lib.model_config("qwen2.5-7b", "float32", "bfloat16", "xla").qkv_bias


def _cli(*args):
  env = {**os.environ, "PYTHONPATH": ROOT}
  return subprocess.run([sys.executable, "-m", "rldyn.plan", *args], capture_output=True, text=True, env=env,
                        cwd=ROOT, timeout=120)


def test_cli_prints_the_table_and_writes_json(tmp_path):
  out = tmp_path / "plan.json"
  r = _cli("--config=experiments/two_phase.py:smoke", "--topology=8xh100", "--config.mesh.data=2",
           "--config.mesh.fsdp=2", "--config.mesh.tensor=2", "--prompt_len=16", "--programs=ref",
           f"--json={out}")
  assert r.returncode == 0, r.stderr[-2000:]
  assert "8 fake CPU devices" in r.stdout and "mesh data=2 fsdp=2 tensor=2" in r.stdout
  report = json.loads(out.read_text())
  assert report["memory_per_device"] == 80 * 2**30 and set(report["programs"]) == {"ref"}
  for name, row in report["programs"].items():
    assert f"\n{name} " in r.stdout and row["peak_bytes"] > 0 and row["flops"] > 0


def test_cli_bad_topology_is_one_line():
  r = _cli("--config=experiments/two_phase.py:smoke", "--topology=v5p-63")
  assert r.returncode == 2
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1 and "v5p-64" in lines[0] and "8xh100" in lines[0], r.stderr


def test_importable_beside_rldyn_main():
  """The command defines its flags when it runs, so both modules import into one process (the test suite)."""
  r = subprocess.run([sys.executable, "-c", "import rldyn.main, rldyn.plan"], capture_output=True, text=True,
                     cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, timeout=120)
  assert r.returncode == 0, r.stderr[-1000:]


def test_real_size_options_reach_the_plan():
  """A preset shape keeps the config's scan_layers and remat; micro-batches and the skipped reference
  reach the compiled programs."""
  c = smoke_config(model__scan_layers=True, model__remat="full")
  assert plan_lib.load_config(c, "qwen2.5-0.5b").model.scan_layers
  assert plan_lib.load_config(c, "qwen2.5-0.5b").model.remat == "full"
  cfg = tiny(model__scan_layers=True, model__remat="full", rl__micro_batches=2, loss__kl_metrics=False)
  report = plan_lib.plan(cfg, jax.devices(), prompt_len=16)
  assert set(report["programs"]) == {"update", "sampler"}  # nothing needs the reference forward
  assert report["params"][1]["param"].startswith("layers/") and len(report["params"][1]["shape"]) >= 2
  with pytest.raises(ConfigError, match="rl.micro_batches = 64 micro-batches"):
    plan_lib.plan(tiny(rl__micro_batches=32), jax.devices(), 16, ("update",))


def test_verifree_update_plans():
  # VeriFree's update batch has 1-D weights and rows one answer bucket wider; the plan compiles it.
  cfg = tiny(loss__objective="verifree", loss__name="vanilla", advantage__name="rloo",
             loss__aggregation="seq-mean-token-sum-norm", rl__updates_per_batch=1, reward__name="ground_truth")
  report = plan_lib.plan(cfg, jax.devices(), prompt_len=16, programs=("update",))
  assert report["programs"]["update"]["flops"] > 0
