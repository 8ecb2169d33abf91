"""Spurious rewards and the clipping mechanism (Shao et al. 2025, arXiv 2506.10947) on countdown.

Does a reward that carries no information about correctness still raise held-out accuracy, and is that
the clip's doing? Arms cross the reward (ground truth, random Bernoulli(0.5), a fixed incorrect label per
problem, format only) with the clip (on: the clipped surrogate; off: `vanilla`, −Aρ) and the updates per
rollout batch (1: on-policy, the clip never acts; 4: later minibatches are off-policy, the clip biases the
update toward likely tokens). `accuracy` is always the verifier's, whatever the reward.

    python -m rldyn.main --config=experiments/pretrain.py --workdir=/tmp/rldyn/base
    for arm in ground_truth random incorrect format; do for clip in clip noclip; do for u in u1 u4; do
      for seed in 0 1 2; do
        python -m rldyn.main --config=experiments/spurious.py:$arm,$clip,$u \
          --workdir=/tmp/rldyn/spurious/$arm-$clip-$u-s$seed --config.seed=$seed \
          --config.base_workdir=/tmp/rldyn/base
    done; done; done; done
    python -m rldyn.compare /tmp/rldyn/spurious/* --out=/tmp/rldyn/spurious_report

The learning rate is 1e-3, ten times the default study's: at 1e-4 the ratio never leaves [0.8, 1.2]
within a batch (measured at the smoke size: `clip_frac` = 0 on every step), so the clip and no-clip arms
are bit-identical and the study cannot answer its question; at 1e-3 `clip_frac` is 0.01-0.08 per step.
Check `clip_frac` > 0 in the clip arms of any rerun at another size.

Variant: `REWARD[,clip|noclip][,u1|u4][,smoke]`, REWARD one of ground_truth, random, incorrect, format,
majority (defaults: clip, u4). The claim holds here if random/incorrect arms gain held-out pass@1 with
clip + u4 and not with noclip or u1 (compare's Δ pass@1 intervals); it is refuted if they gain equally
without the clip, or not at all.
"""

from rldyn import config as config_lib

REWARDS = {"ground_truth": "ground_truth", "random": "random", "incorrect": "incorrect_label",
           "format": "format", "majority": "majority_vote"}
OPTIONS = ("clip", "noclip", "u1", "u4", "smoke")


def get_config(arg: str = "random"):
  parts = [p for p in arg.split(",") if p]
  reward = parts[0] if parts else "random"
  if reward not in REWARDS or any(p not in OPTIONS for p in parts[1:]):
    raise ValueError(f"unknown variant {arg!r}; valid: one of {sorted(REWARDS)}, then any of {OPTIONS}")
  if {"clip", "noclip"} <= set(parts) or {"u1", "u4"} <= set(parts):
    raise ValueError(f"variant {arg!r} names both clip and noclip, or both u1 and u4")
  c = config_lib.default()
  if "smoke" in parts:
    config_lib.shrink(c)
  c.reward.name = REWARDS[reward]
  c.reward.random_p = 0.5
  c.loss.name = "vanilla" if "noclip" in parts else "clipped"
  c.rl.updates_per_batch = 1 if "u1" in parts else 4
  c.rl.optim.lr = 1e-3  # 10x the default study's, so the clip binds (see the docstring)
  return c
