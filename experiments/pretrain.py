"""Pretrain the countdown base model from scratch (supervised on imperfect search traces).

    python -m rldyn.main --config=experiments/pretrain.py --workdir=/tmp/rldyn/base
    python -m rldyn.main --config=experiments/pretrain.py:smoke --workdir=/tmp/rldyn/base_smoke

Variants: '' (the default world's base, which the studies build on), smoke (seconds; CI), persist (the base
of two_phase.py:persist, the demo's study: 30 % of its reference traces search up to 12 tries instead of
8; 1200 steps).

Writes WORKDIR/base/ (params, info.json with held-out greedy accuracy and sampled pass@1); an RL study
reuses it with --config.base_workdir=WORKDIR.
"""

from rldyn import config as config_lib


def get_config(arg: str = ""):
  c = config_lib.default()
  c.stage = "pretrain"
  if arg == "smoke":
    config_lib.shrink(c)
  elif arg == "persist":
    config_lib.persist(c)
  elif arg:
    raise ValueError(f"unknown variant {arg!r}; valid: '' (default), smoke, persist")
  return c
