"""Process-level runtime of every CLI run: the persistent compilation cache, a compile clock, preemption.

    runtime.enable_compile_cache()           # ~/.cache/rldyn/jax, or $RLDYN_COMPILE_CACHE ("" = off)
    clock = runtime.compile_clock()
    before = clock.seconds; ...; spent_compiling = clock.seconds - before

The cache makes a second launch of the same study start in seconds instead of recompiling (most of a
short CPU run is compilation). The clock adds up the time JAX spends tracing, lowering and compiling
(or loading a cached executable), so throughput and ETAs can leave it out. SIGTERM sets a stop request
that the training loops honour at the next step boundary: they checkpoint, log a `preempted` event and
raise Preempted, which the command line turns into exit status 75 ("rerun to resume").
"""

from __future__ import annotations

import os
import signal
import threading

import jax
from jax import monitoring

CACHE_ENV = "RLDYN_COMPILE_CACHE"
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "rldyn", "jax")
_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")


def enable_compile_cache(directory: str | None = None) -> str:
  """Turns on the persistent compilation cache (unless already configured); returns its directory."""
  current = jax.config.jax_compilation_cache_dir
  if current:
    return current
  directory = os.environ.get(CACHE_ENV, DEFAULT_CACHE) if directory is None else directory
  if not directory:
    return ""
  os.makedirs(directory, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return directory


class CompileClock:
  """Seconds spent compiling in this process since it started listening (thread-safe)."""

  def __init__(self):
    self._seconds = 0.0
    self._lock = threading.Lock()
    monitoring.register_event_duration_secs_listener(self._listen)

  def _listen(self, event: str, duration: float, **kwargs) -> None:
    del kwargs
    if event in _COMPILE_EVENTS:
      with self._lock:
        self._seconds += duration

  @property
  def seconds(self) -> float:
    with self._lock:
      return self._seconds


_CLOCK: CompileClock | None = None


def compile_clock() -> CompileClock:
  """The process's compile clock (registered on first use)."""
  global _CLOCK
  if _CLOCK is None:
    _CLOCK = CompileClock()
  return _CLOCK


# ---- preemption -----------------------------------------------------------------------------------------
PREEMPTED_EXIT = 75  # EX_TEMPFAIL: "preempted; rerun the same command to resume"
_STOP = threading.Event()


class Preempted(Exception):
  """Raised at a step boundary after a SIGTERM, once the state is checkpointed."""


def install_stop_handler() -> None:
  """SIGTERM (how TPU VMs and schedulers preempt) asks the run to stop at the next step boundary."""
  if threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGTERM, lambda signum, frame: _STOP.set())


def stop_requested() -> bool:
  return _STOP.is_set()


def request_stop() -> None:
  """What the SIGTERM handler does (tests call it directly)."""
  _STOP.set()


def clear_stop() -> None:
  _STOP.clear()
