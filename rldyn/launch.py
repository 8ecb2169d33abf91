"""From a ConfigDict and a workdir to a finished stage: `run(config_dict, workdir)`.

    prepare(config_dict, workdir)   # config -> (cfg, task, mesh, wd); every check, nothing written
    run(config_dict, workdir)       # prepare, claim the workdir, pretrain the base if needed, RL

`stage = "pretrain"` trains the base model into WORKDIR/base. `stage = "rl"` runs the RL loop on the base
in WORKDIR/base, or on `base_workdir`'s, or on the Hugging Face checkpoint in `checkpoint_dir` (imported
once into WORKDIR/base, its info.json naming the directory), or (none given) on one this launcher
pretrains first. With `checkpoint_dir` the model shape comes from the checkpoint's config.json (a shape
field set by hand to another value is refused; dtypes and the attention kernel stay the config's) and
the task's tokenizer is the checkpoint's (text tasks: `task.options.tokenizer_dir` is filled with it).
Everything that can be checked without compiling is checked in `prepare`, before anything is written: a
rejected launch leaves the workdir as it was (a ConfigError names the problem and the valid choices).
"""

from __future__ import annotations

import dataclasses
import os
import re
import time

import jax

from rldyn import checkpoint as ckpt_lib
from rldyn import config as config_lib
from rldyn import data as data_lib
from rldyn import oneshot
from rldyn import parallel
from rldyn import pretrain
from rldyn import roles as roles_lib
from rldyn import state as state_lib
from rldyn import summary
from rldyn.model import hf
from rldyn.config import Config, ConfigError
from rldyn.metrics import writers
from rldyn.rl import advantages as adv_lib
from rldyn.rl import loop
from rldyn.rl import losses
from rldyn.rl import rewards as rewards_lib
from rldyn.rl import step as step_lib
from rldyn.rl import verifree
from rldyn.tasks import make_task
from rldyn.tasks import TASKS
from rldyn.tasks.base import Task
from rldyn.workdir import Workdir

# Model fields that change parameter shapes (dtypes and the attention kernel may differ from the base's).
SHAPE_KEYS = ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_ff", "qkv_bias",
              "qk_norm", "tie_embeddings")
# Model fields a checkpoint's config.json decides (hf.config_from_hf); the others (dtypes, attention kernel,
# layer scan, remat) stay the config's.
CHECKPOINT_KEYS = SHAPE_KEYS + ("max_seq_len", "rope_theta", "norm_eps", "rope_scaling", "rope_factor",
                                "rope_low_freq_factor", "rope_high_freq_factor", "rope_original_max_len",
                                "rope_hf_freqs")


