"""HICRA vs GRPO vs a same-density placebo on countdown (Wang et al. 2025, arXiv 2509.03646).

Three arms share one base model; run them side by side and compare their metrics.jsonl:

    python -m rldyn.main --config=experiments/pretrain.py --workdir=/tmp/rldyn/base
    python -m rldyn.main --config=experiments/hicra.py:grpo    --workdir=/tmp/rldyn/hicra_grpo \
        --config.base_workdir=/tmp/rldyn/base
    python -m rldyn.main --config=experiments/hicra.py:hicra   --workdir=/tmp/rldyn/hicra_hicra \
        --config.base_workdir=/tmp/rldyn/base
    python -m rldyn.main --config=experiments/hicra.py:placebo --workdir=/tmp/rldyn/hicra_placebo \
        --config.base_workdir=/tmp/rldyn/base

Arms: grpo (no transform), hicra (A + α|A| on structural planning tokens, α = 0.2), placebo (the same
transform on a random mask with the structural tagger's planning density), lexicon (HICRA on the
strategic-gram tagger's planning tokens, the text-only recipe). Append `,smoke` (e.g. `hicra,smoke`)
for the CPU/CI size.
"""

from rldyn import config as config_lib

ARMS = ("grpo", "hicra", "placebo", "lexicon")


def get_config(arg: str = "hicra"):
  c, arm, _ = config_lib.arm_variant(arg, ARMS, "hicra")
  if arm != "grpo":
    c.advantage.transform = "hicra"
    c.advantage.hicra_alpha = 0.2
  if arm == "placebo":
    c.roles.tagger = "placebo"
    c.roles.placebo_of = "structural"
  if arm == "lexicon":
    c.roles.tagger = "lexicon"
  return c
