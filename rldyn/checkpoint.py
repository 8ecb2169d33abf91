"""Orbax CheckpointManager wrapper: async save, verified restore onto any mesh, honest fallbacks.

A checkpoint holds `state` (a pytree of arrays: params, optimizer state, reference params, ...) and
`meta` (JSON: step and anything else the loop needs to continue exactly). Restores go through a sharded
abstract target, so a checkpoint written on one mesh loads onto another.

What is restored is verified (docs/workdir.md):
  * Orbax writes each step into a temporary directory and renames it when complete, so a kill mid-save
    leaves the previous checkpoint intact.
  * Once a save has committed, a manifest (MANIFEST: size and CRC32 of every file) is written into its
    directory, and only then is it reported saved (`on_event("checkpoint_saved", step)`). A restore
    checks the manifest first: a flipped bit, a truncated or missing file, or meta naming another step
    means the checkpoint is *unreadable*: it is moved to `<dir>.corrupt/` and the previous one is tried
    (`on_event("checkpoint_unreadable", step, error=...)`).
  * A checkpoint whose arrays have other shapes than the restore target is *incompatible* with this
    config: IncompatibleCheckpoint is raised and nothing is moved.
  * Transient failures (out of memory, a filesystem error) propagate and touch nothing.
  * A failed async save is reported (`checkpoint_save_failed`) when it surfaces, at the next save or at
    close.

Multi-process runs: every process saves and restores (orbax multi-host: each writes and reads its own
shards); only the writing process (`writers.is_writer`, process 0) writes manifests and sets unreadable
checkpoints aside. The directory may be any etils.epath URI (gs://...): manifests go through epath.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import zlib
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp
from etils import epath

from rldyn.metrics import writers

MANIFEST = "MANIFEST.rldyn.json"
NO_MANIFEST = "no manifest (the save did not finish, or an older rldyn wrote it)"  # unverified, not damaged
EventFn = Callable[..., None]


class IncompatibleCheckpoint(ValueError):
  """A checkpoint that cannot be restored into this config's state (other shapes or structure)."""


class UnreadableCheckpoint(Exception):
  """A checkpoint whose content is damaged: failed its manifest, or orbax could not decode it."""


def _size_crc32(path: str, chunk: int = 1 << 23) -> tuple[int, int]:
  crc, size = 0, 0
  with epath.Path(path).open("rb") as f:
    while block := f.read(chunk):
      crc, size = zlib.crc32(block, crc), size + len(block)
  return size, crc


def _files(directory: str) -> list[str]:
  """Every file under `directory` (relative paths), one listing per directory (works on object stores)."""
  out, todo = [], [epath.Path(directory)]
  while todo:
    for p in todo.pop().iterdir():
      if p.is_dir():
        todo.append(p)
      elif p.name != MANIFEST:
        out.append(os.path.relpath(str(p), directory))
  return sorted(out)


def write_manifest(directory: str) -> None:
  """Size and CRC32 of every file of a committed checkpoint (the writing process only)."""
  if not writers.is_writer():
    return
  entries = {rel: list(_size_crc32(os.path.join(directory, rel))) for rel in _files(directory)}
  writers.write_bytes_atomic(os.path.join(directory, MANIFEST),
                             json.dumps({"version": 1, "files": entries}).encode())


def verify_manifest(directory: str) -> str | None:
  """None if every file matches the manifest; else what is wrong. A missing manifest is 'unverified'."""
  path = os.path.join(directory, MANIFEST)
  if not writers.exists(path):
    return NO_MANIFEST
  try:
    files = json.loads(writers.read_bytes(path).decode())["files"]
  except (OSError, ValueError, KeyError, TypeError) as e:
    return f"unreadable manifest ({e!r})"
  for rel, (size, crc) in files.items():
    p = os.path.join(directory, rel)
    if not writers.exists(p):
      return f"missing file {rel}"
    have_size, have_crc = _size_crc32(p)
    if have_size != size:
      return f"{rel} has {have_size} bytes, {size} were saved"
    if have_crc != crc:
      return f"{rel} does not match its checksum (bit rot or an overwrite)"
  extra = set(_files(directory)) - set(files)
  if extra:
    return f"files not in the manifest: {sorted(extra)[:3]}"
  return None


class _NoItemNotices(logging.Filter):
  def filter(self, record: logging.LogRecord) -> bool:
    return "could not be restored" not in str(record.msg)


class _NoReadOnlyNotices(logging.Filter):
  """A read-only manager warns about each option it turns off, and that the directory is read-only."""

  def filter(self, record: logging.LogRecord) -> bool:
    return "read_only=True" not in str(record.msg) and "read only" not in str(record.msg)


@contextlib.contextmanager
def _quiet_orbax(f: logging.Filter | None = None):
  """Drops orbax's expected warnings (default: reading item metadata without handler args warns about
  every item)."""
  f = f or _NoItemNotices()
  logging.getLogger("absl").addFilter(f)
  try:
    yield
  finally:
    logging.getLogger("absl").removeFilter(f)


def _path(keys) -> str:
  """A tree path as 'a/b/0', whatever the node types (dict keys, namedtuple fields, list indices)."""
  parts = []
  for k in keys:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


