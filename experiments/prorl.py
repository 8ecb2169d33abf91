"""Prolonged RL (ProRL, Liu et al. 2025, arXiv 2505.24864) on countdown: does long RL with a KL anchor and
clip-higher keep expanding pass@k, or narrow it?

    python -m rldyn.main --config=experiments/pretrain.py --workdir=/tmp/rldyn/base
    for arm in kl_loss clip_higher; do for seed in 0 1 2; do
      python -m rldyn.main --config=experiments/prorl.py:$arm --workdir=/tmp/rldyn/prorl/$arm-s$seed \
        --config.seed=$seed --config.base_workdir=/tmp/rldyn/base
      python -m rldyn.replay --workdir=/tmp/rldyn/prorl/$arm-s$seed
    done; done
    python -m rldyn.compare /tmp/rldyn/prorl/* --out=/tmp/rldyn/prorl_report

Working arms (ProRL's objective: GRPO, ε_low 0.2, ε_high 0.4, 4 updates per batch, k3 KL; lr 1e-3, 10x
the default study's, so that the policy moves enough for the clip to bind, which it never does at 1e-4):
  kl_loss      β = 0.01 KL-to-reference loss term (`loss.kl_coef`)
  clip_higher  the same without KL (β = 0): the control for the KL anchor

NOT WIRED YET (their keys are refused until the RL loop uses rldyn.rl.credit's functions; get_config
raises for them): `kl_penalty` (KL as a reward penalty, `reward.kl_coef`), `reset` (hard reference reset
on a schedule or plateau, `rl.ref_reset_every` / `rl.ref_reset_patience`), `dynamic` (dynamic sampling,
`rl.dynamic_sampling`). Append `,smoke` for the CPU/CI size.

ProRL's claim holds here if the final checkpoint's pass@k (replay) sits above the base's at every k, with
no crossover; Yue et al.'s counter-claim if the base overtakes at large k (replay's crossover_k).
"""

from rldyn import config as config_lib

ARMS = ("kl_loss", "clip_higher")
NOT_WIRED = {"kl_penalty": "reward.kl_coef", "reset": "rl.ref_reset_every / rl.ref_reset_patience",
             "dynamic": "rl.dynamic_sampling"}


def get_config(arg: str = "kl_loss"):
  parts = [p for p in arg.split(",") if p]
  arm = parts[0] if parts else "kl_loss"
  if arm in NOT_WIRED:
    raise ValueError(f"prorl arm {arm!r} needs {NOT_WIRED[arm]}, which the RL loop does not use yet "
                     f"(issue #14); working arms: {ARMS}")
  if arm not in ARMS or any(p != "smoke" for p in parts[1:]):
    raise ValueError(f"unknown variant {arg!r}; valid: one of {ARMS}, optionally followed by ',smoke'")
  c = config_lib.default()
  if "smoke" in parts[1:]:
    config_lib.shrink(c)
  c.loss.eps_low = 0.2
  c.loss.eps_high = 0.4
  c.loss.kl_estimator = "k3"
  c.loss.kl_coef = 0.01 if arm == "kl_loss" else 0.0
  c.rl.updates_per_batch = 4
  c.rl.optim.lr = 1e-3  # 10x the default study's, so the clip (and clip-higher) binds
  return c
