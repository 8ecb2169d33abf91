"""The demo's base model, shipped with rldyn, so that `make demo` spends its minutes on RL.

    python -m rldyn.demo                               # starts from the shipped base (--base=auto)
    python -m rldyn.demo --base=pretrain               # pretrains the same recipe here first (~5 min, 2 cores)
    python -m rldyn.shipped --workdir=runs/demo_scratch --provenance="..."   # re-ship after a recipe change

`rldyn/data/demo_base/` holds the base that `python -m rldyn.demo --base=pretrain` trains (the `persist`
world's recipe, seed 0, on 2 CPU devices): `params.npz` (every parameter, float32, named by its path in
the parameter tree) and `info.json` (what pretraining wrote into base/info.json — model, steps, held-out
results — plus `recipe`, the config sections that decide the base, `params_sha256`, and `provenance`:
where and how it was trained).

Why ship it: pretraining is ~40 % of the demo's time, and its outcome is the part that float rounding
moves (held-out greedy accuracy 0.40–0.505 over seeds and numerics, README "What is and is not
reproducible"). Starting from the shipped base, every machine runs RL on the same base; RL itself is
what the demo measures. The bases that recipe gives on other machines are measured in the README.

`install` copies it into a workdir's base/ only when its recipe is this run's (seed, task, model and
pretrain sections; not the data cache directory or logging intervals), and only after the file's
SHA-256 matches: a damaged or stale shipped base is refused with the reason, never used.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os

import jax
import numpy as np

from rldyn.config import ConfigError
from rldyn.metrics.sparsity import flatten  # {'a/b/0': leaf}: the parameter names of params.npz

DEMO_BASE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "demo_base")
PARAMS = "params.npz"
INFO = "info.json"
# Keys of the recipe sections that do not change the base: where generated data is cached, how often
# pretraining logs and checkpoints (a resumed pretraining continues exactly).
_NOT_RECIPE = {"task": ("data_dir",), "pretrain": ("log_every", "checkpoint_every")}
# Model keys that change the layout or the kernel, not the parameters (the base is stored per layer).
_LAYOUT = ("scan_layers", "remat", "attention")


class ShippedBaseError(ConfigError):
  """The shipped base cannot be used: damaged, missing, or trained with another recipe (nothing written)."""


def recipe(cfg) -> dict:
  """The config sections that decide the base model: seed, task, model (not its layout) and pretrain."""
  from rldyn import config as config_lib  # pylint: disable=g-import-not-at-top
  d = config_lib.to_dict(cfg)
  out = {"seed": d["seed"], "task": dict(d["task"]), "model": dict(d["model"]), "pretrain": dict(d["pretrain"])}
  for section, keys in _NOT_RECIPE.items():
    for k in keys:
      out[section].pop(k, None)
  for k in _LAYOUT:
    out["model"].pop(k, None)
  return json.loads(json.dumps(out))  # tuples -> lists, as info.json holds them


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while block := f.read(1 << 20):
      h.update(block)
  return h.hexdigest()


def read_info(directory: str = DEMO_BASE_DIR) -> dict | None:
  """The shipped base's info.json, or None where none is shipped."""
  path = os.path.join(directory, INFO)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def recipe_differences(cfg, directory: str = DEMO_BASE_DIR) -> list[str]:
  """Where this config's recipe differs from the shipped base's ('section.key'); [] = it is this run's base.
  ['(no shipped base)'] where the directory holds none."""
  info = read_info(directory)
  if info is None:
    return ["(no shipped base)"]
  mine, theirs = recipe(cfg), info.get("recipe", {})
  out = []
  for section in sorted(set(mine) | set(theirs)):
    a, b = mine.get(section), theirs.get(section)
    if isinstance(a, dict) and isinstance(b, dict):
      out += [f"{section}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    elif a != b:
      out.append(section)
  return out


def load_params(cfg, mesh, directory: str = DEMO_BASE_DIR):
  """The shipped parameters in their shardings on `mesh`, per-layer layout; ShippedBaseError if damaged."""
  from rldyn import model as model_lib  # pylint: disable=g-import-not-at-top
  from rldyn import state as state_lib  # pylint: disable=g-import-not-at-top
  info = read_info(directory)
  path = os.path.join(directory, PARAMS)
  if info is None or not os.path.exists(path):
    raise ShippedBaseError(f"{directory} holds no shipped base ({INFO} and {PARAMS}); reinstall rldyn or "
                           "pretrain with --base=pretrain")
  have = _sha256(path)
  if have != info.get("params_sha256"):
    raise ShippedBaseError(f"{path} is damaged: its SHA-256 is {have[:16]}…, info.json says "
                           f"{str(info.get('params_sha256'))[:16]}…; reinstall rldyn (git checkout) or "
                           "pretrain with --base=pretrain")
  import dataclasses  # pylint: disable=g-import-not-at-top
  model_cfg = dataclasses.replace(cfg.model, scan_layers=False)
  abstract = model_lib.abstract_params(model_cfg)
  shardings = state_lib.param_shardings(model_cfg, mesh)
  with np.load(path) as z:
    arrays = {k: z[k] for k in z.files}
  flat = flatten(abstract)  # {name: abstract leaf}, in the tree's leaf order
  names = list(flat)
  if sorted(names) != sorted(arrays):
    raise ShippedBaseError(f"{path} holds other parameters than this model's "
                           f"(missing {sorted(set(names) - set(arrays))[:3]}, extra {sorted(set(arrays) - set(names))[:3]})")
  leaves = []
  for (name, a), s in zip(flat.items(), jax.tree.leaves(shardings)):
    x = arrays[name]
    if x.shape != a.shape or x.dtype != a.dtype:
      raise ShippedBaseError(f"{path}: {name} is {x.dtype}{list(x.shape)}, the model's is {a.dtype}{list(a.shape)}")
    leaves.append(jax.device_put(x, s))
  return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(abstract), leaves)