class Checkpointer:
  """Saves and restores (state pytree, meta dict) pairs under `directory`."""

  def __init__(self, directory: str, keep: int = -1, async_save: bool = True,
               on_event: EventFn | None = None, read_only: bool = False):
    """keep: the newest checkpoints kept (-1 = all). on_event(name, step, **fields) reports saves.

    read_only: for readers (replay, launch checks) of a workdir another process may be writing: nothing
    is created, saved or deleted. A writer removes the half-written (tmp) checkpoints of a killed run
    when it starts; a reader must not, for they may be the live writer's save in flight.
    """
    self.directory = os.path.abspath(directory) if writers.is_local(directory) else str(directory).rstrip("/")
    self._on_event = on_event or (lambda *a, **k: None)
    self._pending: list[int] = []  # saves started but not yet confirmed committed
    self.read_only = read_only
    with _quiet_orbax(_NoReadOnlyNotices()):
      options = ocp.CheckpointManagerOptions(max_to_keep=None if keep == -1 or read_only else keep,
                                             create=not read_only, cleanup_tmp_directories=not read_only,
                                             read_only=read_only, enable_async_checkpointing=async_save)
      self._mngr = ocp.CheckpointManager(self.directory, options=options)

  def steps(self) -> list[int]:
    return sorted(self._mngr.all_steps())

  def save(self, step: int, state: Any, meta: dict) -> None:
    """Starts an (async) save; the previous save is confirmed (manifest, event) first."""
    if self.read_only:
      raise RuntimeError(f"{self.directory} was opened read-only; it cannot save step {step}")
    self._confirm()
    self._mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                  meta=ocp.args.JsonSave(meta)), force=True)
    self._pending.append(step)

  def _confirm(self) -> None:
    """Waits for started saves to commit; writes their manifests and reports them saved (or failed)."""
    if not self._pending:
      return
    try:
      self._mngr.wait_until_finished()
    except Exception as e:  # noqa: BLE001  (an async save failed in the background)
      for step in self._pending:
        self._on_event("checkpoint_save_failed", step, error=repr(e)[:500])
      self._pending = []
      raise
    for step in self._pending:
      d = os.path.join(self.directory, str(step))
      if step in self._mngr.all_steps():  # (not when max_to_keep already removed it)
        write_manifest(d)
        self._on_event("checkpoint_saved", step)
    self._pending = []

  def check_compatible(self, step: int, abstract_state: Any) -> None:
    """IncompatibleCheckpoint if the saved arrays' structure or shapes differ from the target's."""
    try:
      with _quiet_orbax():
        saved = self._mngr.item_metadata(step)["state"]
    except Exception:  # noqa: BLE001  (metadata unreadable: the restore decides)
      return
    if saved is None:
      return
    want = {_path(k): tuple(v.shape) for k, v in jax.tree_util.tree_flatten_with_path(abstract_state)[0]}
    have = {_path(k): tuple(getattr(v, "shape", ()) or ())
            for k, v in jax.tree_util.tree_flatten_with_path(saved)[0]}
    if set(want) != set(have):
      missing, extra = sorted(set(want) - set(have))[:3], sorted(set(have) - set(want))[:3]
      raise IncompatibleCheckpoint(
          f"checkpoint {step} in {self.directory} has another structure than this config's state "
          f"(missing {missing}, unexpected {extra}); it was left untouched")
    differ = {k: (have[k], want[k]) for k in want if have[k] != want[k]}
    if differ:
      k = sorted(differ)[0]
      raise IncompatibleCheckpoint(
          f"checkpoint {step} in {self.directory} holds arrays of other shapes than this config's "
          f"({len(differ)} differ, e.g. {k}: saved {differ[k][0]}, config {differ[k][1]}); it was "
          "left untouched. Use another --workdir for a different model")

  def restore(self, step: int, abstract_state: Any, verify: bool = True) -> tuple[Any, dict]:
    """Restores `step` onto the shardings of `abstract_state` (ShapeDtypeStructs with .sharding).

    Raises UnreadableCheckpoint (damaged), IncompatibleCheckpoint (other shapes) or a transient error.
    meta["_verified"] says whether a manifest vouched for the files.
    """
    d = os.path.join(self.directory, str(step))
    problem = verify_manifest(d) if verify else None
    if problem not in (None, NO_MANIFEST):
      raise UnreadableCheckpoint(problem)
    verified = verify and problem is None
    self.check_compatible(step, abstract_state)
    try:
      out = self._mngr.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    except (MemoryError, OSError):
      raise  # transient (out of memory, filesystem): not the checkpoint's fault
    except Exception as e:  # noqa: BLE001  (orbax/tensorstore decode errors)
      raise UnreadableCheckpoint(repr(e)[:500]) from e
    meta = dict(out["meta"])
    if meta.get("step") != step:
      raise UnreadableCheckpoint(f"its meta says step {meta.get('step')}, its directory says {step}")
    meta["_verified"] = verified
    return out["state"], meta

  def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict] | None:
    """The newest readable checkpoint as (step, state, meta), or None if there is none.

    Unreadable checkpoints are set aside (checkpoints.corrupt/) with a `checkpoint_unreadable` event;
    an incompatible one raises IncompatibleCheckpoint.
    """
    for step in reversed(self.steps()):
      try:
        state, meta = self.restore(step, abstract_state)
      except UnreadableCheckpoint as e:
        self._quarantine(step)
        self._on_event("checkpoint_unreadable", step, error=str(e)[:500])
        continue
      if not meta.pop("_verified"):
        self._on_event("checkpoint_unverified", step)
      return step, state, meta
    return None

  def _quarantine(self, step: int) -> None:
    """Moves an unreadable checkpoint to checkpoints.corrupt/ so the step can be saved again."""
    if writers.is_writer() and not self.read_only:
      aside = epath.Path(self.directory + ".corrupt")
      aside.mkdir(parents=True, exist_ok=True)
      src = epath.Path(os.path.join(self.directory, str(step)))
      if src.exists():
        src.rename(aside / f"{step}.{int(time.time() * 1e3)}")
    self._mngr.reload()

  def wait(self) -> None:
    self._confirm()

  def close(self) -> None:
    try:
      self._confirm()
    finally:
      self._mngr.close()


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStructs (with shardings) of a tree of arrays: a restore target."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)
