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

from rldyn.experiments import gsm8k

VARIANTS = gsm8k.VARIANTS


def get_config(arg: str = "qwen2.5-1.5b"):
  return gsm8k.text_config(arg, "math", max_new_tokens=1024)
