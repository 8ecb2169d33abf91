"""From a ConfigDict and a workdir to a finished stage: `run(config_dict, workdir)`.

`stage = "pretrain"` trains the base model into WORKDIR/base; `stage = "rl"` runs the RL loop (and first
pretrains the base when neither the workdir nor `base_workdir` has one).
"""

from __future__ import annotations

import os

import jax

from rldyn import config as config_lib
from rldyn import parallel
from rldyn import pretrain
from rldyn.tasks import make_task

STAGES = ("pretrain", "rl")


def prepare(config_dict, workdir: str):
  """Validates everything that can be checked without compiling: (cfg, task, mesh)."""
  d = config_dict.to_dict() if hasattr(config_dict, "to_dict") else dict(config_dict)
  task_d = dict(d.get("task", {}))
  if "name" not in task_d:
    raise ValueError("config.task.name is required")
  options = task_d.get("options", {})
  task = make_task(task_d["name"], **(options.to_dict() if hasattr(options, "to_dict") else dict(options)))
  tok = task.tokenizer
  cfg = config_lib.load(d, vocab_size=tok.vocab_size, pad_id=tok.pad_id, stop_tokens=(tok.eos_id,))
  if cfg.stage not in STAGES:
    raise ValueError(f"config.stage={cfg.stage!r}; valid: {', '.join(STAGES)}")
  workdir = os.path.abspath(workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, ".write_test")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise ValueError(f"workdir {workdir} is not writable: {e}") from e
  mesh = parallel.make_mesh(cfg.mesh)
  return cfg, task, mesh


def run(config_dict, workdir: str) -> dict:
  parallel.init_distributed()
  cfg, task, mesh = prepare(config_dict, workdir)
  if cfg.stage == "pretrain":
    return pretrain.run(cfg, workdir, task, mesh)
  from rldyn.rl import loop  # pylint: disable=g-import-not-at-top
  return loop.run(cfg, workdir, task, mesh)


def print_devices() -> None:
  print(f"[rldyn] {jax.device_count()} {jax.default_backend()} device(s)", flush=True)
