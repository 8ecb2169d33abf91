"""Prolonged RL (ProRL, Liu et al. 2025, arXiv 2505.24864) on countdown: does long RL with a KL anchor and
clip-higher keep expanding pass@k, or narrow it?

    python -m rldyn.main --config=experiments/pretrain.py --workdir=/tmp/rldyn/base
    for arm in kl_loss clip_higher kl_penalty reset dynamic; do for seed in 0 1 2; do
      python -m rldyn.main --config=experiments/prorl.py:$arm --workdir=/tmp/rldyn/prorl/$arm-s$seed \
        --config.seed=$seed --config.base_workdir=/tmp/rldyn/base
      python -m rldyn.replay --workdir=/tmp/rldyn/prorl/$arm-s$seed
    done; done
    python -m rldyn.compare /tmp/rldyn/prorl/* --out=/tmp/rldyn/prorl_report

Arms (ProRL's objective: GRPO, ε_low 0.2, ε_high 0.4, 4 updates per batch, k3 KL; lr 1e-4, the default
study's: with 4 updates per batch a larger rate collapses even plain ground-truth GRPO on the echo-target
base (experiments/spurious.py's docstring has the measurements); the smoke variant keeps lr 1e-3, the
only rate at which its tiny model's clip binds):
  kl_loss      β = 0.01 KL-to-reference loss term (`loss.kl_coef`)
  clip_higher  the same without KL (β = 0): the control for the KL anchor
  kl_penalty   KL in the reward instead of the loss: r − β·Σ_t k1_t with β = 0.001 (`reward.kl_coef`, verl's
               default `kl_ctrl.kl_coef`), no loss term
  reset        kl_loss plus ProRL's hard reference reset (π_ref ← π_θ, optimizer re-initialised) when
               held-out pass@1 has not improved by 0.005 over 2 evaluations (`rl.ref_reset_patience`,
               evaluations every 25 steps); the smoke variant resets on a schedule (before every step)
  dynamic      kl_loss plus DAPO dynamic sampling (`rl.dynamic_sampling`: groups whose rewards are all equal
               are dropped and up to 3 refill rounds keep the batch full)
Append `,smoke` for the CPU/CI size.

ProRL's claim holds here if the final checkpoint's pass@k (replay) sits above the base's at every k, with
no crossover; Yue et al.'s counter-claim if the base overtakes at large k (replay's crossover_k). The
reset and dynamic arms test whether ProRL's two stabilisers change that answer against kl_loss.
"""

from rldyn import config as config_lib

ARMS = ("kl_loss", "clip_higher", "kl_penalty", "reset", "dynamic")


def get_config(arg: str = "kl_loss"):
  parts = [p for p in arg.split(",") if p]
  arm = parts[0] if parts else "kl_loss"
  if arm not in ARMS or any(p != "smoke" for p in parts[1:]):
    raise ValueError(f"unknown variant {arg!r}; valid: one of {ARMS}, optionally followed by ',smoke'")
  smoke = "smoke" in parts[1:]
  c = config_lib.default()
  if smoke:
    config_lib.shrink(c)
  c.loss.eps_low = 0.2
  c.loss.eps_high = 0.4
  c.loss.kl_estimator = "k3"
  c.loss.kl_coef = 0.0 if arm in ("clip_higher", "kl_penalty") else 0.01
  c.rl.updates_per_batch = 4
  c.rl.optim.lr = 1e-3 if smoke else 1e-4  # see the docstring
  if arm == "kl_penalty":
    c.reward.kl_coef = 0.001
  if arm == "reset" and smoke:
    c.rl.ref_reset_every = 1  # a smoke run is too short for a plateau: reset before every step from 1 on
  elif arm == "reset":
    c.rl.ref_reset_patience = 2
    c.rl.ref_reset_delta = 0.005
    c.eval.every = 25
  if arm == "dynamic":
    c.rl.dynamic_sampling = True
    c.rl.refill_rounds = 3
  return c
