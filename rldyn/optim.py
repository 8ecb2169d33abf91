"""Optimizers: AdamW with linear warmup and cosine (or constant) decay, global-norm clipping.

With `optim.fp32_master` (meant for bf16 parameters, `model.param_dtype=bfloat16`), the optimizer keeps a
float32 master copy of the parameters and runs clipping and AdamW in float32 on it (`fp32_master`): the
moments are float32, small updates accumulate in the master copy instead of vanishing in bf16 rounding,
and each step the parameters become the master copy rounded to their own dtype. The state is
{master, inner}: for N bf16 parameters, 4N bytes of master plus 8N of moments beside the 2N of params.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from rldyn.config import OptimConfig


def schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
  warmup = max(cfg.warmup_steps, 0)
  if cfg.decay == "constant":
    return optax.join_schedules(
        [optax.linear_schedule(0.0, cfg.lr, max(warmup, 1)), optax.constant_schedule(cfg.lr)],
        [warmup]) if warmup else optax.constant_schedule(cfg.lr)
  return optax.warmup_cosine_decay_schedule(0.0, cfg.lr, max(warmup, 1), max(total_steps, warmup + 1),
                                            end_value=cfg.lr * 0.1)


class MasterState(NamedTuple):
  master: Any  # float32 copy of the parameters (the values the optimizer actually updates)
  inner: Any  # the wrapped transformation's state, built on the float32 master (float32 moments)


def fp32_master(inner: optax.GradientTransformation) -> optax.GradientTransformation:
  """Runs `inner` on a float32 master copy of the parameters.

  update(grads, state, params) casts the gradients to float32, updates the master with `inner`'s
  updates, and returns updates = master' − params in float32, so optax.apply_updates (which computes
  params + updates and casts back to the parameter dtype) yields the new master rounded to the
  parameters' dtype. With float32 parameters this is `inner` plus a redundant copy.
  """
  f32 = lambda tree: jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree)  # noqa: E731

  def init(params):
    master = f32(params)
    return MasterState(master, inner.init(master))

  def update(grads, state, params=None):
    if params is None:
      raise ValueError("fp32_master needs the parameters in update(grads, state, params)")
    upd, new_inner = inner.update(f32(grads), state.inner, state.master)
    master = optax.apply_updates(state.master, upd)
    out = jax.tree.map(lambda m, p: m - jnp.asarray(p, jnp.float32), master, params)
    return out, MasterState(master, new_inner)

  return optax.GradientTransformation(init, update)


def make_optimizer(cfg: OptimConfig, total_steps: int) -> optax.GradientTransformation:
  tx = optax.chain(
      optax.clip_by_global_norm(cfg.grad_clip),
      optax.adamw(schedule(cfg, total_steps), b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay),
  )
  return fp32_master(tx) if cfg.fp32_master else tx
