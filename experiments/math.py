"""GRPO on MATH-style problems from a Hugging Face checkpoint (Qwen2.5-0.5B/1.5B/7B-shaped), verifier reward.

    python -m rldyn.main --config=experiments/math.py:qwen2.5-1.5b --workdir=/tmp/rldyn/math_1.5b \
        --config.checkpoint_dir=/models/Qwen2.5-1.5B-Instruct \
        --config.task.options.train_path=/data/math/train.jsonl
    python -m rldyn.phases --workdir=/tmp/rldyn/math_1.5b
    python -m rldyn.replay --workdir=/tmp/rldyn/math_1.5b
    python -m rldyn.main --config=experiments/math.py:smoke --workdir=/tmp/rldyn/math_smoke   # CPU, CI

The checkpoint directory gives the base model, its shape and its tokenizer (imported once into
WORKDIR/base; docs/models.md). Problems: MATH JSONL (`problem` with `answer`, or `solution` with a
`\\boxed{}` answer; the lighteval layout) or the parquet verl's math preprocessing writes. Without
`--config.task.options.test_path` (e.g. MATH-500 as JSONL), the held-out problems are the uid-hash 1/16
of the training file, which training never draws. Prompts: the problem plus verl's instruction ("...
output the final answer within \\boxed{}") through the checkpoint's chat template. Reward:
`verify_math` (\\boxed{} answers; fractions, radicals, π, intervals, sets). Token roles: the English
strategic-gram lexicon.

Variants (batch and mesh settings from the compiled memory plans in the README, 8×H100 host; responses
up to 1024 tokens, as those plans were compiled for):
  qwen2.5-0.5b   fp32 params, bf16 compute, 64 rows in 4 minibatches, fsdp over all devices
  qwen2.5-1.5b   fp32 params, bf16 compute, 32 rows in 4 minibatches, fsdp over all devices
  qwen2.5-7b     bf16 params and compute, 32 rows in 4 minibatches, fsdp 4 × tensor 2
  smoke          the tiny random checkpoint and MATH samples in tests/fixtures/textmath (seconds, CI)
"""

import os

from ml_collections import config_dict

from rldyn import config as config_lib

VARIANTS = ("qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-7b", "smoke")
FIXTURE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures",
                       "textmath")


def get_config(arg: str = "qwen2.5-1.5b"):
  if arg not in VARIANTS:
    raise ValueError(f"unknown variant {arg!r}; valid: {', '.join(VARIANTS)}")
  c = config_lib.default()
  c.task.name = "textmath"
  c.task.options = config_dict.ConfigDict({
      "train_path": "", "test_path": "", "prompt": "chat", "instruction": "auto",
      "stop_strings": ("\n\nQuestion:",), "tokenizer_dir": ""})
  c.task.eval_size = 256
  c.roles.tagger = "lexicon"
  c.roles.placebo_of = "lexicon"
  c.sampling.max_new_tokens = 1024
  c.rl.steps = 200
  c.rl.optim.lr = 1e-6
  c.loss.kl_coef = 0.001
  c.eval.every = 20
  c.eval.samples = 1
  c.checkpoint.every = 20
  c.model.dtype = "bfloat16"
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1
  c.rl.group_size = 8
  c.rl.updates_per_batch = 4
  if arg == "qwen2.5-0.5b":
    c.rl.prompts_per_step = 8
  elif arg == "qwen2.5-1.5b":
    c.rl.prompts_per_step = 4
  elif arg == "qwen2.5-7b":
    c.rl.prompts_per_step = 4
    c.model.param_dtype = "bfloat16"
    c.mesh.fsdp, c.mesh.tensor = 4, 2
  else:
    smoke(c, "math")
  return c


def smoke(c, dataset: str) -> None:
  """CPU size on the committed tiny random checkpoint (rewards are rare: this checks the plumbing)."""
  c.checkpoint_dir = os.path.join(FIXTURE, "ckpt")
  c.task.options.train_path = os.path.join(FIXTURE, f"{dataset}_train.jsonl")
  c.task.options.test_path = os.path.join(FIXTURE, "gsm8k_test.jsonl") if dataset == "gsm8k" else ""
  c.task.eval_size = 2
  c.model.dtype = "float32"
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = -1, 1, 1
  c.sampling.max_new_tokens = 32
  c.rl.steps, c.rl.prompts_per_step, c.rl.group_size, c.rl.updates_per_batch = 3, 4, 4, 2
  c.rl.optim.lr = 1e-3
  c.eval.every, c.eval.samples = 2, 2
  c.checkpoint.every = 2
  c.log.every = 1
