"""Optimizers: AdamW with linear warmup and cosine (or constant) decay, global-norm clipping."""

from __future__ import annotations

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


def make_optimizer(cfg: OptimConfig, total_steps: int) -> optax.GradientTransformation:
  return optax.chain(
      optax.clip_by_global_norm(cfg.grad_clip),
      optax.adamw(schedule(cfg, total_steps), b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay),
  )
