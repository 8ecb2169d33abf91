"""The one source of configuration: typed, frozen dataclasses whose defaults ARE the default study.

    c = config.default()            # an ml_collections ConfigDict with every key, built from the classes
    config.shrink(c)                # the `smoke` variant (seconds on CPU)
    cfg = config.load(c, vocab_size=..., pad_id=..., stop_tokens=...)   # -> Config (validated)
    launch.validate(cfg, num_devices)        # cross-field checks (rldyn.launch; registries, the mesh)

Experiment files (`experiments/*.py`) start from `default()` and override what their study changes; every
key is a dataclass field below with a one-line comment (docs/config.md lists them all). `load` turns the
ConfigDict into these dataclasses, which check their own ranges; a missing or unknown key is an error
naming the valid keys. `rldyn.launch.validate` holds every check that consults a registry or the device
count, so a bad launch fails before anything is compiled or written. Library code only sees the dataclasses: no
`config.get(key, default)` anywhere.

A few fields are not config keys because they follow from the task's tokenizer (DERIVED): the model's
`vocab_size` and the sampler's `pad_id` and `stop_tokens`.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from ml_collections import config_dict

from rldyn import sampling
from rldyn.model import ModelConfig
from rldyn.parallel import MeshConfig


class ConfigError(ValueError):
  """A config key, value or registry name that cannot work; the message names the valid choices."""


def _positive(name: str, value: int) -> None:
  if value <= 0:
    raise ConfigError(f"{name} must be positive, got {value}")


# Fields filled from the task's tokenizer, not from the ConfigDict: section -> field names.
DERIVED = {"model": ("vocab_size",), "sampling": ("pad_id", "stop_tokens")}
# Default countdown world of the default study (the task's own config class holds its library defaults).
# Sorted by key, as ml_collections orders them: the strategy mix's order is the order strategies are drawn in.
DEFAULT_TASK_OPTIONS = (
    ("budget", 8),  # most tries in a reference trace before it says `fail`
    ("echo_target", True),  # the last move restates the target before `goal`/`no` (robust base: README)
    ("error_rate", 0.1),  # P(a written intermediate result is wrong) in reference traces
    ("long_budget", 0),  # > budget: the share long_budget_rate of reference traces searches this long instead
    ("long_budget_rate", 0.0),  # (0 = every trace stops at budget; the `persist` world sets both: persist())
    ("max_error", 3),  # a wrong result is off by 1..max_error
    ("max_number", 12),  # numbers are drawn from 1..max_number
    ("max_target", 60),  # targets lie in 1..max_target
    ("num_count", 3),  # numbers per problem
    ("strategy_mix", (("dfs", 0.25), ("greedy", 0.5), ("random", 0.25))),  # reference search strategies
)


@dataclasses.dataclass(frozen=True)
class TaskConfig:
  name: str = "countdown"  # a name from rldyn.tasks.TASKS
  options: tuple = DEFAULT_TASK_OPTIONS  # (key, value) pairs for the task's own config dataclass
  eval_size: int = 200  # held-out problems in the TFDS eval set
  eval_seed: int = 0  # which held-out set
  data_dir: str = ""  # where TFDS eval sets are materialised ("" = ~/.cache/rldyn/tfds)
  fixed_problem: str = ""  # one-shot RLVR: RL trains on this one problem (JSON or uid; rldyn.oneshot)

  def __post_init__(self):
    _positive("task.eval_size", self.eval_size)

  @property
  def kwargs(self) -> dict:
    return {k: (dict(v) if _is_pairs(v) else v) for k, v in self.options}


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  lr: float = 1e-3  # peak learning rate
  warmup_steps: int = 50  # linear warmup from 0
  decay: str = "cosine"  # cosine (to 0.1 lr at the last step) | constant
  weight_decay: float = 0.01  # AdamW decoupled weight decay
  b1: float = 0.9  # Adam beta1
  b2: float = 0.95  # Adam beta2
  grad_clip: float = 1.0  # global-norm clip
  fp32_master: bool = False  # keep float32 master weights and Adam moments for bf16 params (rldyn.optim)

  def __post_init__(self):
    if self.decay not in ("cosine", "constant"):
      raise ConfigError(f"optim.decay={self.decay!r}; valid: constant, cosine")
    if not self.lr > 0:
      raise ConfigError(f"optim.lr must be > 0, got {self.lr}")


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
  steps: int = 900  # supervised steps on reference traces
  batch_size: int = 16  # packed sequences per step
  seq_len: int = 192  # training sequence length (prompt + response + eos)
  log_every: int = 100  # steps between log lines
  eval_every: int = 0  # steps between held-out evaluations (0 = once at the end)
  checkpoint_every: int = 500  # steps between resumable pretraining checkpoints
  eval_samples: int = 4  # sampled completions per held-out problem for pass@1
  optim: OptimConfig = OptimConfig(lr=3e-3, warmup_steps=100, decay="cosine", weight_decay=0.01,
                                   b2=0.95)  # AdamW + warmup + cosine
  time_budget_s: float = 0.0  # > 0: stop early when this much wall time has passed
  easy_fraction: float = 0.0  # share of pretraining problems drawn from the easier world below
  easy_options: tuple = (("num_count", 2),)  # task options overriding task.options for those problems
  decision_weight: float = 1.0  # loss weight of the tokens that judge a move (Task.decision_words; countdown:
  #   goal, no) relative to the others; the loss stays a weighted mean. 1 = plain NLL

  def __post_init__(self):
    for k in ("steps", "batch_size", "seq_len", "log_every", "checkpoint_every", "eval_samples"):
      _positive(f"pretrain.{k}", getattr(self, k))
    if self.eval_every < 0:
      raise ConfigError(f"pretrain.eval_every must be >= 0 (0 = at the end only), got {self.eval_every}")
    if not 0.0 <= self.easy_fraction <= 1.0:
      raise ConfigError(f"pretrain.easy_fraction is a probability, in [0, 1]; got {self.easy_fraction}")
    if not self.decision_weight > 0:
      raise ConfigError(f"pretrain.decision_weight must be > 0, got {self.decision_weight}")


@dataclasses.dataclass(frozen=True)
class RLConfig:
  steps: int = 200  # RL steps (one rollout batch each)
  prompts_per_step: int = 16  # prompts per rollout batch
  group_size: int = 8  # responses per prompt (GRPO group)
  updates_per_batch: int = 2  # minibatches per rollout batch, one optimizer update each
  dynamic_sampling: bool = False  # drop groups whose rewards are all equal, refill (credit.dynamic_sampling)
  refill_rounds: int = 3  # dynamic sampling: most extra rollout rounds per step before padding
  ref_reset_every: int = 0  # hard reference reset every N steps (0 = off; credit.should_reset)
  ref_reset_patience: int = 0  # reset when eval/pass@1 has not improved by ref_reset_delta for this many evals (0 = off)
  ref_reset_delta: float = 0.0  # the improvement that counts for ref_reset_patience
  micro_batches: int = 1  # gradient-accumulation micro-batches per minibatch (same update, less memory)
  curriculum: str = ""  # KEY=V@STEP,V@STEP,...: from STEP on, RL problems come from the task with option KEY=V
  #   (e.g. num_count=3@0,4@200,5@400; the first stage starts at 0). "" = off. Held-out evals keep task.options
  optim: OptimConfig = OptimConfig(lr=1e-4, warmup_steps=0, decay="constant", weight_decay=0.0,
                                   b2=0.999)  # AdamW, constant lr

  def __post_init__(self):
    for k in ("steps", "prompts_per_step", "group_size", "updates_per_batch", "micro_batches"):
      if getattr(self, k) <= 0:
        raise ConfigError(f"rl.{k} must be positive, got {getattr(self, k)}")
    if self.refill_rounds < 0 or self.ref_reset_every < 0 or self.ref_reset_patience < 0:
      raise ConfigError("rl.refill_rounds, rl.ref_reset_every and rl.ref_reset_patience must be >= 0")
    parse_curriculum(self.curriculum)


def _option_value(text: str) -> Any:
  """A task option's value from its text: int, float, true/false, else the string itself."""
  for convert in (int, float):
    try:
      return convert(text)
    except ValueError:
      pass
  return {"true": True, "false": False}.get(text.lower(), text)