def validate(cfg: Config, num_devices: int) -> None:
  """Every check that spans fields or consults a registry (ConfigError naming the valid choices).

  (Each section's own ranges are checked by its dataclass when the Config is built.)
  """
  task_cls = TASKS[cfg.task.name]
  structural = cfg.roles.tagger == "structural" or (cfg.roles.tagger == "placebo" and
                                                    cfg.roles.placebo_of == "structural")
  if structural and not task_cls.has_role_truth:
    raise ConfigError(f"task {cfg.task.name} has no ground-truth token roles, so roles.tagger=structural (or "
                      "placebo of it) cannot work; set roles.tagger to lexicon or spans (roles.placebo_of too)")
  if cfg.checkpoint_dir and cfg.stage == "pretrain":
    raise ConfigError("stage=pretrain trains a base model, but checkpoint_dir gives one; drop checkpoint_dir or "
                      "set stage=rl")
  if cfg.checkpoint_dir and cfg.base_workdir:
    raise ConfigError(f"checkpoint_dir={cfg.checkpoint_dir!r} and base_workdir={cfg.base_workdir!r} both name a "
                      "base model; keep one")
  if "tokenizer_dir" in task_cls.config_cls.__dataclass_fields__ and not cfg.checkpoint_dir:
    raise ConfigError(f"task {cfg.task.name} runs on a Hugging Face checkpoint (its tokenizer and base "
                      "model): set checkpoint_dir to the checkpoint's directory")
  check_generation_fits(cfg)
  if cfg.pretrain.seq_len > cfg.model.max_seq_len:
    raise ConfigError(f"pretrain.seq_len={cfg.pretrain.seq_len} exceeds model.max_seq_len="
                      f"{cfg.model.max_seq_len}")
  check_curriculum(cfg)
  rewards_lib.REWARDS.get(cfg.reward.name)
  if cfg.reward.name == "incorrect_label" and cfg.task.name not in rewards_lib.LABELLED_TASKS:
    raise ConfigError(f"reward.name=incorrect_label needs a task with a wrong-label definition; valid tasks: "
                      f"{', '.join(rewards_lib.LABELLED_TASKS)}")
  if cfg.reward.name == "distinct_correct" and cfg.task.name not in rewards_lib.SOLUTION_TASKS:
    raise ConfigError(f"reward.name=distinct_correct needs a task whose solutions have a key; valid tasks: "
                      f"{', '.join(rewards_lib.SOLUTION_TASKS)}")
  adv_lib.ADVANTAGES.get(cfg.advantage.name)
  if cfg.advantage.name == "passk" and not 1 <= cfg.advantage.pass_k <= cfg.rl.group_size:
    raise ConfigError(f"advantage.pass_k={cfg.advantage.pass_k} must be in [1, rl.group_size="
                      f"{cfg.rl.group_size}]")
  adv_lib.check_group_size(cfg.advantage.name, cfg.rl.group_size)
  adv_lib.TRANSFORMS.get(cfg.advantage.transform)
  losses.POLICY_LOSSES.get(cfg.loss.name)
  losses.AGGREGATIONS.get(cfg.loss.aggregation)
  losses.KL_ESTIMATORS.get(cfg.loss.kl_estimator)
  if cfg.loss.objective not in losses.OBJECTIVES:
    raise ConfigError(f"loss.objective={cfg.loss.objective!r}; valid: {', '.join(losses.OBJECTIVES)}")
  if cfg.loss.objective == "verifree":
    try:
      verifree.check_config(cfg)
    except ValueError as e:
      raise ConfigError(str(e)) from e
  roles_lib.TAGGERS.get(cfg.roles.tagger)
  roles_lib.TAGGERS.get(cfg.roles.placebo_of)
  for p in cfg.roles.span_patterns:
    try:
      re.compile(p)
    except re.error as e:
      raise ConfigError(f"roles.span_patterns: {p!r} is not a valid regex ({e})") from e
  data, fsdp, _ = cfg.mesh.resolve(num_devices)
  dp = data * fsdp
  try:
    step_lib.check_micro_batches(cfg.loss, cfg.rl.micro_batches)
  except ValueError as e:
    raise ConfigError(str(e)) from e
  check_batch(cfg, dp)
  if cfg.pretrain.easy_fraction:
    pretrain.easy_task(cfg)  # the easier world's options must fit the task (ValueError naming the fix)
  if cfg.pretrain.batch_size % dp:
    raise ConfigError(f"pretrain.batch_size={cfg.pretrain.batch_size} must be divisible by the mesh's "
                      f"data-parallel size {dp} (mesh.data * mesh.fsdp)")


def check_generation_fits(cfg: Config) -> None:
  """sampling.max_new_tokens plus the shortest prompt a batch can have (one PROMPT_BUCKET) must fit
  model.max_seq_len (also rldyn.replay's check of another budget)."""
  if cfg.sampling.max_new_tokens + data_lib.PROMPT_BUCKET > cfg.model.max_seq_len:
    raise ConfigError(f"sampling.max_new_tokens={cfg.sampling.max_new_tokens} plus a prompt does not fit "
                      f"model.max_seq_len={cfg.model.max_seq_len} (at most "
                      f"{cfg.model.max_seq_len - data_lib.PROMPT_BUCKET} new tokens); lower the one or raise the other")


