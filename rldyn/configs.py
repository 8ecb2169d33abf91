"""The default study configuration: every key rldyn reads, each with a one-line comment.

Experiment files in `experiments/` start from `default()` and override what their study changes.
"""

from ml_collections import config_dict


def optim(lr: float, warmup_steps: int, decay: str, weight_decay: float, b2: float
          ) -> config_dict.ConfigDict:
  """An optimizer section (AdamW + schedule)."""
  c = config_dict.ConfigDict()
  c.lr = lr  # peak learning rate
  c.warmup_steps = warmup_steps  # linear warmup
  c.decay = decay  # cosine | constant
  c.weight_decay = weight_decay  # AdamW decoupled weight decay
  c.b1 = 0.9  # Adam beta1
  c.b2 = b2  # Adam beta2
  c.grad_clip = 1.0  # global-norm clip
  return c


def default() -> config_dict.ConfigDict:
  c = config_dict.ConfigDict()
  c.seed = 0  # every random stream derives from this (and a purpose and the step)
  c.stage = "rl"  # pretrain: train the base only | rl: RL (pretraining the base first if needed)
  c.base_workdir = ""  # reuse the base model of another workdir instead of pretraining one
  c.resume_anyway = False  # continue a workdir whose saved config differs from this one

  c.task = config_dict.ConfigDict()
  c.task.name = "countdown"  # a name from rldyn.tasks.TASKS
  c.task.options = config_dict.ConfigDict()  # the task's own config (rldyn.tasks.CountdownConfig)
  c.task.options.num_count = 3  # numbers per problem
  c.task.options.max_number = 12  # numbers are drawn from 1..max_number
  c.task.options.max_target = 60  # targets lie in 1..max_target
  c.task.options.budget = 8  # most tries in a reference trace before it says `fail`
  c.task.options.error_rate = 0.1  # P(a written intermediate result is wrong) in reference traces
  c.task.options.max_error = 3  # a wrong result is off by 1..max_error
  c.task.options.strategy_mix = config_dict.ConfigDict(
      {"greedy": 0.5, "dfs": 0.25, "random": 0.25})  # search strategies of the reference traces
  c.task.eval_size = 200  # held-out problems in the TFDS eval set
  c.task.eval_seed = 0  # which held-out set
  c.task.data_dir = ""  # where TFDS eval sets live ("" = ~/.cache/rldyn/tfds)

  c.model = config_dict.ConfigDict()
  c.model.d_model = 128  # residual width
  c.model.n_layers = 4  # decoder layers
  c.model.n_heads = 4  # query heads
  c.model.n_kv_heads = 2  # key/value heads (grouped-query attention)
  c.model.head_dim = 32  # per-head width
  c.model.d_ff = 384  # SwiGLU hidden width
  c.model.max_seq_len = 256  # longest prompt + response
  c.model.rope_theta = 10000.0  # RoPE base
  c.model.norm_eps = 1e-6  # RMSNorm epsilon
  c.model.qkv_bias = False  # q/k/v biases (Qwen2 style)
  c.model.tie_embeddings = True  # output head shares the embedding matrix
  c.model.param_dtype = "float32"  # parameter storage dtype
  c.model.dtype = "float32"  # compute dtype (bfloat16 on accelerators)

  c.mesh = config_dict.ConfigDict()
  c.mesh.data = -1  # data-parallel axis (-1 = all remaining devices)
  c.mesh.fsdp = 1  # parameter-sharded data-parallel axis
  c.mesh.tensor = 1  # tensor-parallel axis

  c.sampling = config_dict.ConfigDict()
  c.sampling.max_new_tokens = 128  # response budget; rows that hit it count as truncated
  c.sampling.temperature = 1.0  # policy temperature (also used by the update's log-probs)
  c.sampling.top_p = 1.0  # nucleus filter (1.0 = off, the RL default)
  c.sampling.top_k = 0  # top-k filter (0 = off)
  c.sampling.greedy = False  # argmax decoding
  c.sampling.stop_sequences = ()  # extra stop token-id sequences (eos always stops)

  c.pretrain = config_dict.ConfigDict()
  c.pretrain.steps = 900  # supervised steps on reference traces
  c.pretrain.batch_size = 16  # packed sequences per step
  c.pretrain.seq_len = 192  # training sequence length (prompt + response + eos)
  c.pretrain.log_every = 100  # steps between log lines
  c.pretrain.eval_every = 0  # 0 = evaluate once at the end
  c.pretrain.checkpoint_every = 500  # steps between resumable pretraining checkpoints
  c.pretrain.eval_samples = 4  # sampled completions per held-out problem for pass@1
  c.pretrain.time_budget_s = 0.0  # > 0: stop after this much wall time
  c.pretrain.optim = optim(lr=3e-3, warmup_steps=100, decay="cosine", weight_decay=0.01, b2=0.95)

  c.rl = config_dict.ConfigDict()
  c.rl.steps = 200  # RL steps (one rollout batch each)
  c.rl.prompts_per_step = 16  # prompts per rollout batch
  c.rl.group_size = 8  # responses per prompt (GRPO group)
  c.rl.updates_per_batch = 2  # minibatches per rollout batch, one optimizer update each
  c.rl.optim = optim(lr=1e-4, warmup_steps=0, decay="constant", weight_decay=0.0, b2=0.999)

  c.reward = config_dict.ConfigDict()
  c.reward.name = "ground_truth"  # a name from rldyn.rl.rewards.REWARDS
  c.reward.random_p = 0.5  # γ of the random reward
  c.reward.seed = 0  # seed of the reward's own randomness

  c.advantage = config_dict.ConfigDict()
  c.advantage.name = "grpo"  # grpo | drgrpo | rloo
  c.advantage.eps = 1e-6  # std floor of grpo
  c.advantage.std_ddof = 0  # 0 population std, 1 unbiased (verl)
  c.advantage.transform = "none"  # none | hicra: A + α|A| on the tagger's planning tokens
  c.advantage.hicra_alpha = 0.2  # HICRA α (0 = identity)

  c.loss = config_dict.ConfigDict()
  c.loss.name = "clipped"  # clipped | vanilla
  c.loss.aggregation = "token-mean"  # token-mean | seq-mean-token-mean | seq-mean-token-sum-norm
  c.loss.eps_low = 0.2  # lower clip range
  c.loss.eps_high = 0.2  # upper clip range (clip-higher: 0.28 DAPO, 0.4 ProRL)
  c.loss.dual_clip = 0.0  # dual-clip constant c for A < 0 (0 = off; 3 is usual)
  c.loss.kl_coef = 0.0  # β of the KL-to-reference loss
  c.loss.kl_estimator = "k3"  # k1 | k2 | k3
  c.loss.entropy_coef = 0.0  # entropy bonus coefficient

  c.roles = config_dict.ConfigDict()
  c.roles.tagger = "structural"  # structural (task ground truth) | lexicon | placebo | spans
  c.roles.lexicon_path = ""  # strategic-gram lexicon: a JSON path or shipped name ("" = task default)
  c.roles.placebo_of = "structural"  # the tagger whose planning density `placebo` matches
  c.roles.seed = 0  # placebo mask seed (folded with the step)
  c.roles.span_patterns = ()  # regexes for `spans` (() = <think>…</think> and <planning> tags)

  c.checkpoint = config_dict.ConfigDict()
  c.checkpoint.every = 50  # RL steps between checkpoints
  c.checkpoint.keep = 3  # checkpoints kept

  c.eval = config_dict.ConfigDict()
  c.eval.every = 50  # RL steps between held-out evaluations (and at step 0)
  c.eval.samples = 4  # sampled completions per problem for eval/pass@1

  c.log = config_dict.ConfigDict()
  c.log.every = 10  # RL steps between progress lines and decoded samples
  c.log.samples = 4  # decoded rollouts written per logged step
  c.log.tensorboard = False  # mirror metrics to WORKDIR/tensorboard (needs tensorboardX)

  c.phases = config_dict.ConfigDict()
  c.phases.online = True  # online two-phase detector in the loop; writes phase_boundary events
  c.phases.refit_every = 25  # steps between its refits

  c.fault = config_dict.ConfigDict()
  c.fault.on_nonfinite = "skip"  # skip: drop a non-finite update and log an event | halt: stop
  return c


def shrink(c: config_dict.ConfigDict) -> None:
  """The `smoke` variant: a tiny model, batch and step count that run in seconds on CPU (CI)."""
  c.model.d_model = 32
  c.model.n_layers = 2
  c.model.n_heads = 4
  c.model.n_kv_heads = 2
  c.model.head_dim = 8
  c.model.d_ff = 64
  c.sampling.max_new_tokens = 32
  c.pretrain.steps = 20
  c.pretrain.batch_size = 16
  c.pretrain.seq_len = 96
  c.pretrain.log_every = 10
  c.pretrain.eval_samples = 2
  c.task.eval_size = 16
  c.rl.steps = 3
  c.rl.prompts_per_step = 4
  c.rl.group_size = 4
  c.rl.updates_per_batch = 2
  c.eval.every = 2
  c.eval.samples = 2
  c.checkpoint.every = 2
  c.log.every = 1