def parse_curriculum(spec: str) -> tuple[str, tuple[tuple[int, Any], ...]] | None:
  """rl.curriculum "KEY=V@STEP,V@STEP,..." -> (KEY, ((STEP, V), ...)) with steps rising from 0; "" -> None."""
  if not spec:
    return None
  form = "rl.curriculum takes KEY=VALUE@STEP,VALUE@STEP,... (e.g. num_count=3@0,4@200,5@400)"
  key, sep, rest = spec.partition("=")
  if not sep or not key.strip() or not rest:
    raise ConfigError(f"{form}; got {spec!r}")
  stages = []
  for part in rest.split(","):
    value, at, step = part.strip().rpartition("@")
    if not at or not value:
      raise ConfigError(f"{form}; stage {part!r} has no VALUE@STEP")
    try:
      stages.append((int(step), _option_value(value.strip())))
    except ValueError:
      raise ConfigError(f"{form}; stage {part!r}: STEP must be an integer") from None
  steps = [s for s, _ in stages]
  if steps[0] != 0 or any(b <= a for a, b in zip(steps, steps[1:])):
    raise ConfigError(f"rl.curriculum stages must start at step 0 and rise strictly; got steps {steps}")
  return key.strip(), tuple(stages)


@dataclasses.dataclass(frozen=True)
class RewardConfig:
  name: str = "ground_truth"  # a name from rldyn.rl.rewards.REWARDS
  random_p: float = 0.5  # Bernoulli γ of the `random` reward
  seed: int = 0  # seed of the reward's own randomness (random reward, wrong labels)
  kl_coef: float = 0.0  # β of the KL reward penalty r − β·Σ_t k1_t (credit.kl_reward_penalty)
  distinct_bonus: float = 0.5  # β of the distinct_correct reward: 1 + β/m for a solution m responses share

  def __post_init__(self):
    if not self.distinct_bonus >= 0:
      raise ConfigError(f"reward.distinct_bonus must be >= 0, got {self.distinct_bonus}")
    if not 0.0 <= self.random_p <= 1.0:
      raise ConfigError(f"reward.random_p is a probability, in [0, 1]; got {self.random_p}")
    if not self.kl_coef >= 0:
      raise ConfigError(f"reward.kl_coef must be >= 0, got {self.kl_coef}")