def check_batch(cfg: Config, dp: int) -> None:
  """The RL batch must split into rl.updates_per_batch minibatches of rl.micro_batches micro-batches whose
  rows the `dp` data-parallel devices (mesh.data * mesh.fsdp) divide (also rldyn.plan's check)."""
  batch = cfg.rl.prompts_per_step * cfg.rl.group_size
  if batch % cfg.rl.updates_per_batch:
    raise ConfigError(f"rl.prompts_per_step * rl.group_size = {batch} must be divisible by "
                      f"rl.updates_per_batch = {cfg.rl.updates_per_batch}")
  rows = batch // cfg.rl.updates_per_batch
  if rows % dp:
    raise ConfigError(f"each minibatch has {rows} rows (rl.prompts_per_step * rl.group_size / "
                      f"rl.updates_per_batch) but the mesh's data axis (mesh.data * mesh.fsdp: the "
                      f"data-parallel devices) is {dp}: change rl.prompts_per_step or rl.updates_per_batch "
                      f"so {dp} divides it")
  micro = cfg.rl.micro_batches
  if rows % (micro * dp):
    raise ConfigError(f"rl.prompts_per_step * rl.group_size = {batch} rows in rl.updates_per_batch x "
                      f"rl.micro_batches = {cfg.rl.updates_per_batch * micro} micro-batches must give "
                      f"micro-batches whose rows the {dp} data-parallel devices divide; change "
                      "rl.micro_batches, rl.prompts_per_step or rl.updates_per_batch")


def make_config(config_dict) -> tuple[Config, Task]:
  """The typed Config and its task from a ConfigDict (ConfigError on a bad key or value).

  With `checkpoint_dir`, the model section takes the checkpoint's shape and the task its tokenizer.
  """
  d = config_dict.to_dict() if hasattr(config_dict, "to_dict") else dict(config_dict)
  task_d = dict(d.get("task", {}))
  if "name" not in task_d:
    raise ConfigError("config.task.name is required")
  options = task_d.get("options", {})
  options = options.to_dict() if hasattr(options, "to_dict") else dict(options)
  checkpoint_dir = d.get("checkpoint_dir") or ""
  if checkpoint_dir:
    d["model"] = checkpoint_model(checkpoint_dir, dict(d.get("model") or {}))
    options = checkpoint_tokenizer(checkpoint_dir, task_d["name"], options)
    d["task"] = {**task_d, "options": options}
  try:
    task = make_task(task_d["name"], **options)
  except (ValueError, TypeError) as e:
    raise ConfigError(str(e)) from e
  tok = task.tokenizer
  stops = tuple(getattr(tok, "eos_ids", (tok.eos_id,)))  # a checkpoint's tokenizer may end turns otherwise
  vocab = d["model"]["vocab_size"] if checkpoint_dir else tok.vocab_size
  if vocab != tok.vocab_size:
    raise ConfigError(f"{checkpoint_dir}: config.json vocab_size={vocab} but its tokenizer gives "
                      f"{tok.vocab_size} ids")
  if checkpoint_dir:
    d["model"] = {k: v for k, v in d["model"].items() if k != "vocab_size"}
  return config_lib.load(d, vocab_size=vocab, pad_id=tok.pad_id, stop_tokens=stops), task


def checkpoint_model(checkpoint_dir: str, model: dict) -> dict:
  """The model section with every field the checkpoint's config.json decides taken from it.

  A field set to neither its default nor the checkpoint's value was set by hand for another model:
  refused, naming the field. The fields outside CHECKPOINT_KEYS (dtypes, attention kernel, ...) stay the
  config's.
  """
  if not os.path.isdir(checkpoint_dir):
    raise ConfigError(f"checkpoint_dir={checkpoint_dir!r} is not a directory")
  for name in ("config.json", "tokenizer.json"):
    if not os.path.isfile(os.path.join(checkpoint_dir, name)):
      raise ConfigError(f"checkpoint_dir={checkpoint_dir!r} has no {name} (a Hugging Face checkpoint "
                        "directory has config.json, model.safetensors[.index.json] and tokenizer.json)")
  defaults = {f.name: f.default for f in dataclasses.fields(config_lib.Config().model)}
  mine = {k: model.get(k, defaults[k]) for k in defaults if k != "vocab_size"}
  try:
    theirs = dataclasses.asdict(hf.config_from_hf(hf.read_config(checkpoint_dir)))
  except ValueError as e:
    raise ConfigError(f"checkpoint_dir={checkpoint_dir!r}: {e}") from e
  hand = {k: (mine[k], theirs[k]) for k in CHECKPOINT_KEYS
          if k != "vocab_size" and mine[k] != defaults[k] and mine[k] != theirs[k]}
  if hand:
    raise ConfigError(f"model fields set by hand that checkpoint_dir={checkpoint_dir!r} decides: {hand} "
                      "(config, checkpoint); drop them from the config (the checkpoint's config.json gives "
                      "the model shape)")
  return {**mine, **{k: theirs[k] for k in CHECKPOINT_KEYS}}


