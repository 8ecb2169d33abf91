"""The run directory: every path in it and every read and write of it (docs/workdir.md).

    wd = Workdir("/tmp/rldyn/two_phase")
    cfg, task = wd.load_config()                 # the Config saved in config.json and the task it names
    params = wd.base_params(cfg.model, mesh)     # the base model the run started from
    for step in wd.checkpoint_steps():
      params = wd.checkpoint_params(step, cfg, mesh)

Layout (the contract other tools rely on):

    config.json          the resolved config (Config as JSON)
    metrics.jsonl        one line per RL step                         eval.jsonl   held-out evaluations
    events.jsonl         run_start/resume/end, checkpoints, NaN skips, phase boundaries, ...
    checkpoints/         orbax CheckpointManager: {state: {params, opt_state}, ref_params} + meta
    checkpoints.corrupt/ checkpoints that failed to read, set aside
    base/                the pretrained base: params/, info.json, metrics.jsonl, checkpoints/
    base_pointer.json    {"base_workdir": DIR} when the base lives in another workdir
    samples/samples.jsonl decoded rollouts          tensorboard/   optional TensorBoard mirror
    phases.json, phases.png   rldyn.phases          replay/        rldyn.replay (max_new_tokens_N/ inside:
                                                    the same at another generation budget)
    roles_validation.json     rldyn.roles validate

This module imports only the standard library at the top, so numpy-only tools (the phase detector) can
use its names; reading parameters imports jax and orbax when called.

Multi-process runs have a single writer: process 0 (`writers.is_writer`) takes the lock and writes every
file; the other processes read, and take part in the orbax checkpoint saves and restores (every process
must). A workdir may be a local path or any `etils.epath` URI (gs://bucket/run): every read and write
here, in the logs and in the checkpointer goes through epath (orbax/tensorstore for arrays) for URIs.
Object stores have no flock: a gs:// workdir is not locked against a second launch.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from rldyn.metrics import writers
from rldyn.metrics.writers import JsonlWriter, read_jsonl

CONFIG = "config.json"
METRICS = "metrics.jsonl"
EVAL = "eval.jsonl"
EVENTS = "events.jsonl"
CHECKPOINTS = "checkpoints"
CORRUPT = "checkpoints.corrupt"
BASE = "base"
BASE_POINTER = "base_pointer.json"
SAMPLES = os.path.join("samples", "samples.jsonl")
TENSORBOARD = "tensorboard"
PHASES = "phases.json"
PHASES_PLOT = "phases.png"
REPLAY = "replay"
ROLES_VALIDATION = "roles_validation.json"
# Inside replay/:
REPLAY_CACHE = "replay.jsonl"
REPLAY_BASE_SAMPLES = "base_samples.npz"
REPLAY_PASSK = "passk.json"
REPLAY_SPARSITY = "sparsity.json"
REPLAY_REPORT = "report.md"
REPLAY_BUDGET_DIR = "max_new_tokens_{}"  # the same files, for a replay at another generation budget
# Inside base/:
BASE_PARAMS = "params"
BASE_INFO = "info.json"


LOCK = ".lock"


class WorkdirBusy(RuntimeError):
  """Another live process holds the workdir (one writer per workdir)."""


class WorkdirLock:
  """An exclusive lock on a workdir for a run's lifetime (flock on WORKDIR/.lock, released at exit).

  The lock file records the holder (pid, host, command start); a second launch on the same workdir
  fails at once with a message naming it. In a multi-process run process 0 takes it and every process
  learns the outcome (all of them raise WorkdirBusy, none waits on the others). flock dies with its process, so the lock of a killed run is
  free again: a stale lock file is simply taken over (the previous holder is reported).
  """

  def __init__(self, path: str):
    self.path = path
    self._fd: int | None = None
    self.previous: dict | None = None

  def __enter__(self) -> WorkdirLock:
    busy = self._take() if writers.is_writer() and writers.is_local(self.path) else None  # no flock on URIs
    if _any_process(busy is not None):  # a multi-process run: all of them learn that process 0 could not
      raise WorkdirBusy(busy or f"{os.path.dirname(self.path)} is in use (process 0 could not lock it)")
    return self

  def _take(self) -> str | None:
    """Takes the flock and records this process; returns why not (the holder), or None."""
    import fcntl  # pylint: disable=g-import-not-at-top
    import socket  # pylint: disable=g-import-not-at-top
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _read_holder(fd)
      os.close(fd)
      who = (f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('started')}" if holder
             else "another process")
      return (f"{os.path.dirname(self.path)} is in use by {who}; wait for it to finish, stop it, or use "
              "another --workdir")
    self.previous = _read_holder(fd) or None
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                              "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
    os.fsync(fd)
    self._fd = fd
    return None

  def __exit__(self, *exc) -> None:
    import fcntl  # pylint: disable=g-import-not-at-top
    if self._fd is not None:
      os.ftruncate(self._fd, 0)  # a clean exit leaves no holder behind (a killed run leaves its record)
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None


def _any_process(flag: bool) -> bool:
  """`flag` agreed over the processes of a multi-process run (itself when jax is not even imported)."""
  if "jax" not in sys.modules:
    return flag
  from rldyn import parallel  # pylint: disable=g-import-not-at-top
  return parallel.any_process(flag)


def _read_holder(fd: int) -> dict:
  try:
    return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
  except (OSError, ValueError):
    return {}


def write_json_atomic(path: str, obj: Any, indent: int | None = 2, strict: bool = False) -> None:
  """Writes JSON to path.tmp, then renames: readers see the old file or the new one, never half.

  Only the writing process writes (`writers.is_writer`); on the others this does nothing. strict: refuse
  NaN/inf (ValueError, nothing written) so the file is standard JSON any reader parses.
  """
  if writers.is_writer():
    text = json.dumps(obj, indent=indent, allow_nan=not strict) + ("\n" if strict else "")
    writers.write_bytes_atomic(path, text.encode())


def read_json(path: str) -> Any:
  return json.loads(writers.read_bytes(path).decode())


class Workdir:
  """One run directory. Paths are absolute; nothing is created until something is written."""

  def __init__(self, root: str):
    if not root:
      raise ValueError("the workdir must be a non-empty path")
    self.root = os.path.abspath(root) if writers.is_local(root) else str(root).rstrip("/")

  def __repr__(self) -> str:
    return f"Workdir({self.root!r})"

  def path(self, *parts: str) -> str:
    return os.path.join(self.root, *parts)

  # ---- files ------------------------------------------------------------------------------------------
  config_path = property(lambda self: self.path(CONFIG))
  metrics_path = property(lambda self: self.path(METRICS))
  eval_path = property(lambda self: self.path(EVAL))
  events_path = property(lambda self: self.path(EVENTS))
  samples_path = property(lambda self: self.path(SAMPLES))
  checkpoints_dir = property(lambda self: self.path(CHECKPOINTS))
  tensorboard_dir = property(lambda self: self.path(TENSORBOARD))
  phases_path = property(lambda self: self.path(PHASES))
  phases_plot_path = property(lambda self: self.path(PHASES_PLOT))
  replay_dir = property(lambda self: self.path(REPLAY))
  roles_validation_path = property(lambda self: self.path(ROLES_VALIDATION))
  base_dir = property(lambda self: self.path(BASE))
  base_info_path = property(lambda self: self.path(BASE, BASE_INFO))
  base_params_path = property(lambda self: self.path(BASE, BASE_PARAMS))
  base_metrics_path = property(lambda self: self.path(BASE, METRICS))
  base_checkpoints_dir = property(lambda self: self.path(BASE, CHECKPOINTS))

  def replay_out_dir(self, max_new_tokens: int | None = None) -> str:
    """replay/, or replay/max_new_tokens_N/ for a replay at another generation budget than the run's
    (`rldyn.replay --max_new_tokens=N`), so the two never overwrite each other's files."""
    if max_new_tokens is None:
      return self.replay_dir
    return self.path(REPLAY, REPLAY_BUDGET_DIR.format(max_new_tokens))

  def lock(self) -> WorkdirLock:
    """`with wd.lock():` — one writer per workdir (WorkdirBusy if another live process holds it)."""
    return WorkdirLock(self.path(LOCK))

  def check_writable(self) -> None:
    """Raises ValueError unless the workdir is, or can be created as, a writable directory (creates nothing).

    A URI (gs://...) is checked when `ensure` first writes to it.
    """
    if not writers.is_local(self.root):
      return
    if os.path.exists(self.root) and not os.path.isdir(self.root):
      raise ValueError(f"workdir {self.root} is not writable: it exists and is not a directory")
    parent = self.root
    while not os.path.exists(parent):
      parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
      raise ValueError(f"workdir {self.root} is not writable: {parent} is not a writable directory")

  def ensure(self) -> None:
    """Creates the directory and checks that it is writable (a clear error if not); the writer only."""
    if not writers.is_writer():
      return
    try:
      writers.makedirs(self.path("samples"))
      probe = self.path(".write_test")
      writers.write_bytes_atomic(probe, b"ok")
      if writers.is_local(probe):
        os.remove(probe)
      else:
        writers._epath(probe).unlink()  # pylint: disable=protected-access
    except OSError as e:
      raise ValueError(f"workdir {self.root} is not writable: {e}") from e

  # ---- logs -------------------------------------------------------------------------------------------
  def read_metrics(self) -> list[dict]:
    return read_jsonl(self.metrics_path)

  def read_evals(self) -> list[dict]:
    return read_jsonl(self.eval_path)

  def read_events(self) -> list[dict]:
    return read_jsonl(self.events_path)

  def event(self, name: str, step: int, **fields) -> None:
    """Appends one event to events.jsonl (the RL loop's own events go through its Emitter)."""
    w = JsonlWriter(self.events_path)
    try:
      if w.repaired:
        w.write({"event": "log_repaired", "step": step, "time": time.time(), "log": EVENTS, **w.repaired})
      w.write({"event": name, "step": step, "time": time.time(), **fields})
    finally:
      w.close()

  def read_samples(self) -> list[dict]:
    return read_jsonl(self.samples_path)

  # ---- config -----------------------------------------------------------------------------------------
  def saved_config(self) -> dict | None:
    """config.json as a dict, or None for a fresh workdir."""
    return read_json(self.config_path) if writers.exists(self.config_path) else None

  def write_config(self, cfg) -> None:
    from rldyn import config as config_lib  # pylint: disable=g-import-not-at-top
    write_json_atomic(self.config_path, config_lib.to_dict(cfg))

  def load_config(self):
    """(Config, Task) of the run saved here; keys added since the run was made take their defaults."""
    from rldyn import config as config_lib  # pylint: disable=g-import-not-at-top
    from rldyn.tasks import make_task  # pylint: disable=g-import-not-at-top
    d = self.saved_config()
    if d is None:
      raise FileNotFoundError(f"{self.root} has no {CONFIG}: is it an rldyn RL workdir?")
    options = d["task"]["options"]
    if isinstance(options, list):
      options = {k: v for k, v in options}
    task = make_task(d["task"]["name"], **{k: (dict(v) if _is_pair_list(v) else v)
                                            for k, v in dict(options).items()})
    tok = task.tokenizer
    stops = tuple(getattr(tok, "eos_ids", (tok.eos_id,)))  # a checkpoint's tokenizer may end turns otherwise
    return config_lib.from_saved(d, tok.vocab_size, tok.pad_id, stops), task

  # ---- the base model ---------------------------------------------------------------------------------
  def has_base(self) -> bool:
    """Whether a finished base model lives in this workdir's base/."""
    return writers.exists(self.base_info_path)

  def base_source(self) -> Workdir:
    """The workdir whose base/ holds this run's base model (itself, or the one base_pointer.json names)."""
    pointer = self.path(BASE_POINTER)
    if not self.has_base() and writers.exists(pointer):
      return Workdir(read_json(pointer)["base_workdir"])
    return self

  def point_base_to(self, other: Workdir) -> None:
    write_json_atomic(self.path(BASE_POINTER), {"base_workdir": other.root}, indent=None)

  def base_info(self) -> dict:
    """info.json of the base model this run uses (model shape, task, held-out results)."""
    return read_json(self.base_source().base_info_path)

  def write_base(self, params, info: dict) -> None:
    """Saves the pretrained params (every process), their manifest, then info.json (the writer; it marks the
    base done)."""
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
    if writers.is_writer():
      writers.makedirs(self.base_dir)
    from rldyn import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
    with ocp.StandardCheckpointer() as c:
      c.save(self.base_params_path, params, force=True)
    ckpt_lib.write_manifest(self.base_params_path)  # size + CRC32 of every file (the writer only)
    write_json_atomic(self.base_info_path, info)

  def base_params(self, model_cfg, mesh) -> dict:
    """The base parameters, restored onto `mesh` with the model's shardings, in the model's layer layout.

    A base saved in the other layout (its info.json's model.scan_layers: a per-layer base for a
    `model.scan_layers=True` run, or the reverse) is restored as saved, then stacked or unstacked
    (rldyn.model.stack_layers / unstack_layers) straight into the model's shardings. The files are checked
    against the manifest write_base wrote (size and CRC32 of each) first: a damaged base raises
    UnreadableCheckpoint and is never restored; a base from before manifests is restored unverified.
    """
    import dataclasses  # pylint: disable=g-import-not-at-top
    import jax  # pylint: disable=g-import-not-at-top
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
    from rldyn import model as model_lib  # pylint: disable=g-import-not-at-top
    from rldyn import state as state_lib  # pylint: disable=g-import-not-at-top
    if jax.process_count() > 1:  # process 0 may have just written the base pointer (launch.run)
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices("rldyn.workdir.base_params")
    from rldyn import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
    source = self.base_source()
    problem = ckpt_lib.verify_manifest(source.base_params_path)
    if problem not in (None, ckpt_lib.NO_MANIFEST):  # (bases written before manifests: unverified)
      raise ckpt_lib.UnreadableCheckpoint(f"the base model in {source.base_params_path} is damaged: {problem}; "
                                          "pretrain or import it again into a new workdir")
    with ocp.StandardCheckpointer() as c:
      saved_scan = bool(source.base_info().get("model", {}).get("scan_layers", False))
      saved_cfg = dataclasses.replace(model_cfg, scan_layers=saved_scan)
      target = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                            model_lib.abstract_params(saved_cfg), state_lib.param_shardings(saved_cfg, mesh))
      params = c.restore(source.base_params_path, target)
    if saved_scan == model_cfg.scan_layers:
      return params
    convert = model_lib.stack_layers if model_cfg.scan_layers else model_lib.unstack_layers
    return jax.jit(convert, out_shardings=state_lib.param_shardings(model_cfg, mesh))(params)

  # ---- RL checkpoints ---------------------------------------------------------------------------------
  def checkpoint_steps(self) -> list[int]:
    if writers.is_local(self.root):
      names = os.listdir(self.checkpoints_dir) if os.path.isdir(self.checkpoints_dir) else []
    else:
      d = writers._epath(self.checkpoints_dir)  # pylint: disable=protected-access
      names = [p.name for p in d.iterdir()] if d.exists() else []
    return sorted(int(n) for n in names if n.isdigit())

  def checkpointer(self, keep: int = -1, async_save: bool = True, on_event=None, read_only: bool = False):
    """The RL checkpoints; read_only for a reader (the run writing them may still be live)."""
    from rldyn import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
    return ckpt_lib.Checkpointer(self.checkpoints_dir, keep=keep, async_save=async_save, on_event=on_event,
                                 read_only=read_only)

  def checkpoint_state(self, step: int, cfg, mesh) -> tuple[dict, dict]:
    """(tree, meta) of RL checkpoint `step`: tree = {state: {params, opt_state}, ref_params}."""
    from rldyn import state as state_lib  # pylint: disable=g-import-not-at-top
    ckpt = self.checkpointer(async_save=False, read_only=True)
    try:
      return ckpt.restore(step, state_lib.abstract_rl_tree(cfg.model, cfg.rl.optim, cfg.rl.steps, mesh))
    finally:
      ckpt.close()

  def checkpoint_params(self, step: int, cfg, mesh) -> dict:
    return self.checkpoint_state(step, cfg, mesh)[0]["state"]["params"]


def _is_pair_list(v: Any) -> bool:
  return isinstance(v, list) and bool(v) and all(isinstance(p, list) and len(p) == 2 for p in v)
