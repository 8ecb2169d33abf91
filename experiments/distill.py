"""Distillation vs RL (Yue et al. 2025, arXiv 2504.13837) on countdown: does supervised fine-tuning of the
same base on a stronger teacher lift the whole pass@k curve, where RL lifts pass@1 and loses at large k?

    python -m rldyn.main --config=experiments/pretrain.py --workdir=/tmp/rldyn/base
    python -m rldyn.main --config=experiments/two_phase.py --workdir=/tmp/rldyn/rl \
        --config.base_workdir=/tmp/rldyn/base
    python -m rldyn.distill --config=experiments/distill.py --workdir=/tmp/rldyn/distill_clean \
        --config.base_workdir=/tmp/rldyn/base --teacher=clean
    python -m rldyn.distill --config=experiments/distill.py --workdir=/tmp/rldyn/distill_rl \
        --config.base_workdir=/tmp/rldyn/base --teacher=samples --teacher_workdir=/tmp/rldyn/rl
    for d in rl distill_clean distill_rl; do python -m rldyn.replay --workdir=/tmp/rldyn/$d; done
    python -m rldyn.compare --arm=rl=/tmp/rldyn/rl --arm=distill_clean=/tmp/rldyn/distill_clean \
        --arm=distill_rl=/tmp/rldyn/distill_rl --out=/tmp/rldyn/distill_report

The teacher is a flag of `rldyn.distill` (`clean`: error-free, verified reference traces; `samples`: an RL
run's correct samples). The config is the default study's: `rl.steps` = 200 SFT steps, `rl.optim` AdamW
lr 1e-4 constant (RL's), `pretrain.batch_size` × `pretrain.seq_len` packed rows per step; `smoke` shrinks
everything (4 steps). Confirmed if the distilled checkpoints' pass@k (replay) lies above the base's at every
k including the largest, while RL's crosses below the base's at large k; refuted if distillation shows the
same crossover.
"""

from rldyn import config as config_lib


def get_config(arg: str = ""):
  if arg not in ("", "smoke"):
    raise ValueError(f"unknown variant {arg!r}; valid: '' or 'smoke'")
  c = config_lib.default()
  if arg == "smoke":
    config_lib.shrink(c)
    c.rl.steps = 4
    c.pretrain.batch_size = 8
    c.checkpoint.every = 2
    c.eval.every = 2
  c.rl.optim.lr = 1e-4
  return c
