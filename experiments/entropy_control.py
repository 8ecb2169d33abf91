"""Entropy-control objectives on countdown: which of them keeps policy entropy (and pass@k) from collapsing?

    for arm in grpo clip_cov kl_cov clip_low clip_high entropy passk; do for seed in 0 1 2; do
      python -m rldyn.main --config=experiments/entropy_control.py:$arm \
        --workdir=/tmp/rldyn/entropy/$arm-s$seed --config.seed=$seed --config.base_workdir=/tmp/rldyn/base
    done; done
    python -m rldyn.compare /tmp/rldyn/entropy/* --out=/tmp/rldyn/entropy_report

Arms (docs/objectives.md has each formula):
  grpo       the baseline: clipped surrogate, ε = 0.2 both sides
  clip_cov   Clip-Cov (Cui et al. 2025): detach a random few high-covariance tokens
  kl_cov     KL-Cov (Cui et al. 2025): |log π − log π_old| penalty on the top-covariance tokens
  clip_low   only the lower clip (ε_low 0.2, ε_high 100): Park et al. 2025 predict entropy rises
  clip_high  only the upper clip (ε_low 1, so 1 − ε_low = 0 never binds; ε_high 0.2): entropy falls
  entropy    entropy-based advantage shaping A + min(α·H, |A|/κ) (Cheng et al. 2025)
  passk      the analytical pass@k advantage, k = 4 (Chen et al. 2025)
All use 4 updates per batch. lr 1e-4 (the default study's) at full size: with 4 updates per batch, 1e-3
collapses plain ground-truth GRPO on the echo-target base (measured with experiments/spurious.py, the same
optimizer setup); at 1e-4 the clip binds on 0.02–0.05 % of tokens. The smoke variant keeps lr 1e-3: at 1e-4
its tiny model's `clip_frac` is 0 on every step and the clip arms would equal grpo. Append `,smoke` for
the CPU/CI size.

Confirmed if clip_cov, kl_cov, entropy and clip_low end with higher `entropy/execution` than grpo (the
compare table's final entropy, intervals over seeds) at no loss of held-out pass@1, and clip_high lower;
refuted if the intervals overlap grpo's.
"""

from rldyn import config as config_lib

ARMS = ("grpo", "clip_cov", "kl_cov", "clip_low", "clip_high", "entropy", "passk")


def get_config(arg: str = "grpo"):
  c, arm, smoke = config_lib.arm_variant(arg, ARMS, "grpo")
  c.rl.updates_per_batch = 4
  c.rl.optim.lr = 1e-3 if smoke else 1e-4  # see the docstring
  if arm in ("clip_cov", "kl_cov"):
    c.loss.name = arm
  elif arm == "clip_low":
    c.loss.eps_low, c.loss.eps_high = 0.2, 100.0
  elif arm == "clip_high":
    c.loss.eps_low, c.loss.eps_high = 1.0, 0.2
  elif arm == "entropy":
    c.advantage.transform = "entropy"
  elif arm == "passk":
    c.advantage.name = "passk"
    c.advantage.pass_k = 4
  return c
