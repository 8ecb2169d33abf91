"""GRPO on GSM8K from a Hugging Face checkpoint (Qwen2.5-0.5B/1.5B/7B-shaped), verifier reward.

    python -m rldyn.main --config=experiments/gsm8k.py:qwen2.5-1.5b --workdir=/tmp/rldyn/gsm8k_1.5b \
        --config.checkpoint_dir=/models/Qwen2.5-1.5B-Instruct \
        --config.task.options.train_path=/data/gsm8k/train.jsonl \
        --config.task.options.test_path=/data/gsm8k/test.jsonl
    python -m rldyn.phases --workdir=/tmp/rldyn/gsm8k_1.5b
    python -m rldyn.replay --workdir=/tmp/rldyn/gsm8k_1.5b
    python -m rldyn.main --config=experiments/gsm8k.py:smoke --workdir=/tmp/rldyn/gsm8k_smoke   # CPU, CI

The checkpoint directory gives the base model, its shape and its tokenizer (imported once into
WORKDIR/base; docs/models.md). Problems: GSM8K JSONL (`question`, `answer` ending in `#### n`) or the
parquet verl's gsm8k preprocessing writes; prompts are the question plus verl's instruction ("... output
the final answer after ####"), rendered with the checkpoint's chat template (`--config.task.options.
prompt=plain` for a base model; responses also stop at "\n\nQuestion:"). Reward: `verify_math` on the
final answer. Token roles: the English strategic-gram lexicon (real text has no ground-truth roles).

Variants (batch and mesh settings from the compiled memory plans in the README, 8×H100 host):
  qwen2.5-0.5b   fp32 params, bf16 compute, 64 rows in 4 minibatches, fsdp over all devices
  qwen2.5-1.5b   fp32 params, bf16 compute, 32 rows in 4 minibatches, fsdp over all devices
  qwen2.5-7b     bf16 params and compute, 32 rows in 4 minibatches, fsdp 4 × tensor 2
  smoke          the tiny random checkpoint and GSM8K samples in tests/fixtures/textmath (seconds, CI)
"""

import os

from ml_collections import config_dict

from rldyn import config as config_lib

VARIANTS = ("qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-7b", "smoke")
FIXTURE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures",
                       "textmath")


def get_config(arg: str = "qwen2.5-1.5b"):
  return text_config(arg, "gsm8k", max_new_tokens=512)


def text_config(arg: str, dataset: str, max_new_tokens: int):
  """The text-math study on `dataset` (gsm8k | math; experiments/math.py uses it too)."""
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
  c.sampling.max_new_tokens = max_new_tokens
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
    smoke(c, dataset)
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
