"""Compiled memory plans: what the RL programs need per device, from the compiler, before any hardware.

    python -m rldyn.plan --config=experiments/two_phase.py --model=qwen2.5-7b --topology=v5p-64 \\
        --config.model.dtype=bfloat16 --config.mesh.data=1 --config.mesh.fsdp=-1 \\
        --config.rl.prompts_per_step=32 --config.rl.group_size=8 --config.rl.updates_per_batch=4 \\
        --config.sampling.max_new_tokens=1024 --prompt_len=256 --json=/tmp/plan.json

Builds the run's state abstractly (sharded `jax.ShapeDtypeStruct`s of the policy, its AdamW state and the
reference; nothing is allocated) and compiles, ahead of time, the three programs an RL step runs:

    update    rldyn.rl.step.make_update_step: all rl.updates_per_batch minibatch updates of one batch
    ref       rldyn.rl.step.make_ref_logprobs: the reference log-probs of the whole batch (N responses)
    sampler   rldyn.sampling.make_sampler: prefill + decode of the whole batch (KV cache growing to P + N
              slots in segments of sampling.DECODE_BLOCK tokens; the last segment's is the largest)

for the widest shapes a step can see (prompt width P = --prompt_len, N = sampling.max_new_tokens,
B = rl.prompts_per_step * rl.group_size rows), then prints per program and per device what
`compiled.memory_analysis()` reports (arguments, outputs, donated-and-aliased, temporaries, generated
code; peak = arguments + outputs - aliased + temporaries), the FLOPs of `compiled.cost_analysis()`, and
the sharding the mesh rules chose for each parameter. `live` adds what stays resident on the device
whichever program runs (policy, optimizer state and reference) to the program's own inputs,
temporaries and new outputs; a plan fits when every program's live bytes fit the device's memory.

--topology names the hardware (TOPOLOGIES): TPU slices compile for the real chips through libtpu's
ahead-of-time path (`jax.experimental.topologies`; `pip install "jax[tpu]"`, no TPU needed); GPU host
shapes (8xh100) compile for as many fake CPU devices with the same mesh, so their numbers are the CPU
compiler's buffer assignment standing in for the GPU's (same shardings and shapes, not the same fusions);
`local` uses the devices this process has. --model swaps in a published model's shape (PRESETS, numbers
from their config.json) or a Hugging Face checkpoint directory's config.json; the experiment config
supplies everything else (batch, mesh, dtypes: --config.model.dtype / --config.model.param_dtype).

XLA's cost analysis counts a loop body once: the update's FLOPs are one minibatch update plus the
step's metrics (the scan runs rl.updates_per_batch of them; `flops_per_step` multiplies), the sampler's
are the prefill plus one decode step (the while loop runs up to N).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import importlib.util
import json
import math
import os
import re
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from ml_collections import config_flags

from rldyn import cli
from rldyn import launch
from rldyn import parallel
from rldyn import sampling
from rldyn import state as state_lib
from rldyn.config import Config, ConfigError
from rldyn.model import ModelConfig
from rldyn.model import hf
from rldyn.optim import make_optimizer
from rldyn.rl import step as step_lib
from rldyn.rl import verifree

GiB = 2**30
PROGRAMS = ("update", "ref", "sampler")

# Published shapes, as the models' Hugging Face config.json files give them (max_position_embeddings as
# in the -Instruct releases; it only bounds prompt + response here).
_QWEN25 = {"model_type": "qwen2", "hidden_act": "silu", "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
           "max_position_embeddings": 32768, "torch_dtype": "bfloat16"}
PRESETS = {
    "qwen2.5-0.5b": {**_QWEN25, "hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14,
                     "num_key_value_heads": 2, "intermediate_size": 4864, "vocab_size": 151936,
                     "tie_word_embeddings": True},
    "qwen2.5-1.5b": {**_QWEN25, "hidden_size": 1536, "num_hidden_layers": 28, "num_attention_heads": 12,
                     "num_key_value_heads": 2, "intermediate_size": 8960, "vocab_size": 151936,
                     "tie_word_embeddings": True},
    "qwen2.5-7b": {**_QWEN25, "hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28,
                   "num_key_value_heads": 4, "intermediate_size": 18944, "vocab_size": 152064,
                   "tie_word_embeddings": False},
    "llama3-8b": {"model_type": "llama", "hidden_act": "silu", "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
                  "max_position_embeddings": 8192, "torch_dtype": "bfloat16", "hidden_size": 4096,
                  "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                  "intermediate_size": 14336, "vocab_size": 128256, "tie_word_embeddings": False},
}


@dataclasses.dataclass(frozen=True)
class Topology:
  """Hardware to compile for: `devices` devices of `memory` bytes each."""

  platform: str  # tpu: libtpu ahead-of-time compilation | cpu: fake CPU devices standing in | local
  devices: int  # JAX devices (one per TPU chip: v4/v5p megacore chips are one device)
  memory: int  # bytes per device (HBM); 0 = unknown
  stands_for: str  # what the devices are
  tpu_topology: str = ""  # get_topology_desc name, e.g. v5:2x4x4
  chip_config: str = "default"  # megacore (v4, v5p: two TensorCores as one device) | default


def _tpu(kind: str, chips: int, shape: str, memory_gib: int, megacore: bool) -> Topology:
  return Topology("tpu", chips, memory_gib * GiB, f"{chips} {kind} chips, {memory_gib} GiB HBM each",
                  shape, "megacore" if megacore else "default")


# TPU names count TensorCores for v4/v5p (two per chip) and chips for v5e/v6e, as Cloud TPU does.
TOPOLOGIES = {
    "local": Topology("local", 0, 0, "this process's devices"),
    "8xh100": Topology("cpu", 8, 80 * GiB, "one 8xH100 (80 GB) host, compiled for 8 fake CPU devices"),
    "8xh200": Topology("cpu", 8, 141 * GiB, "one 8xH200 (141 GB) host, compiled for 8 fake CPU devices"),
    "v4-8": _tpu("TPU v4", 4, "v4:2x2x1", 32, True),
    "v4-32": _tpu("TPU v4", 16, "v4:2x2x4", 32, True),
    "v5e-8": _tpu("TPU v5e", 8, "v5e:2x4", 16, False),
    "v5e-16": _tpu("TPU v5e", 16, "v5e:4x4", 16, False),
    "v5e-64": _tpu("TPU v5e", 64, "v5e:8x8", 16, False),
    "v5p-8": _tpu("TPU v5p", 4, "v5:2x2x1", 95, True),
    "v5p-16": _tpu("TPU v5p", 8, "v5:2x2x2", 95, True),
    "v5p-32": _tpu("TPU v5p", 16, "v5:2x2x4", 95, True),
    "v5p-64": _tpu("TPU v5p", 32, "v5:2x4x4", 95, True),
    "v5p-128": _tpu("TPU v5p", 64, "v5:4x4x4", 95, True),
    "v6e-8": _tpu("TPU v6e", 8, "v6e:2x4", 32, False),
}


def get_topology(name: str) -> Topology:
  if name not in TOPOLOGIES:
    raise ConfigError(f"--topology={name!r} is not a known topology; valid: {', '.join(TOPOLOGIES)}")
  return TOPOLOGIES[name]


def topology_devices(name: str) -> list:
  """The devices to compile for: libtpu's abstract TPU devices, fake CPU devices, or this process's."""
  topo = get_topology(name)
  if topo.platform == "local":
    return jax.devices()
  if topo.platform == "cpu":
    try:  # a fresh process: ask for exactly as many CPU devices as the host has accelerators
      jax.config.update("jax_num_cpu_devices", topo.devices)
    except RuntimeError:  # the backend is up already (tests): use what it has
      pass
    devices = jax.devices("cpu")
    if len(devices) < topo.devices:
      raise ConfigError(f"--topology={name} compiles for {topo.devices} fake CPU devices but this process has "
                        f"{len(devices)}; run it in a fresh process (or set XLA_FLAGS="
                        f"--xla_force_host_platform_device_count={topo.devices} before jax starts)")
    return devices[:topo.devices]
  if importlib.util.find_spec("libtpu") is None:
    raise ConfigError(f"--topology={name} compiles for TPU with libtpu, which is not installed: "
                      f"pip install 'jax[tpu]=={jax.__version__}' (rldyn's `tpu` extra); no TPU is needed")
  # libtpu reads these when it starts; on a machine without TPUs their absence only causes warnings.
  for k, v in (("TPU_SKIP_MDS_QUERY", "1"), ("TPU_ACCELERATOR_TYPE", name), ("TPU_WORKER_ID", "0"),
               ("TPU_WORKER_HOSTNAMES", "localhost")):
    os.environ.setdefault(k, v)
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  desc = topologies.get_topology_desc(
      platform="tpu", topology_name=topo.tpu_topology, chip_config_name=topo.chip_config,
      chips_per_host_bounds=(2, 2, 1), num_slices=1, wrap=(False, False, False))
  if len(desc.devices) != topo.devices:
    raise RuntimeError(f"libtpu made {len(desc.devices)} devices for {name}, expected {topo.devices}")
  return list(desc.devices)


def model_config(spec: str, param_dtype: str, dtype: str, attention: str) -> ModelConfig:
  """A preset name or HF checkpoint directory -> its shape, with the given dtypes and attention kernel."""
  if spec in PRESETS:
    c = PRESETS[spec]
  elif os.path.isfile(os.path.join(spec, "config.json")):
    c = hf.read_config(spec)
  else:
    raise ConfigError(f"--model={spec!r} is neither a preset nor a directory with a config.json; valid "
                      f"presets: {', '.join(PRESETS)}")
  try:
    return hf.config_from_hf(c, param_dtype=param_dtype, dtype=dtype, attention=attention)
  except ValueError as e:
    raise ConfigError(f"--model={spec}: {e}") from e


def load_config(config_dict, model: str = "") -> Config:
  """The typed Config, with the shape of `model` (a preset or checkpoint directory; "" keeps the config's).

  The config's model.param_dtype, model.dtype, model.attention, model.scan_layers and model.remat apply
  to the swapped-in shape.
  """
  d = config_dict.to_dict() if hasattr(config_dict, "to_dict") else json.loads(json.dumps(config_dict))
  if not model:
    return launch.make_config(d)[0]
  mine = d["model"]
  shape = model_config(model, mine["param_dtype"], mine["dtype"], mine["attention"])
  shape = dataclasses.replace(shape, scan_layers=mine["scan_layers"], remat=mine["remat"])
  mine.update({k: v for k, v in dataclasses.asdict(shape).items() if k in mine})
  cfg, _ = launch.make_config(d)
  return dataclasses.replace(cfg, model=shape)


# ---- per-device accounting ---------------------------------------------------------------------------

def device_bytes(tree) -> int:
  """Bytes one device holds of a tree of sharded ShapeDtypeStructs (the most loaded device's shard)."""
  return sum(math.prod(x.sharding.shard_shape(x.shape)) * np.dtype(x.dtype).itemsize
             for x in jax.tree.leaves(tree))


def _sds(shape, dtype, sharding) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float((cost or {}).get("flops", 0.0))


def compile_stats(lowered, resident: int, inputs: int, trips: int) -> dict:
  """Compiles and reads the per-device memory and FLOPs (see the module docstring for the columns).

  resident: bytes of the run state each device holds throughout; inputs: bytes of this program's
  arguments that are not run state; trips: how many times the program's loop body runs per call.
  """
  t0 = time.time()
  try:
    compiled = lowered.compile()
  except jax.errors.JaxRuntimeError as e:  # TPU compilers refuse programs that cannot fit
    if "RESOURCE_EXHAUSTED" not in str(e):
      raise
    msg = str(e).split("RESOURCE_EXHAUSTED:", 1)[1].strip().splitlines()[0]
    need = re.search(r"temporaries \(([\d.]+)G\)", msg)
    return {"error": msg, "temp_bytes": int(float(need.group(1)) * GiB) if need else None,
            "compile_s": round(time.time() - t0, 2)}
  seconds = time.time() - t0
  m = compiled.memory_analysis()
  peak = (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
          + m.temp_size_in_bytes)
  new_outputs = m.output_size_in_bytes - m.alias_size_in_bytes
  flops = _flops(compiled)
  return {
      "argument_bytes": int(m.argument_size_in_bytes),
      "output_bytes": int(m.output_size_in_bytes),
      "alias_bytes": int(m.alias_size_in_bytes),
      "temp_bytes": int(m.temp_size_in_bytes),
      "code_bytes": int(m.generated_code_size_in_bytes),
      "peak_bytes": int(peak),
      "live_bytes": int(resident + inputs + m.temp_size_in_bytes + new_outputs),
      "flops": flops,
      "flops_per_step": flops * trips,
      "compile_s": round(seconds, 2),
  }


def param_table(params) -> list[dict]:
  """One row per parameter kind (layers collapsed to layers/*): shape, dtype, mesh PartitionSpec."""
  rows = {}
  for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
    name = "/".join(str(getattr(k, "key", k)) for k in path)
    name = re.sub(r"^layers/\d+/", "layers/*/", name)
    if name not in rows:
      spec = tuple(x.sharding.spec) + (None,) * (len(x.shape) - len(x.sharding.spec))
      rows[name] = {"param": name, "shape": list(x.shape), "dtype": str(np.dtype(x.dtype)),
                    "spec": [list(s) if isinstance(s, tuple) else s for s in spec],
                    "device_bytes": device_bytes(x)}
  return list(rows.values())


def plan(cfg: Config, devices, prompt_len: int, programs=PROGRAMS) -> dict:
  """Compiles the chosen programs of an RL step for `devices` (real or abstract) and reports them."""
  unknown = [p for p in programs if p not in PROGRAMS]
  if unknown:
    raise ConfigError(f"--programs: {unknown} unknown; valid: {', '.join(PROGRAMS)}")
  n = cfg.sampling.max_new_tokens
  if prompt_len <= 0 or prompt_len + n > cfg.model.max_seq_len:
    raise ConfigError(f"--prompt_len={prompt_len} plus sampling.max_new_tokens={n} must be positive and fit "
                      f"model.max_seq_len={cfg.model.max_seq_len}")
  mesh = parallel.make_mesh(cfg.mesh, devices)
  launch.check_batch(cfg, parallel.data_parallel_size(mesh))
  b, u, p, s = cfg.rl.prompts_per_step * cfg.rl.group_size, cfg.rl.updates_per_batch, prompt_len, prompt_len + n
  tree = state_lib.abstract_rl_tree(cfg.model, cfg.rl.optim, cfg.rl.steps, mesh)
  st, ref = tree["state"], tree["ref_params"]
  resident = {"policy": device_bytes(st["params"]), "optimizer": device_bytes(st["opt_state"]),
              "reference": device_bytes(ref)}
  total_resident = sum(resident.values())
  rows = functools.partial(parallel.batch_sharding, mesh)
  out = {}
  if "update" in programs:
    dtypes = {"tokens_BS": jnp.int32, "mask_BS": jnp.bool_, "roles_BN": jnp.int32}
    # VeriFree's rows are prompt + z + y* + end: one answer bucket wider (the exact width follows the
    # task's longest reference answer; one bucket is what countdown and arithmetic need).
    w = n + verifree.ANSWER_BUCKET if cfg.loss.objective == "verifree" else n
    batch = {k: _sds((b,) if k.endswith("_B") else (b, p + w if k.endswith("_BS") else w),
                     dtypes.get(k, jnp.float32), rows(1 if k.endswith("_B") else 2))
             for k in step_lib.batch_keys(cfg.loss)}
    fn = step_lib.make_update_step(cfg.model, cfg.loss, make_optimizer(cfg.rl.optim, cfg.rl.steps),
                                   cfg.sampling.temperature, u, n, mesh, st,
                                   micro_batches=cfg.rl.micro_batches)
    out["update"] = compile_stats(fn.lower(st, ref, batch), total_resident, device_bytes(batch), u)
  if "ref" in programs and step_lib.needs_reference(cfg.loss):  # else the loop skips the reference forward
    tokens, mask = _sds((b, s), jnp.int32, rows(2)), _sds((b, s), jnp.bool_, rows(2))
    fn = step_lib.make_ref_logprobs(cfg.model, cfg.sampling.temperature, n, mesh, ref, cfg.loss.logit_chunk)
    out["ref"] = compile_stats(fn.lower(ref, tokens, mask), total_resident, device_bytes((tokens, mask)), 1)
  if "sampler" in programs:
    prompt, mask = _sds((b, p), jnp.int32, rows(2)), _sds((b, p), jnp.bool_, rows(2))
    key = jax.eval_shape(lambda: jax.random.key(0))
    key = _sds(key.shape, key.dtype, parallel.replicated(mesh))
    fn = sampling.make_sampler(cfg.model, cfg.sampling)
    out["sampler"] = compile_stats(fn.lower(st["params"], prompt, mask, key), total_resident,
                                   device_bytes((prompt, mask)), 1)
  return {
      "model": dataclasses.asdict(cfg.model),
      "num_params": cfg.model.num_params(),
      "mesh": dict(mesh.shape),
      "devices": len(devices),
      "device_kind": devices[0].device_kind,
      "batch": {"rows": b, "prompts": cfg.rl.prompts_per_step, "group": cfg.rl.group_size,
                "minibatches": u, "prompt_len": p, "response_len": n},
      "resident_bytes": resident,
      "programs": out,
      "params": param_table(st["params"]),
  }


# ---- report ------------------------------------------------------------------------------------------

def _unit(report: dict) -> tuple[str, int]:
  """GiB, or MiB when every number is below a GiB (small models)."""
  big = max([r.get("live_bytes", 0) for r in report["programs"].values()] + [sum(report["resident_bytes"].values())])
  return ("GiB", GiB) if big >= GiB else ("MiB", 2**20)


def format_plan(report: dict) -> str:
  m, bt, res = report["model"], report["batch"], report["resident_bytes"]
  mem = report.get("memory_per_device", 0)
  unit, scale = _unit(report)
  size = lambda x: f"{x / scale:.2f}"  # noqa: E731
  lines = [
      f"rldyn.plan: {report['num_params'] / 1e9:.3f}B-parameter decoder (L={m['n_layers']} E={m['d_model']} "
      f"H={m['n_heads']} K={m['n_kv_heads']} F={m['d_ff']} V={m['vocab_size']}"
      f"{' tied' if m['tie_embeddings'] else ''}), params {m['param_dtype']}, compute {m['dtype']}",
      f"topology {report.get('topology', '?')} ({report.get('stands_for', '')}): compiled by "
      f"{report.get('compiler', '?')} for {report['devices']} x {report['device_kind']}; mesh "
      + " ".join(f"{k}={v}" for k, v in report["mesh"].items()),
      f"batch: {bt['prompts']} prompts x {bt['group']} = {bt['rows']} rows in {bt['minibatches']} "
      f"minibatches; prompt {bt['prompt_len']} + response {bt['response_len']} tokens",
      f"resident per device ({unit}): policy {size(res['policy'])} + optimizer {size(res['optimizer'])} + "
      f"reference {size(res['reference'])} = {size(sum(res.values()))}",
      "",
      f"per device, {unit}       args     out   alias    temp    code    peak    live  fits  GFLOP/call  "
      "GFLOP/step  compile_s",
  ]
  for name, r in report["programs"].items():
    if "error" in r:
      lines.append(f"{name:<18}{'does not compile: ' + r['error']}")
      continue
    fits = "-" if not mem else ("yes" if r["live_bytes"] <= mem else "NO")
    lines.append(
        f"{name:<18}" + "".join(f"{size(r[k]):>8}" for k in ("argument_bytes", "output_bytes", "alias_bytes",
                                                             "temp_bytes", "code_bytes", "peak_bytes",
                                                             "live_bytes"))
        + f"{fits:>6}{r['flops'] / 1e9:>12.1f}{r['flops_per_step'] / 1e9:>12.1f}{r['compile_s']:>11.1f}")
  lines.append(f"(device memory {f'{mem / GiB:.0f} GiB' if mem else 'unknown'}; live = resident state + "
               "program inputs + temporaries + new outputs; peak = args + out - alias + temp; FLOPs per "
               "device, loop bodies once per call: update x minibatches per step, sampler = prefill + 1 "
               "decode step)")
  lines += ["", "parameter sharding (mesh axes per dimension; layers/* = every layer):"]
  for r in report["params"]:
    spec = ", ".join("None" if a is None else "+".join(a) if isinstance(a, list) else a for a in r["spec"])
    lines.append(f"  {r['param']:<42} {str(tuple(r['shape'])):<22} {r['dtype']:<9} P({spec})")
  return "\n".join(lines)


# ---- command line ------------------------------------------------------------------------------------

def define_flags() -> dict:
  """The command's flags, defined when the command runs (so importing rldyn.plan beside rldyn.main, which
  has its own --config, is fine)."""
  return {
      "config": config_flags.DEFINE_config_file(
          "config", None, "Experiment config file `path.py[:variant]` (batch sizes, mesh, dtypes); override "
          "keys with --config.section.key=value.", lock_config=True),
      "topology": flags.DEFINE_string("topology", "local", f"Hardware to compile for: {', '.join(TOPOLOGIES)}."),
      "model": flags.DEFINE_string("model", "", f"A model shape: a preset ({', '.join(PRESETS)}) or a Hugging "
                                   "Face checkpoint directory (its config.json); empty: the config's own model."),
      "prompt_len": flags.DEFINE_integer("prompt_len", 128, "Prompt width P in tokens (left-padded)."),
      "programs": flags.DEFINE_list("programs", list(PROGRAMS),
                                    f"Which programs to compile: {', '.join(PROGRAMS)}."),
      "json": flags.DEFINE_string("json", "", "Also write the plan as JSON to this path."),
  }


def run(config_dict, topology: str, model: str, prompt_len: int, programs, json_path: str = "") -> dict:
  """The command's work: resolve everything (ConfigError names the valid choices), compile, report."""
  topo = get_topology(topology)
  cfg = load_config(config_dict, model)
  devices = topology_devices(topology)
  report = plan(cfg, devices, prompt_len, tuple(programs))
  memory = topo.memory
  if topo.platform == "local":
    stats = devices[0].memory_stats() if hasattr(devices[0], "memory_stats") else None
    memory = int((stats or {}).get("bytes_limit", 0))
  report.update(topology=topology, stands_for=topo.stands_for, memory_per_device=memory,
                compiler=("libtpu " + importlib.metadata.version("libtpu")) if topo.platform == "tpu"
                else f"jaxlib {jax.__version__} ({jax.default_backend() if topo.platform == 'local' else 'cpu'})")
  print(format_plan(report), flush=True)
  if json_path:
    with open(json_path, "w") as f:
      json.dump(report, f, indent=1)
  return report


def main(fl: dict, argv):
  del argv
  if fl["config"].value is None:
    raise ConfigError("--config is required: an experiment config file, e.g. experiments/two_phase.py")
  try:
    config = fl["config"].value
    config.to_dict()
  except OSError as e:
    spec = flags.FLAGS["config"].serialize().split("=", 1)[-1]
    raise ConfigError(f"--config={spec}: no such config file (give an experiments/*.py path)") from e
  run(config, fl["topology"].value, fl["model"].value, fl["prompt_len"].value, fl["programs"].value,
      fl["json"].value)


def entry():
  cli.run(functools.partial(main, define_flags()), __name__)


if __name__ == "__main__":
  entry()
