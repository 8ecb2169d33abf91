"""Shared benchmark helpers: timing with warm-up, device banner."""

import time

import jax


def timeit(fn, *args, repeat: int = 3):
  """Best wall time of `repeat` calls after one warm-up (compile) call; returns (seconds, result)."""
  out = jax.block_until_ready(fn(*args))
  best = float("inf")
  for _ in range(repeat):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - t0)
  return best, out


def banner(name: str) -> None:
  d = jax.devices()[0]
  print(f"== {name} on {jax.device_count()} x {d.platform} ({getattr(d, 'device_kind', '')}) ==", flush=True)


def best_of(fn, repeat: int = 5) -> float:
  """Best wall time in seconds of `repeat` calls of fn() after one warm-up call."""
  fn()
  best = float("inf")
  for _ in range(repeat):
    t0 = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t0)
  return best
