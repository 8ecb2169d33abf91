"""Typed, frozen configuration built from an ml_collections ConfigDict at the boundary.

Experiment files (`experiments/*.py`) define every key with a one-line comment; `load(config_dict)` turns
the ConfigDict into these dataclasses, which validate themselves. Library code only ever sees the
dataclasses: no `config.get(key, default)` anywhere. Unknown keys and bad values fail here, before any
compile, with a message that names the valid choices.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from rldyn import sampling
from rldyn.model import ModelConfig
from rldyn.parallel import MeshConfig


def build(cls, section: str, values: dict, **extra):
  """cls(**values, **extra), rejecting unknown keys with the list of valid ones."""
  valid = {f.name for f in dataclasses.fields(cls)} - set(extra)
  unknown = set(values) - valid
  if unknown:
    raise ValueError(f"unknown config key(s) {sorted(f'{section}.{k}' for k in unknown)}; "
                     f"valid keys in {section}: {sorted(valid)}")
  return cls(**values, **extra)


@dataclasses.dataclass(frozen=True)
class TaskConfig:
  name: str
  options: tuple = ()  # (key, value) pairs passed to the task's own config dataclass
  eval_size: int = 200
  eval_seed: int = 0
  data_dir: str = ""  # where TFDS eval sets are materialised ("" = ~/.cache/rldyn/tfds)

  @property
  def kwargs(self) -> dict:
    return dict(self.options)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  lr: float = 1e-3
  warmup_steps: int = 50
  decay: str = "cosine"  # cosine | constant
  weight_decay: float = 0.01
  b1: float = 0.9
  b2: float = 0.95
  grad_clip: float = 1.0

  def __post_init__(self):
    if self.decay not in ("cosine", "constant"):
      raise ValueError(f"optim.decay={self.decay!r}; valid: cosine, constant")
    if not self.lr > 0:
      raise ValueError(f"optim.lr must be > 0, got {self.lr}")


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
  steps: int = 2000
  batch_size: int = 64
  seq_len: int = 128
  log_every: int = 100
  eval_every: int = 0  # 0 = only at the end
  checkpoint_every: int = 500
  eval_samples: int = 4  # sampled completions per eval problem for pass@1
  optim: OptimConfig = OptimConfig()
  time_budget_s: float = 0.0  # > 0: stop early when this much wall time has passed


@dataclasses.dataclass(frozen=True)
class RLConfig:
  steps: int = 200
  prompts_per_step: int = 16
  group_size: int = 8
  updates_per_batch: int = 2  # minibatches per rollout batch, one optimizer update each
  optim: OptimConfig = OptimConfig(lr=5e-5, warmup_steps=0, decay="constant", weight_decay=0.0)

  def __post_init__(self):
    for k in ("steps", "prompts_per_step", "group_size", "updates_per_batch"):
      if getattr(self, k) <= 0:
        raise ValueError(f"rl.{k} must be positive, got {getattr(self, k)}")
    if (self.prompts_per_step * self.group_size) % self.updates_per_batch:
      raise ValueError(f"rl.prompts_per_step * rl.group_size = {self.prompts_per_step * self.group_size} "
                       f"must be divisible by rl.updates_per_batch = {self.updates_per_batch}")


@dataclasses.dataclass(frozen=True)
class RewardConfig:
  name: str = "ground_truth"
  random_p: float = 0.5  # Bernoulli γ of the `random` reward
  seed: int = 0  # seed of the reward's own randomness (random reward, wrong labels)


@dataclasses.dataclass(frozen=True)
class AdvantageConfig:
  name: str = "grpo"
  eps: float = 1e-6
  std_ddof: int = 0  # 0 = population std; verl uses 1
  transform: str = "none"  # none | hicra (role-aware token transform)
  hicra_alpha: float = 0.2


@dataclasses.dataclass(frozen=True)
class LossConfig:
  name: str = "clipped"
  aggregation: str = "token-mean"
  eps_low: float = 0.2
  eps_high: float = 0.2
  dual_clip: float = 0.0  # c > 1 enables the dual clip for A < 0; 0 = off
  kl_coef: float = 0.0  # β of the KL-to-reference loss term
  kl_estimator: str = "k3"
  entropy_coef: float = 0.0

  def __post_init__(self):
    if self.dual_clip and self.dual_clip <= 1.0:
      raise ValueError(f"loss.dual_clip must be > 1 (or 0 = off), got {self.dual_clip}")
    if self.eps_low < 0 or self.eps_high < 0:
      raise ValueError("loss.eps_low and loss.eps_high must be >= 0")


@dataclasses.dataclass(frozen=True)
class RolesConfig:
  tagger: str = "structural"
  lexicon_path: str = ""  # lexicon JSON path or shipped name ("" = the task's default)
  placebo_of: str = "structural"  # the tagger whose planning density `placebo` copies
  seed: int = 0  # placebo seed (folded with the step)
  span_patterns: tuple = ()  # regexes for the `spans` tagger (() = <think>…</think> and tag spans)


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  every: int = 50
  keep: int = 3


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  every: int = 50
  samples: int = 4  # sampled completions per problem for eval/pass@1


@dataclasses.dataclass(frozen=True)
class LogConfig:
  every: int = 10  # progress line interval
  samples: int = 4  # decoded rollouts written to samples/ per logged step
  tensorboard: bool = False


@dataclasses.dataclass(frozen=True)
class PhasesConfig:
  online: bool = True  # run the online phase detector in the loop (emits phase_boundary events)
  refit_every: int = 25  # steps between online refits


@dataclasses.dataclass(frozen=True)
class FaultConfig:
  on_nonfinite: str = "skip"  # skip | halt

  def __post_init__(self):
    if self.on_nonfinite not in ("skip", "halt"):
      raise ValueError(f"fault.on_nonfinite={self.on_nonfinite!r}; valid: halt, skip")


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything one launch needs."""

  seed: int
  task: TaskConfig
  model: ModelConfig
  mesh: MeshConfig
  sampling: sampling.SamplingConfig
  pretrain: PretrainConfig
  rl: RLConfig
  reward: RewardConfig
  advantage: AdvantageConfig
  loss: LossConfig
  roles: RolesConfig
  checkpoint: CheckpointConfig
  eval: EvalConfig
  log: LogConfig
  fault: FaultConfig
  phases: PhasesConfig
  base_workdir: str = ""
  resume_anyway: bool = False
  stage: str = "rl"  # pretrain | rl (rl pretrains the base first when the workdir has none)


