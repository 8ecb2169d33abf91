"""VeriFree (Zhou et al. 2025, arXiv 2505.21493) on countdown: can RL without a verifier match RL with one?

    python -m rldyn.main --config=experiments/pretrain.py --workdir=/tmp/rldyn/base
    for arm in verifree verifier; do for seed in 0 1 2; do
      python -m rldyn.main --config=experiments/verifree.py:$arm --workdir=/tmp/rldyn/verifree/$arm-s$seed \
        --config.seed=$seed --config.base_workdir=/tmp/rldyn/base
    done; done
    python -m rldyn.compare /tmp/rldyn/verifree/* --out=/tmp/rldyn/verifree_report

Arms (both one on-policy update per batch, RLOO baseline, no clip, Dr. GRPO normalisation ÷ L_max, the
default study's optimizer; they differ only in the objective):
  verifree  `loss.objective = verifree`: reward R = π_θ(y*|q,z), the policy's probability of the problem's
            reference answer (and the end token) after its own reasoning z, cut at the `answer` marker; the
            gradient A_i ∇log π(z_i) + R_i ∇log π(y*|z_i) (`verifree.surrogate`). No verifier in training.
  verifier  the same recipe with the verifier's 0/1 reward on the sampled answer (`loss.objective = pg`,
            reward ground_truth): the paper's baseline.
Append `,smoke` for the CPU/CI size. Both log `accuracy` (the verifier, on the sampled answer) every step;
verifree also logs `verifree/reward` (mean R), `verifree/marker_frac` and `verifree/answer_nll`.

Countdown caveat: y* is ONE solution (the expression the problem was built from); another correct
expression earns R ≈ π(y*|z), not 1, so VeriFree's reward underrates other valid answers here, unlike the
paper's short unique answers. The claim holds at this scale if verifree's held-out pass@1 gain (compare's
Δ pass@1) is within the verifier arm's interval; refuted if it is clearly below.
"""

from rldyn import config as config_lib

ARMS = ("verifree", "verifier")


def get_config(arg: str = "verifree"):
  c, arm, _ = config_lib.arm_variant(arg, ARMS, "verifree")
  c.loss.objective = "verifree" if arm == "verifree" else "pg"
  c.reward.name = "ground_truth"
  c.advantage.name = "rloo"
  c.loss.name = "vanilla"
  c.loss.aggregation = "seq-mean-token-sum-norm"
  c.rl.updates_per_batch = 1
  return c
