"""Reading a run's workdir back: its config, task, base model and checkpoints (for replay and analysis).

    cfg, task = load_run(workdir)
    base = base_params(workdir, cfg, mesh)         # the base model the run started from
    for step in checkpoint_steps(workdir):
      params = checkpoint_params(workdir, step, cfg, mesh)
"""

from __future__ import annotations

import json
import os

import jax

from rldyn import checkpoint as ckpt_lib
from rldyn import config as config_lib
from rldyn import pretrain
from rldyn import state as state_lib
from rldyn.optim import make_optimizer
from rldyn.tasks import Task, make_task


def load_run(workdir: str) -> tuple[config_lib.Config, Task]:
  """The typed Config saved in WORKDIR/config.json and the task it names."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{workdir} has no config.json: is it an rldyn RL workdir?")
  with open(path) as f:
    d = json.load(f)
  task = make_task(d["task"]["name"], **dict(d["task"]["options"]))
  tok = task.tokenizer
  model = d.pop("model")
  model.pop("vocab_size")
  samp = d.pop("sampling")
  for k in ("pad_id", "stop_tokens"):
    samp.pop(k)
  d["task"]["options"] = dict(d["task"]["options"])
  cfg = config_lib.load({**d, "model": model, "sampling": samp}, vocab_size=tok.vocab_size,
                        pad_id=tok.pad_id, stop_tokens=(tok.eos_id,))
  return cfg, task


def base_source(workdir: str) -> str:
  """The workdir whose base/ holds this run's base model (itself, or the one base_pointer.json names)."""
  pointer = os.path.join(workdir, "base_pointer.json")
  if not os.path.exists(os.path.join(pretrain.base_dir(workdir), "info.json")) and os.path.exists(pointer):
    with open(pointer) as f:
      return json.load(f)["base_workdir"]
  return workdir


def base_params(workdir: str, cfg: config_lib.Config, mesh) -> dict:
  return pretrain.load_params(pretrain.base_dir(base_source(workdir)), cfg.model, mesh)


def checkpoint_steps(workdir: str) -> list[int]:
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  if not os.path.isdir(directory):
    return []
  return sorted(int(n) for n in os.listdir(directory) if n.isdigit())


def _abstract_tree(cfg: config_lib.Config, mesh):
  shardings = state_lib.param_shardings(cfg.model, mesh)
  from rldyn import model as model_lib  # pylint: disable=g-import-not-at-top
  params = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        model_lib.abstract_params(cfg.model), shardings)
  tx = make_optimizer(cfg.rl.optim, cfg.rl.steps)
  opt_sh = state_lib.opt_shardings(tx, params, shardings, mesh)
  opt = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                     jax.eval_shape(tx.init, params), opt_sh)
  return {"state": {"params": params, "opt_state": opt}, "ref_params": params}


def checkpoint_state(workdir: str, step: int, cfg: config_lib.Config, mesh) -> tuple[dict, dict]:
  """(tree, meta) of RL checkpoint `step`: tree = {state: {params, opt_state}, ref_params}."""
  ckpt = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), keep=10**6, async_save=False)
  try:
    return ckpt.restore(step, _abstract_tree(cfg, mesh))
  finally:
    ckpt.close()


def checkpoint_params(workdir: str, step: int, cfg: config_lib.Config, mesh) -> dict:
  return checkpoint_state(workdir, step, cfg, mesh)[0]["state"]["params"]
