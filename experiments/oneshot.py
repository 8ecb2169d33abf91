"""One-shot RLVR (Wang et al. 2025, arXiv 2504.20571) on countdown: does RL on ONE problem raise held-out
accuracy, and keep raising it after the training problem is solved ("post-saturation generalisation")?

    # 1. a short ordinary run that logs every rollout row, then rank its problems
    python -m rldyn.main --config=experiments/oneshot.py:rank --workdir=/tmp/rldyn/oneshot_rank \
        --config.base_workdir=/tmp/rldyn/base
    python -m rldyn.oneshot rank --workdir=/tmp/rldyn/oneshot_rank
    # 2. train on the top problem (the command above prints the override)
    python -m rldyn.main --config=experiments/oneshot.py:oneshot --workdir=/tmp/rldyn/oneshot \
        --config.base_workdir=/tmp/rldyn/base --config.task.fixed_problem='{"answer": ...}'
    # 3. the entropy-only objective: no reward, an entropy bonus
    python -m rldyn.main --config=experiments/oneshot.py:entropy_only --workdir=/tmp/rldyn/oneshot_ent \
        --config.base_workdir=/tmp/rldyn/base

Variants: `rank` (the default study for 50 steps, every row of every step in samples/), `oneshot`
(Wang et al.'s loss: k3 KL β 0.001, entropy bonus 0.001; `task.fixed_problem` names the problem, as JSON
or a uid from the training stream; the launcher wraps the task so every training row is that problem while
held-out evaluation is unchanged), `entropy_only` (reward `zero`, entropy bonus
0.01, no KL). Append `,smoke` for the CPU/CI size.

Read `accuracy` (train accuracy on the one problem) against `eval/pass@1`: the claim holds if held-out
pass@1 keeps rising (compare's interval above the base) for steps after `accuracy` reaches ~1; refuted if
it plateaus when the training problem saturates. The entropy-only claim holds if entropy_only's Δ pass@1
interval lies above 0.
"""

from rldyn import config as config_lib

ARMS = ("rank", "oneshot", "entropy_only")


def get_config(arg: str = "oneshot"):
  c, arm, smoke = config_lib.arm_variant(arg, ARMS, "oneshot")
  if arm == "rank":
    c.rl.steps = c.rl.steps if smoke else 50
    c.log.every = 1
    c.log.samples = c.rl.prompts_per_step * c.rl.group_size
  elif arm == "oneshot":
    c.loss.kl_coef = 0.001
    c.loss.kl_estimator = "k3"
    c.loss.entropy_coef = 0.001
  else:
    c.reward.name = "zero"
    c.loss.entropy_coef = 0.01
  return c