def checkpoint_tokenizer(checkpoint_dir: str, task_name: str, options: dict) -> dict:
  """The task options with the checkpoint as the tokenizer source (tasks with a `tokenizer_dir` option)."""
  if task_name not in TASKS:
    raise ConfigError(f"unknown task {task_name!r}; valid: {sorted(TASKS)}")
  fields = TASKS[task_name].config_cls.__dataclass_fields__
  if "tokenizer_dir" not in fields:
    text = sorted(n for n, c in TASKS.items() if "tokenizer_dir" in c.config_cls.__dataclass_fields__)
    raise ConfigError(f"checkpoint_dir needs a task that uses the checkpoint's tokenizer; task {task_name} has "
                      f"its own vocabulary. Valid tasks: {', '.join(text)}")
  given = options.get("tokenizer_dir") or ""
  if given and os.path.abspath(given) != os.path.abspath(checkpoint_dir):
    raise ConfigError(f"task.options.tokenizer_dir={given!r} differs from checkpoint_dir={checkpoint_dir!r}; "
                      "leave tokenizer_dir empty (the launcher fills it from checkpoint_dir)")
  return {**options, "tokenizer_dir": os.path.abspath(checkpoint_dir)}  # replay may run from another cwd


def import_base(cfg: Config, wd: Workdir, mesh) -> dict:
  """Reads the checkpoint of `checkpoint_dir` onto `mesh` and saves it as this workdir's base model."""
  t0 = time.time()
  m = cfg.model
  model_cfg, params = hf.load(cfg.checkpoint_dir, mesh, param_dtype=m.param_dtype, dtype=m.dtype,
                              attention=m.attention, scan_layers=m.scan_layers, remat=m.remat)
  if model_cfg != m:
    raise ConfigError(f"{cfg.checkpoint_dir}: config.json changed since the launch was checked "
                      f"({differing_keys(dataclasses.asdict(model_cfg), dataclasses.asdict(m))})")
  info = {"model": dataclasses.asdict(m), "task": cfg.task.name,
          "checkpoint_dir": os.path.abspath(cfg.checkpoint_dir), "import_s": time.time() - t0}
  wd.write_base(params, info)
  wd.event("base_imported", 0, checkpoint_dir=info["checkpoint_dir"], import_s=info["import_s"])
  return info


def check_base(cfg: Config, source: Workdir) -> None:
  """A base in `source` must exist and match this config's model shape and task."""
  if not source.has_base():
    raise ConfigError(f"base_workdir={cfg.base_workdir!r} has no trained base model (base/info.json); "
                      "train one with experiments/pretrain.py")
  info = source.base_info()
  mine = dataclasses.asdict(cfg.model)
  # A field the base's info.json predates has its default, which is what that base was built with.
  defaults = {f.name: f.default for f in dataclasses.fields(cfg.model)}
  theirs = {k: info["model"].get(k, defaults.get(k)) for k in SHAPE_KEYS}
  differ = {k: (theirs[k], mine[k]) for k in SHAPE_KEYS if theirs[k] != mine[k]}
  if differ:
    raise ConfigError(f"the base model in {source.base_dir} has another shape than this config's model: "
                      f"{differ} (base, config); set model.* to match or train a new base")
  if info.get("task") != cfg.task.name:
    raise ConfigError(f"the base model in {source.base_dir} was trained on task {info.get('task')!r}, "
                      f"this config's task is {cfg.task.name!r}")