def _plain(x):
  return x.to_dict() if hasattr(x, "to_dict") else dict(x)


def _optim(section: str, d: dict, defaults: OptimConfig) -> OptimConfig:
  return build(OptimConfig, section, {**dataclasses.asdict(defaults), **d})


def load(cd: Any, vocab_size: int, pad_id: int, stop_tokens: tuple[int, ...]) -> Config:
  """Validates a ConfigDict (or dict) and returns the typed Config."""
  d = _plain(cd)
  sections = {f.name for f in dataclasses.fields(Config)}
  unknown = set(d) - sections
  if unknown:
    raise ValueError(f"unknown top-level config key(s) {sorted(unknown)}; valid: {sorted(sections)}")
  get = lambda k: _plain(d.get(k, {}))  # noqa: E731  (absent sections take their defaults)
  task = get("task")
  task_cfg = build(TaskConfig, "task", {**task, "options": tuple(sorted(_plain(task.get("options", {}))
                                                                        .items()))})
  pre = get("pretrain")
  pre_cfg = build(PretrainConfig, "pretrain", {**pre, "optim": _optim(
      "pretrain.optim", _plain(pre.get("optim", {})), PretrainConfig.optim)})
  rl = get("rl")
  rl_cfg = build(RLConfig, "rl", {**rl, "optim": _optim("rl.optim", _plain(rl.get("optim", {})),
                                                         RLConfig.optim)})
  samp = get("sampling")
  samp = {**samp, "stop_sequences": tuple(tuple(s) for s in samp.get("stop_sequences", ()))}
  return Config(
      seed=int(d.get("seed", 0)),
      task=task_cfg,
      model=build(ModelConfig, "model", get("model"), vocab_size=vocab_size),
      mesh=build(MeshConfig, "mesh", get("mesh")),
      sampling=build(sampling.SamplingConfig, "sampling", samp, pad_id=pad_id,
                     stop_tokens=stop_tokens),
      pretrain=pre_cfg,
      rl=rl_cfg,
      reward=build(RewardConfig, "reward", get("reward")),
      advantage=build(AdvantageConfig, "advantage", get("advantage")),
      loss=build(LossConfig, "loss", get("loss")),
      roles=build(RolesConfig, "roles", {**get("roles"), "span_patterns": tuple(
          get("roles").get("span_patterns", ()))}),
      checkpoint=build(CheckpointConfig, "checkpoint", get("checkpoint")),
      eval=build(EvalConfig, "eval", get("eval")),
      log=build(LogConfig, "log", get("log")),
      fault=build(FaultConfig, "fault", get("fault")),
      phases=build(PhasesConfig, "phases", get("phases")),
      base_workdir=str(d.get("base_workdir", "")),
      resume_anyway=bool(d.get("resume_anyway", False)),
      stage=str(d.get("stage", "rl")),
  )


def to_json(cfg: Config) -> str:
  return json.dumps(dataclasses.asdict(cfg), indent=2, sort_keys=True)