@dataclasses.dataclass(frozen=True)
class AdvantageConfig:
  name: str = "grpo"  # a name from rldyn.rl.advantages.ADVANTAGES: grpo | drgrpo | rloo | passk
  eps: float = 1e-6  # std floor of grpo (and passk)
  std_ddof: int = 0  # 0 = population std; 1 = unbiased (verl and TRL)
  transform: str = "none"  # none | hicra: A + α|A| on planning tokens | entropy: A + min(α·H, |A|/κ)
  hicra_alpha: float = 0.2  # HICRA α (0 = identity)
  pass_k: int = 4  # k of the passk estimator (1 <= k <= rl.group_size)
  entropy_alpha: float = 0.4  # α of the entropy transform A + min(α·H, |A|/κ)
  entropy_kappa: float = 2.0  # κ of the entropy transform (> 1 keeps the sign of A)

  def __post_init__(self):
    if self.pass_k < 1:
      raise ConfigError(f"advantage.pass_k must be >= 1, got {self.pass_k}")
    if not (self.entropy_alpha >= 0 and self.entropy_kappa > 0):
      raise ConfigError(f"advantage.entropy_alpha must be >= 0 and advantage.entropy_kappa > 0, got "
                        f"{self.entropy_alpha}, {self.entropy_kappa}")
    if not self.eps >= 0:
      raise ConfigError(f"advantage.eps must be >= 0, got {self.eps}")
    if self.std_ddof not in (0, 1):
      raise ConfigError(f"advantage.std_ddof must be 0 or 1, got {self.std_ddof}")