def check_curriculum(cfg: Config) -> None:
  """rl.curriculum names an option of the task's config and every stage builds a valid task."""
  parsed = config_lib.parse_curriculum(cfg.rl.curriculum)
  if parsed is None:
    return
  if cfg.task.fixed_problem:
    raise ConfigError("rl.curriculum and task.fixed_problem both choose the RL problems (a curriculum of "
                      "worlds vs one-shot RL on one problem); keep one")
  key, stages = parsed
  valid = sorted(TASKS[cfg.task.name].config_cls.__dataclass_fields__)
  if key not in valid:
    raise ConfigError(f"rl.curriculum: {key!r} is not an option of task {cfg.task.name}; valid: "
                      f"{', '.join(valid)}")
  for start, value in stages:
    try:
      make_task(cfg.task.name, **{**cfg.task.kwargs, key: value})
    except (ValueError, TypeError) as e:
      raise ConfigError(f"rl.curriculum: {key}={value!r} (from step {start}) does not make a valid "
                        f"{cfg.task.name} task: {e}") from e


def check_workdir(cfg: Config, wd: Workdir) -> bool:
  """Refuses to mix runs: a workdir belongs to the config that made it. Returns whether rl.steps changed.

  Lengthening a run is allowed (not shortening it): the run continues from its last checkpoint, provided
  the RL learning-rate schedule does not depend on the number of steps (rl.optim.decay = constant).
  """
  saved = wd.saved_config()
  if saved is None:
    return False
  theirs = config_lib.to_dict(config_lib.from_saved(saved, cfg.model.vocab_size, cfg.sampling.pad_id,
                                                    cfg.sampling.stop_tokens))
  mine = config_lib.to_dict(cfg)
  steps_changed = theirs["rl"]["steps"] != mine["rl"]["steps"]
  if mine["rl"]["steps"] < theirs["rl"]["steps"] and not cfg.resume_anyway:
    raise ConfigError(f"{wd.root} holds a run of rl.steps={theirs['rl']['steps']}; a run can be extended, not "
                      f"shortened (rl.steps={mine['rl']['steps']}): replay or read its checkpoints instead")
  for d in (mine, theirs):
    d.pop("resume_anyway")
    d["rl"].pop("steps")
  if theirs != mine and not cfg.resume_anyway:
    raise ConfigError(f"{wd.root} holds a run with a different config (keys differ: "
                      f"{differing_keys(mine, theirs)}); use another --workdir, or pass "
                      "--config.resume_anyway=True to continue it anyway")
  if steps_changed and cfg.rl.optim.decay != "constant" and not cfg.resume_anyway:
    raise ConfigError(f"{wd.root} was run with rl.steps={saved['rl']['steps']}; changing rl.steps changes "
                      f"the {cfg.rl.optim.decay} learning-rate schedule of a run already under way, so the "
                      "result would be neither run. Use another --workdir (or --config.resume_anyway=True)")
  return steps_changed


def check_checkpoints(cfg: Config, wd: Workdir) -> None:
  """The newest RL checkpoint must fit this config's state (checked from its metadata, nothing read)."""
  steps = wd.checkpoint_steps()
  if not steps:
    return
  mesh = parallel.make_mesh(cfg.mesh)
  target = state_lib.abstract_rl_tree(cfg.model, cfg.rl.optim, cfg.rl.steps, mesh)
  ckpt = wd.checkpointer(async_save=False, read_only=True)  # not locked yet: a live run may be saving
  try:
    ckpt.check_compatible(steps[-1], target)
  except ckpt_lib.IncompatibleCheckpoint as e:
    raise ConfigError(str(e)) from e
  finally:
    ckpt.close()


def differing_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
  """Dotted paths where two nested dicts differ."""
  out = []
  for k in sorted(set(a) | set(b)):
    x, y = a.get(k), b.get(k)
    if isinstance(x, dict) and isinstance(y, dict):
      out += differing_keys(x, y, f"{prefix}{k}.")
    elif x != y:
      out.append(f"{prefix}{k}")
  return out


