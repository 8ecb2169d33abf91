"""The arc hunt: settings that could produce HICRA's two-phase arc on countdown (issue #15, item 2).

Each variant is one RL arm; run it with at least three seeds and read the phase detector's verdict on
the per-prompt strategy signal (`strategy/entropy`, docs/phases.md) beside held-out pass@k:

    for seed in 0 1 2; do
      python -m rldyn.main --config=experiments/arc_hunt.py:diverse --config.seed=$seed \
          --workdir=/tmp/rldyn/arc/diverse_s$seed
      python -m rldyn.phases --workdir=/tmp/rldyn/arc/diverse_s$seed
      python -m rldyn.replay --workdir=/tmp/rldyn/arc/diverse_s$seed
    done

The objective arms (passk, distinct, entropy, hicra, placebo) use the `diverse` prior, so they can share its base:
pretrain once (`--config=experiments/arc_hunt.py:diverse --config.stage=pretrain --workdir=BASE`) and
pass `--config.base_workdir=BASE` to each. `single` and `rare_long` change the reference traces, so
each pretrains its own base.

Variants (append `,smoke` for the CPU/CI size, e.g. `rare_long,smoke`):
  diverse    base pretrained on the default strategy mix (greedy 0.5, dfs 0.25, random 0.25); GRPO.
  single     base pretrained on one strategy (dfs only); GRPO.
  rare_long  base pretrained on mostly short greedy traces with 5 % full random-order searches, on
             4-number problems with 30 % 3-number ones; GRPO on an edge-of-competence curriculum:
             3 numbers for the first 200 steps, 4 to step 400, then 5 (`rl.curriculum`; the held-out
             evaluation stays on 4 numbers), with dynamic sampling (groups whose rewards are all equal
             are dropped and refilled). With 8 responses per prompt and 0/1 rewards that keeps exactly
             the prompts with pass rate 1/8 .. 7/8, i.e. the [0.1, 0.9] band of the recipe. The
             README's runs use 80-step stages (`--config.rl.steps=240
             --config.rl.curriculum=num_count=3@0,4@80,5@160`); 5 numbers proved past this base's
             edge (no correct sample, so no gradient), so they stop at step 160.
  passk      `diverse` with pass@k advantages (k = 4): rewards a group for its best response.
  distinct   `diverse` with an outcome-level bonus for distinct correct solutions (reward
             `distinct_correct`, β = 0.5: a correct response earns 1 + β/m when m correct responses of
             its group share its solution).
  entropy    `diverse` with entropy-advantage shaping A + min(α·H, |A|/κ).
  hicra      `diverse` with HICRA (A + α|A| on structural planning tokens, α = 0.2).
  placebo    `hicra` on a random mask of the same density.
Predictions are stated per variant in experiments/README.md.
"""

from rldyn import config as config_lib

VARIANTS = ("diverse", "single", "rare_long", "passk", "distinct", "entropy", "hicra", "placebo")


def _mix(c, **weights) -> None:
  """Sets the reference strategy mix; strategies not named get weight 0."""
  for name in ("dfs", "greedy", "random"):
    c.task.options.strategy_mix[name] = float(weights.get(name, 0.0))


def get_config(arg: str = "diverse"):
  c, variant, smoke = config_lib.arm_variant(arg, VARIANTS, "diverse")
  if not smoke:
    c.rl.steps = 600  # long enough for a consolidation and a second regime at CPU scale
    c.checkpoint.every = 100
    c.eval.every = 25
  if variant == "single":
    _mix(c, dfs=1.0)
  elif variant == "rare_long":
    _mix(c, greedy=0.95, random=0.05)
    c.rl.dynamic_sampling = True  # = the [0.1, 0.9] pass-rate band at group size 8 (see above)
    if smoke:  # the smoke world has 2 numbers: 2 -> 3 over its 3 steps
      c.rl.curriculum = "num_count=2@0,3@2"
    else:
      c.task.options.num_count = 4
      c.task.options.budget = 12
      c.pretrain.easy_fraction = 0.3  # the base knows the curriculum's first stage too
      c.pretrain.easy_options.num_count = 3
      c.rl.curriculum = "num_count=3@0,4@200,5@400"
      c.sampling.max_new_tokens = 256  # 12 tries over 5 numbers run to ~200 tokens
      c.model.max_seq_len = 288
      c.pretrain.seq_len = 256
  elif variant == "passk":
    c.advantage.name = "passk"
    c.advantage.pass_k = 4
  elif variant == "distinct":
    c.reward.name = "distinct_correct"
    c.reward.distinct_bonus = 0.5
  elif variant == "entropy":
    c.advantage.transform = "entropy"
  elif variant in ("hicra", "placebo"):
    c.advantage.transform = "hicra"
    c.advantage.hicra_alpha = 0.2
    if variant == "placebo":
      c.roles.tagger = "placebo"
      c.roles.placebo_of = "structural"
  return c