@dataclasses.dataclass(frozen=True)
class LossConfig:
  name: str = "clipped"  # clipped | vanilla | clip_cov | kl_cov
  objective: str = "pg"  # pg: loss.name on reward.name's advantages | verifree: Zhou et al. 2025 (rl/verifree.py)
  aggregation: str = "token-mean"  # token-mean | seq-mean-token-mean | seq-mean-token-sum-norm
  eps_low: float = 0.2  # lower clip range
  eps_high: float = 0.2  # upper clip range (clip-higher: 0.28 DAPO, 0.4 ProRL)
  dual_clip: float = 0.0  # dual-clip constant c > 1 for A < 0 (0 = off; 3 is usual)
  kl_coef: float = 0.0  # β of the KL-to-reference loss term
  kl_estimator: str = "k3"  # k1 | k2 | k3
  entropy_coef: float = 0.0  # entropy bonus coefficient
  cov_ratio: float = 2e-4  # clip_cov/kl_cov: fraction of response tokens acted on (at least 1 per minibatch)
  clip_cov_lb: float = 1.0  # clip_cov: lower bound of the covariance band whose tokens may be detached
  clip_cov_ub: float = 5.0  # clip_cov: upper bound of that band
  kl_cov_coef: float = 1.0  # kl_cov: β of |log π_θ − log π_old| on the top-covariance tokens
  logit_chunk: int = 0  # response positions per float32 log-prob/entropy chunk (0 = auto: ≤ 2^27 logits)
  kl_metrics: bool = True  # log kl/k1, kl/k3 (+ per role); False with kl_coef = 0 skips the reference forward
  # With no KL in the loss or reward, the kl/* metrics (and the reference forward behind them) on every
  # kl_metrics_every-th step only (steps 0, N, 2N, ...); training is the same bits either way.
  kl_metrics_every: int = 1

  def __post_init__(self):
    if not 0 < self.cov_ratio <= 1:
      raise ConfigError(f"loss.cov_ratio must be in (0, 1], got {self.cov_ratio}")
    if not self.clip_cov_lb < self.clip_cov_ub:
      raise ConfigError(f"loss.clip_cov_lb must be < loss.clip_cov_ub, got {self.clip_cov_lb}, "
                        f"{self.clip_cov_ub}")
    if self.kl_metrics_every < 1:
      raise ConfigError(f"loss.kl_metrics_every must be >= 1, got {self.kl_metrics_every}")
    if self.logit_chunk < 0:
      raise ConfigError(f"loss.logit_chunk must be >= 0 (0 = auto), got {self.logit_chunk}")
    if self.kl_cov_coef < 0:
      raise ConfigError(f"loss.kl_cov_coef must be >= 0, got {self.kl_cov_coef}")
    if self.dual_clip and self.dual_clip <= 1.0:
      raise ConfigError(f"loss.dual_clip must be > 1 (or 0 = off), got {self.dual_clip}")
    if self.eps_low < 0 or self.eps_high < 0:
      raise ConfigError("loss.eps_low and loss.eps_high must be >= 0")
    if not (self.kl_coef >= 0 and self.entropy_coef >= 0):
      raise ConfigError(f"loss.kl_coef and loss.entropy_coef must be >= 0, got {self.kl_coef}, "
                        f"{self.entropy_coef}")


@dataclasses.dataclass(frozen=True)
class RolesConfig:
  tagger: str = "structural"  # structural (task ground truth) | lexicon | placebo | spans
  lexicon_path: str = ""  # strategic-gram lexicon: a JSON path or shipped name ("" = the task's default)
  placebo_of: str = "structural"  # the tagger whose planning density `placebo` copies
  seed: int = 0  # placebo mask seed (folded with the step)
  span_patterns: tuple = ()  # regexes for the `spans` tagger (() = <think>…</think> and tag spans)


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  every: int = 50  # RL steps between checkpoints
  keep: int = -1  # newest checkpoints kept (-1 = all, so replay sees the whole run)

  def __post_init__(self):
    _positive("checkpoint.every", self.every)
    if self.keep == 0 or self.keep < -1:
      raise ConfigError(f"checkpoint.keep must be >= 1, or -1 to keep all, got {self.keep}")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  every: int = 50  # RL steps between held-out evaluations (and at step 0)
  samples: int = 4  # sampled completions per problem for eval/pass@1
  temperature: float = 0.0  # temperature of eval/pass@1's samples (0 = sampling.temperature, the rollouts')

  def __post_init__(self):
    _positive("eval.every", self.every)
    _positive("eval.samples", self.samples)
    if not self.temperature >= 0:
      raise ConfigError(f"eval.temperature must be >= 0 (0 = sampling.temperature), got {self.temperature}")


