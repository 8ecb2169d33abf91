"""Orbax CheckpointManager wrapper: async save, auto-resume, restore onto any mesh.

A checkpoint holds `state` (a pytree of arrays: params, optimizer state, reference params, ...) and
`meta` (JSON: step, data position, anything the loop needs to continue exactly). Restores go through a
sharded abstract target, so a checkpoint written on one mesh loads onto another. Orbax writes each step
into a temporary directory and renames it when complete, so a kill mid-save leaves the previous
checkpoint intact; `restore_latest` also falls back past a checkpoint that fails to read.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves and restores (state pytree, meta dict) pairs under `directory`."""

  def __init__(self, directory: str, keep: int = -1, async_save: bool = True):
    """keep: the newest checkpoints kept (-1 = all)."""
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=None if keep == -1 else keep, create=True, cleanup_tmp_directories=True,
                                           enable_async_checkpointing=async_save)
    self._mngr = ocp.CheckpointManager(self.directory, options=options)

  def steps(self) -> list[int]:
    return sorted(self._mngr.all_steps())

  def save(self, step: int, state: Any, meta: dict) -> None:
    """Starts an (async) save; returns once the arrays are copied off the training buffers."""
    self._mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                  meta=ocp.args.JsonSave(meta)), force=True)

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
    """Restores `step` onto the shardings of `abstract_state` (ShapeDtypeStructs with .sharding)."""
    out = self._mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    return out["state"], dict(out["meta"])

  def restore_latest(self, abstract_state: Any, on_fallback: Callable[[int, Exception], None] | None = None
                     ) -> tuple[int, Any, dict] | None:
    """The newest readable checkpoint as (step, state, meta), or None if there is none."""
    for step in reversed(self.steps()):
      try:
        state, meta = self.restore(step, abstract_state)
        return step, state, meta
      except Exception as e:  # a torn or corrupted checkpoint: set it aside, fall back to the previous one
        self._quarantine(step)
        if on_fallback is not None:
          on_fallback(step, e)
    return None

  def _quarantine(self, step: int) -> None:
    """Moves an unreadable checkpoint to checkpoints.corrupt/ so the step can be saved again."""
    aside = self.directory + ".corrupt"
    os.makedirs(aside, exist_ok=True)
    src = os.path.join(self.directory, str(step))
    if os.path.exists(src):
      os.replace(src, os.path.join(aside, f"{step}.{int(time.time() * 1e3)}"))
    self._mngr.reload()

  def wait(self) -> None:
    self._mngr.wait_until_finished()

  def close(self) -> None:
    self._mngr.wait_until_finished()
    self._mngr.close()


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStructs (with shardings) of a tree of arrays: a restore target."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)