def install(cfg, wd, mesh, directory: str = DEMO_BASE_DIR) -> dict:
  """Writes the shipped base into `wd`'s base/ (params, info.json naming where it came from); returns its
  info. ShippedBaseError if it is damaged or was trained with another recipe than `cfg`'s."""
  differ = recipe_differences(cfg, directory)
  if differ:
    raise ShippedBaseError(f"the shipped base in {directory} was not trained with this run's recipe "
                           f"(differs: {', '.join(differ[:6])}); pretrain with --base=pretrain")
  params = load_params(cfg, mesh, directory)
  info = dict(read_info(directory))
  info["model"] = {**info["model"], "scan_layers": False}
  info["shipped_from"] = directory
  wd.write_base(params, info)
  return info


def save(workdir: str, out_dir: str, provenance: str) -> dict:
  """Writes the base of `workdir` (a finished demo or pretraining run) as a shippable base into out_dir."""
  from rldyn import parallel  # pylint: disable=g-import-not-at-top
  from rldyn.workdir import Workdir  # pylint: disable=g-import-not-at-top
  wd = Workdir(workdir)
  if not wd.has_base():
    raise ShippedBaseError(f"{workdir} has no finished base model (base/info.json)")
  cfg, _ = wd.load_config()
  mesh = parallel.make_mesh(cfg.mesh)
  params = wd.base_params(cfg.model, mesh)
  os.makedirs(out_dir, exist_ok=True)
  buf = io.BytesIO()
  np.savez(buf, **{name: np.asarray(jax.device_get(x)) for name, x in flatten(params).items()})
  path = os.path.join(out_dir, PARAMS)
  with open(path, "wb") as f:
    f.write(buf.getvalue())
  info = {k: v for k, v in wd.base_info().items() if k != "shipped_from"}
  info.update(recipe=recipe(cfg), params_sha256=_sha256(path),
              provenance={"trained_by": provenance, "saved": datetime.date.today().isoformat(),
                          "saved_with_jax": jax.__version__})
  with open(os.path.join(out_dir, INFO), "w") as f:
    json.dump(info, f, indent=2)
    f.write("\n")
  return info


def main(argv):
  del argv
  from absl import flags, logging  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  info = save(f.workdir, f.out, f.provenance)
  print(f"wrote {f.out}: {info['steps']} steps, held-out greedy {info['eval/accuracy']:.3f}, "
        f"sha256 {info['params_sha256'][:16]}…", flush=True)


if __name__ == "__main__":
  from absl import flags  # pylint: disable=g-import-not-at-top
  from rldyn import cli  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("workdir", None, "A finished run whose base to ship.", required=True)
  flags.DEFINE_string("out", DEMO_BASE_DIR, "Where to write params.npz and info.json.")
  flags.DEFINE_string("provenance", None, "Where and how it was trained (machine, command).", required=True)
  cli.run(main, __name__)