@dataclasses.dataclass(frozen=True)
class LogConfig:
  every: int = 10  # RL steps between progress lines and decoded samples
  samples: int = 4  # decoded rollouts written to samples/ per logged step
  tensorboard: bool = False  # mirror metrics to WORKDIR/tensorboard (needs tensorboardX)

  def __post_init__(self):
    _positive("log.every", self.every)
    if self.samples < 0:
      raise ConfigError(f"log.samples must be >= 0, got {self.samples}")


@dataclasses.dataclass(frozen=True)
class PhasesConfig:
  online: bool = True  # run the online phase detector in the loop (writes phase_boundary events)
  refit_every: int = 25  # steps between online refits

  def __post_init__(self):
    _positive("phases.refit_every", self.refit_every)


@dataclasses.dataclass(frozen=True)
class FaultConfig:
  on_nonfinite: str = "skip"  # skip: drop a non-finite update, log an event | halt: stop the run

  def __post_init__(self):
    if self.on_nonfinite not in ("skip", "halt"):
      raise ConfigError(f"fault.on_nonfinite={self.on_nonfinite!r}; valid: halt, skip")


STAGES = ("pretrain", "rl")


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything one launch needs; the defaults are the default study (`make demo` adds `persist`)."""

  seed: int = 0  # every random stream derives from this, a purpose and the step
  stage: str = "rl"  # pretrain: train the base only | rl: RL (the launcher pretrains a missing base first)
  base_workdir: str = ""  # reuse the base model of another workdir instead of pretraining one
  checkpoint_dir: str = ""  # a Hugging Face checkpoint directory: the base, model shape and tokenizer
  resume_anyway: bool = False  # continue a workdir whose saved config differs from this one
  task: TaskConfig = TaskConfig()
  model: ModelConfig = ModelConfig(vocab_size=1)  # vocab_size comes from the task's tokenizer
  mesh: MeshConfig = MeshConfig()
  sampling: sampling.SamplingConfig = sampling.SamplingConfig()
  pretrain: PretrainConfig = PretrainConfig()
  rl: RLConfig = RLConfig()
  reward: RewardConfig = RewardConfig()
  advantage: AdvantageConfig = AdvantageConfig()
  loss: LossConfig = LossConfig()
  roles: RolesConfig = RolesConfig()
  checkpoint: CheckpointConfig = CheckpointConfig()
  eval: EvalConfig = EvalConfig()
  log: LogConfig = LogConfig()
  fault: FaultConfig = FaultConfig()
  phases: PhasesConfig = PhasesConfig()

  def __post_init__(self):
    if self.stage not in STAGES:
      raise ConfigError(f"config.stage={self.stage!r}; valid: {', '.join(STAGES)}")
    if self.seed < 0:
      raise ConfigError(f"seed must be >= 0, got {self.seed}")


# ---- ConfigDict <-> dataclasses ------------------------------------------------------------------------

def _is_pairs(v: Any) -> bool:
  return isinstance(v, tuple) and bool(v) and all(isinstance(p, tuple) and len(p) == 2 and
                                                    isinstance(p[0], str) for p in v)


def _to_cd_value(v: Any) -> Any:
  if dataclasses.is_dataclass(v):
    return _section_dict(v)
  if _is_pairs(v):  # task options and strategy mixes: name -> value, in order
    return config_dict.ConfigDict({k: _to_cd_value(x) for k, x in v})
  return v


def _section_dict(obj: Any, section: str = "") -> config_dict.ConfigDict:
  derived = DERIVED.get(section, ())
  return config_dict.ConfigDict({f.name: _to_cd_value(getattr(obj, f.name))
                                 for f in dataclasses.fields(obj) if f.name not in derived})


def default() -> config_dict.ConfigDict:
  """The default study as a ConfigDict: every key, with the dataclasses' defaults."""
  c = config_dict.ConfigDict()
  for f in dataclasses.fields(Config):
    value = getattr(Config(), f.name)
    c[f.name] = _section_dict(value, f.name) if dataclasses.is_dataclass(value) else value
  return c


