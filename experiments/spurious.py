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

Size: 60 RL steps, held-out evaluation at 0, 30 and 60, lr 1e-4 (the default study's) with 4 updates per
batch. A larger rate does not work with the echo-target base: at lr 1e-3 the ground-truth arm itself
collapses to training accuracy 0.00 by step 20, at 3e-4 it peaks at step 5 and falls to held-out greedy
0.35 by step 30 (base 0.445) — so no arm would measure a reward. At 1e-4 the clip binds on 0.02-0.05 %
of tokens (run means of `clip_frac` over 3 seeds; up to 0.3 % on single steps), so clip and noclip
differ, weakly: that is the regime this model trains in. Results (6 arms x 3 seeds): README, "What the
studies say at this scale". The smoke variant keeps lr 1e-3 (its tiny model is stable there
and the clip would not bind at all at 1e-4).

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
  if "smoke" in parts:
    c.rl.optim.lr = 1e-3  # the tiny smoke model: the clip binds only at this rate
  else:
    c.rl.steps, c.eval.every, c.checkpoint.every = 60, 30, 60
    c.rl.optim.lr = 1e-4  # 1e-3 and 3e-4 collapse even the ground-truth arm (see the docstring)
  return c