def prepare(config_dict, workdir: str) -> tuple[Config, Task, object, Workdir]:
  """Validates everything that can be checked without compiling or writing: (cfg, task, mesh, wd).

  Raises ConfigError (a ValueError) naming the problem; nothing is written.
  """
  try:
    return _prepare(config_dict, workdir)
  except ConfigError:
    raise
  except ValueError as e:  # registries, the mesh and the dataclasses raise ValueError with the choices
    raise ConfigError(str(e)) from e


def _prepare(config_dict, workdir: str) -> tuple[Config, Task, object, Workdir]:
  if not workdir:
    raise ConfigError("--workdir must name a directory (it was empty)")
  cfg, task = make_config(config_dict)
  validate(cfg, jax.device_count())
  wd = Workdir(workdir)
  try:
    wd.check_writable()
  except ValueError as e:
    raise ConfigError(str(e)) from e
  if cfg.stage == "rl":
    r = cfg.roles
    try:  # loads the lexicon, compiles span regexes: fails here, not after writing files
      roles_lib.make_tagger(r.tagger, task, lexicon_path=r.lexicon_path, placebo_of=r.placebo_of,
                            seed=r.seed, span_patterns=r.span_patterns)
    except (ValueError, OSError) as e:
      raise ConfigError(f"roles: {e}") from e
    if not wd.has_base() and cfg.base_workdir:
      check_base(cfg, Workdir(cfg.base_workdir))
    elif wd.has_base():
      check_base(cfg, wd)
    check_workdir(cfg, wd)
    check_checkpoints(cfg, wd)
    try:  # one-shot RLVR: the problem must parse (or its uid be found) and not be held out
      oneshot.wrap(cfg, task)
    except ValueError as e:
      raise ConfigError(f"task.fixed_problem: {e}") from e
    fixed = task.fixed_heldout()
    if fixed is not None and cfg.task.eval_size > len(fixed):
      raise ConfigError(f"task.eval_size={cfg.task.eval_size} but the task has {len(fixed)} held-out "
                        "problems; lower task.eval_size")
  if cfg.task.data_dir:
    try:
      Workdir(cfg.task.data_dir).check_writable()
    except ValueError as e:
      raise ConfigError(f"task.data_dir: {e}") from e
  mesh = parallel.make_mesh(cfg.mesh)
  return cfg, task, mesh, wd


def run(config_dict, workdir: str) -> dict:
  """Runs the configured stage in `workdir` (resuming what is there); returns its final results.

  Holds the workdir's lock throughout (WorkdirBusy if another live process has it).
  """
  parallel.init_distributed()
  cfg, task, mesh, wd = prepare(config_dict, workdir)
  wd.ensure()
  with wd.lock() as lock:
    saved = wd.saved_config()
    extended = check_workdir(cfg, wd) if cfg.stage == "rl" else False  # again, now that we hold the lock
    wd.write_config(cfg)
    if lock.previous and lock.previous.get("pid") != os.getpid():
      wd.event("lock_taken_over", 0, previous=lock.previous)
    if cfg.stage == "pretrain":
      return pretrain.run(cfg, wd, task, mesh)
    if extended:
      wd.event("run_extended", 0, from_steps=saved["rl"]["steps"], to_steps=cfg.rl.steps)
    if not wd.has_base() and cfg.base_workdir:
      wd.point_base_to(Workdir(cfg.base_workdir))
    elif not wd.has_base() and cfg.checkpoint_dir:
      import_base(cfg, wd, mesh)
    elif not wd.has_base():
      wd.event("pretrain_start", 0)
      pretrain.run(cfg, wd, task, mesh)
    final = loop.run(cfg, wd, oneshot.wrap(cfg, task), mesh)  # the one-problem task if fixed_problem
  if writers.is_writer():  # the other processes would read logs process 0 may still be writing
    print("\n" + summary.summary(wd), flush=True)
  return final


def print_devices() -> None:
  print(f"[rldyn] {jax.device_count()} {jax.default_backend()} device(s)", flush=True)