def shrink(c: config_dict.ConfigDict) -> None:
  """The `smoke` variant: a tiny model, batch and step count that run in seconds on CPU (CI).

  Its countdown world is smaller (two numbers, short traces) so that 80 pretraining steps reach a base
  that solves some problems (greedy ~0.19, pass@1 ~0.09 measured here): the smoke RL run then sees
  rewarded rows and takes non-zero updates, and replay and phases have something to show.
  """
  c.task.options.num_count = 2
  c.task.options.max_number = 20
  c.task.options.max_target = 40
  c.task.options.budget = 4
  c.model.d_model = 32
  c.model.n_layers = 2
  c.model.n_heads = 4
  c.model.n_kv_heads = 2
  c.model.head_dim = 8
  c.model.d_ff = 64
  c.sampling.max_new_tokens = 32
  c.pretrain.steps = 80
  c.pretrain.optim.lr = 1e-2
  c.pretrain.optim.warmup_steps = 10
  c.pretrain.batch_size = 16
  c.pretrain.seq_len = 96
  c.pretrain.log_every = 40
  c.pretrain.eval_samples = 2
  c.task.eval_size = 16
  c.rl.steps = 3
  c.rl.prompts_per_step = 8
  c.rl.group_size = 4
  c.rl.updates_per_batch = 2
  c.eval.every = 2
  c.eval.samples = 2
  c.checkpoint.every = 2
  c.log.every = 1


def persist(c: config_dict.ConfigDict) -> None:
  """The `persist` world (experiments/pretrain.py:persist, two_phase.py:persist): 30 % of the base's
  reference traces search up to 12 tries before they say `fail` instead of 8, responses get 160 new
  tokens (room for a search past 12 tries), and the base pretrains 1200 steps instead of 900 (the longer
  traces need them: at 900 steps its greedy accuracy spread 0.34-0.475 over seeds and numerics). The base
  gives up after 8 tries most of the time, as before; RL learns that giving up never pays and searches
  on, which moves greedy accuracy as well as sampled pass@1 (README, "RL learns not to give up").

  The RL recipe (README, "What is and is not reproducible", for the runs behind each choice):
    - 100 steps: the next 100 add sampled pass@1 but not greedy accuracy, at twice the time;
    - rollouts sample at temperature 0.7: at 1.0 the samples stumble out of the loops a greedy search
      falls into past 8 tries, so RL rarely sees those loops fail and greedy accuracy can stand still
      while pass@1 rises; cooler rollouts follow the greedy path more often, so its failures are trained
      on;
    - DAPO's dynamic sampling: a third of the groups score all-equal and carry no advantage; refilling
      the batch with informative groups (up to 3 refill rounds) speeds learning at ~+0.5 s a step;
    - held-out pass@1 is measured at temperature 1.0 (the base's distribution, before and after RL) from
      32 samples per problem: with 4, two evaluations of the same model differed by up to 0.05, half the
      gain the bar asks for. The run evaluates at steps 0 and 100 only (~25 s each on 2 cores);
    - the kl/* metrics every 10th step (loss.kl_metrics_every): nothing in this recipe trains on the
      reference forward behind them (the same bits), and skipping it saves ~0.1-0.3 s of a ~3.1 s step
      on 2 cores (the host's work overlaps the rest of it)."""
  c.task.options.long_budget = 12
  c.task.options.long_budget_rate = 0.3
  c.sampling.max_new_tokens = 160
  c.pretrain.steps = 1200
  c.rl.steps = 100
  c.rl.dynamic_sampling = True
  c.sampling.temperature = 0.7
  c.eval.temperature = 1.0
  c.eval.samples = 32
  c.eval.every = 100
  c.loss.kl_metrics_every = 10


def arm_variant(arg: str, arms: tuple[str, ...], default_arm: str
                ) -> tuple[config_dict.ConfigDict, str, bool]:
  """An experiment file's `ARM[,smoke]` variant -> (default() — shrunk if smoke —, the arm, smoke).

  ValueError naming the valid variants for anything else.
  """
  parts = [p for p in arg.split(",") if p]
  arm = parts[0] if parts else default_arm
  if arm not in arms or any(p != "smoke" for p in parts[1:]):
    raise ValueError(f"unknown variant {arg!r}; valid: one of {arms}, optionally followed by ',smoke'")
  c = default()
  smoke = "smoke" in parts[1:]
  if smoke:
    shrink(c)
  return c, arm, smoke


def _plain(x: Any) -> Any:
  return x.to_dict() if hasattr(x, "to_dict") else x


def _pairs(v: Any) -> Any:
  """Mappings (task options, strategy mixes) become ordered (key, value) tuples, recursively."""
  v = _plain(v)
  if isinstance(v, dict):
    return tuple((str(k), _pairs(x)) for k, x in v.items())
  if isinstance(v, list):
    return tuple(_pairs(x) for x in v)
  return v


def _build(cls: type, section: str, values: Any, strict: bool, derived: dict[str, dict]) -> Any:
  """cls(**values) with nested sections, rejecting unknown (and, if strict, missing) keys.

  derived: section path -> the values of its DERIVED fields.
  """
  values = dict(_plain(values)) if values is not None else {}
  extra = derived.get(section, {})
  fields = {f.name: f for f in dataclasses.fields(cls)}
  valid = set(fields) - set(extra)
  name_of = lambda k: f"{section}.{k}" if section else k  # noqa: E731
  unknown = sorted(set(values) - valid)
  if unknown:
    raise ConfigError(f"unknown config key(s) {[name_of(k) for k in unknown]}; "
                      f"valid keys{' in ' + section if section else ''}: {sorted(valid)}")
  missing = sorted(valid - set(values))
  if strict and missing:
    raise ConfigError(f"config key(s) {[name_of(k) for k in missing]} missing; start experiment "
                      "configs from rldyn.config.default(), which has every key")
  kwargs = dict(extra)
  for name in valid & set(values):
    default, v = fields[name].default, values[name]
    if dataclasses.is_dataclass(default):
      kwargs[name] = _build(type(default), name_of(name), v, strict, derived)
    elif isinstance(default, tuple):  # task options, span patterns, stop sequences
      kwargs[name] = _pairs(v)
    else:
      kwargs[name] = _plain(v)
  try:
    return cls(**kwargs)
  except ConfigError:
    raise
  except (ValueError, TypeError) as e:
    raise ConfigError(str(e)) from e


def load(cd: Any, vocab_size: int, pad_id: int, stop_tokens: tuple[int, ...], strict: bool = True
         ) -> Config:
  """A ConfigDict (or dict) -> the typed, self-checked Config.

  strict=False fills keys the dict lacks with today's defaults (reading an older run's config.json).
  """
  derived = {"model": {"vocab_size": vocab_size},
             "sampling": {"pad_id": pad_id, "stop_tokens": tuple(stop_tokens)}}
  return _build(Config, "", cd, strict, derived)


def to_dict(cfg: Config) -> dict:
  return json.loads(to_json(cfg))


def to_json(cfg: Config) -> str:
  return json.dumps(dataclasses.asdict(cfg), indent=2, sort_keys=True)


def from_saved(d: dict, vocab_size: int, pad_id: int, stop_tokens: tuple[int, ...]) -> Config:
  """The Config of a saved config.json (derived fields dropped and recomputed; newer keys defaulted)."""
  d = json.loads(json.dumps(d))
  for section, names in DERIVED.items():
    for n in names:
      d.get(section, {}).pop(n, None)
  if "task" in d and isinstance(d["task"].get("options"), list):
    d["task"]["options"] = {k: (dict(v) if isinstance(v, list) and v and all(
        isinstance(p, list) and len(p) == 2 for p in v) else v) for k, v in d["task"]["options"]}
  return load(d, vocab_size, pad_id, stop_tokens, strict=False)
