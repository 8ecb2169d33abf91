"""The fixed probe set and what replay measures on it for one model (docs/replay.md, docs/metrics.md).

Every model of a replay (the base and each checkpoint) answers the same P held-out problems n times,
with the same prompts in the same rows and the same sampling keys, so comparisons between checkpoints
are paired: two identical policies would produce identical samples. Rows are problem-major (row
r = problem r // n, sample r % n) and run in fixed-size batches with key fold_in(replay_key, batch),
so the compiled sampler and scorer are reused across checkpoints without recompiling.

Per model (`probe_stats`), over its own R = P·n samples (response tokens only, stop token included):
  accuracy                     mean verifier correctness (= pass@1)
  entropy/{all,planning,execution}   mean full-vocabulary entropy of the policy at the sampled tokens
  nll/{all,planning,execution}       mean −log π(sampled token); ppl/execution_rel is exp(nll − nll_base)
  semantic_entropy/planning    Shannon entropy of the planning-unit distribution over all responses
  strategy/*                   strategy diversity per probe problem over its n samples, averaged over
                               problems (rldyn/metrics/strategy.py; the task's structural abstraction)
  procedure/*                  wrong steps and verdicts in the samples' traces (rldyn/metrics/procedure.py)
  kl/k3, kl/k3/{planning,execution}  mean k3 estimate of KL(π_θ‖π_base) on π_θ's samples
  ppl/self                     exp(nll/all)
  ppl/base_on_this             the base's perplexity on this model's responses (cross-model PPL)
  ppl/this_on_base             this model's perplexity on the base's responses
  response_len/mean, response_len/truncated_frac, tokens/{planning,execution}_frac
Log-probabilities are those of the policy distribution softmax(logits / temperature), as in training.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np

from rldyn import data
from rldyn import evaluation
from rldyn import parallel
from rldyn import sampling
from rldyn.config import Config, ConfigError
from rldyn.metrics import entropy as entropy_lib
from rldyn.metrics import procedure as procedure_lib
from rldyn.metrics import strategy as strategy_lib
from rldyn.metrics import token_stats
from rldyn.rl import losses
from rldyn.rl import step as step_lib
from rldyn.tasks.base import Problem, Task

REPLAY_KEY = 0x5EED_0E91  # the replay's sampling-key purpose (kept apart from rollouts and evals)


@dataclasses.dataclass
class ProbeSamples:
  """n samples per probe problem from one model; R = P·n rows, N = max_new_tokens columns."""

  tokens_RN: np.ndarray  # int32 sampled ids, pad after the row stopped
  mask_RN: np.ndarray  # bool, True on response tokens (stop token included)
  logp_RN: np.ndarray  # float32 log π(sampled token) from the sampler
  entropy_RN: np.ndarray  # float32 full-vocabulary entropy at each sampled position
  length_R: np.ndarray  # int32 response tokens per row
  truncated_R: np.ndarray  # bool, hit max_new_tokens without stopping
  correct_R: np.ndarray  # bool, the task's verifier on the decoded text
  roles_RN: np.ndarray  # int8 token roles (0 other, 1 planning, 2 execution)
  units: list[tuple[int, ...]]  # planning units of all rows (semantic entropy)
  texts: list[str]  # decoded responses
  strategy: dict[str, float] = dataclasses.field(default_factory=dict)  # the strategy/* and procedure/* metrics

  def per_problem_correct(self, n: int) -> list[int]:
    return [int(c) for c in self.correct_R.reshape(-1, n).sum(axis=1)]


class Prober:
  """Compiled sampling and scoring on a fixed probe set, shared by every model of a replay."""

  def __init__(self, cfg: Config, task: Task, problems: Sequence[Problem], n: int, mesh,
               batch_size: int, seed: int):
    if n < 1:
      raise ValueError(f"n (samples per probe problem) must be >= 1, got {n}")
    self.cfg, self.task, self.problems, self.n, self.mesh = cfg, task, list(problems), n, mesh
    self.prompts = data.prompt_batch(task, self.problems, repeat=n)  # one width for every row
    self.rows = len(self.problems) * n
    self.batch = effective_batch(batch_size, self.rows, parallel.data_parallel_size(mesh))
    self.num_batches = -(-self.rows // self.batch)
    self.new_tokens = cfg.sampling.max_new_tokens
    width = self.prompts["tokens"].shape[1]
    if width + self.new_tokens > cfg.model.max_seq_len:
      raise ConfigError(f"the probe's prompts ({width} tokens, padded) plus max_new_tokens={self.new_tokens} "
                       f"exceed model.max_seq_len={cfg.model.max_seq_len}: at most "
                       f"{cfg.model.max_seq_len - width} new tokens fit")
    self._sample = sampling.make_sampler(cfg.model, cfg.sampling)
    n_max = self.new_tokens
    self.score_widths = sorted({min(n_max, -(-n_max * f // (8 * 16)) * 16) for f in (1, 2, 4, 6, 8)})
    self._scorers: dict[int, Callable] = {}
    self.key = jax.random.fold_in(jax.random.key(seed), REPLAY_KEY)
    self.timings: dict[str, float] = {}
    # The sampler is shared (lru-cached) with anything else in this process, e.g. a trainer.
    self._sample_cache0 = self._sample._cache_size()  # pylint: disable=protected-access

  def compiled_variants(self) -> dict[str, int]:
    """Compilations this prober caused, however many models it served: sampler ≤ 1, scorer ≤ one per
    width in `score_widths`."""
    # pylint: disable=protected-access
    return {"sample": self._sample._cache_size() - self._sample_cache0,
            "score": sum(f._cache_size() for f in self._scorers.values())}

  def _rows(self, b: int) -> np.ndarray:
    """Row indices of batch b, the last batch padded by repeating its final row."""
    idx = np.arange(b * self.batch, (b + 1) * self.batch)
    return np.minimum(idx, self.rows - 1)

  def _tick(self, name: str, t0: float) -> None:
    self.timings[name] = self.timings.get(name, 0.0) + time.time() - t0

  def sample(self, params, progress: Callable[[int], None] | None = None) -> ProbeSamples:
    """R samples from `params` (same prompts, rows and keys for every model), verified and role-tagged."""
    outs = []
    t0 = time.time()
    for b in range(self.num_batches):
      idx = self._rows(b)
      batch = parallel.shard_batch(self.mesh, {"tokens": self.prompts["tokens"][idx],
                                               "mask": self.prompts["mask"][idx]})
      out = self._sample(params, batch["tokens"], batch["mask"], jax.random.fold_in(self.key, b))
      outs.append(jax.device_get(out))
      if progress:
        progress(1)
    self._tick("sample", t0)
    t0 = time.time()
    out = {k: np.concatenate([o[k] for o in outs])[:self.rows] for k in outs[0]}
    texts = evaluation.decode_rows(self.task, out["tokens"], out["length"])
    rows = [p for p in self.problems for _ in range(self.n)]
    correct = np.array([bool(self.task.verify(p, t)) for p, t in zip(rows, texts)], bool)
    roles = np.zeros(out["tokens"].shape, np.int8)
    units, ids_list = [], []
    for i, length in enumerate(out["length"]):
      ids = out["tokens"][i, :length]
      roles[i, :length] = self.task.token_roles(ids.tolist())
      units += entropy_lib.planning_units(ids, roles[i, :length])
      ids_list.append(ids.tolist())
    strategy = {**strategy_lib.step_strategy_metrics(self.task, None, ids_list, texts, roles, correct, self.n),
                **procedure_lib.procedure_metrics(self.task, rows, texts)}
    self._tick("host", t0)
    return ProbeSamples(tokens_RN=out["tokens"], mask_RN=out["mask"].astype(bool), logp_RN=out["logp"],
                        entropy_RN=out["entropy"], length_R=out["length"], truncated_R=out["truncated"],
                        correct_R=correct, roles_RN=roles, units=units, texts=texts, strategy=strategy)

  def score(self, params, tokens_RN: np.ndarray, mask_RN: np.ndarray,
            progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Teacher-forced log π_params of responses (tokens_RN, mask_RN) to the probe prompts: float32 [R, N].

    Rows are scored in order of length, each batch only as wide as the smallest of a few fixed widths
    (`score_widths`) that holds its longest response, so short responses cost little and the scorer
    compiles at most once per width for the whole replay. Zero where mask_RN is False.
    """
    t0 = time.time()
    out = np.zeros(tokens_RN.shape, np.float32)
    order = np.argsort(mask_RN.sum(axis=1), kind="stable")
    for b in range(self.num_batches):
      idx = order[self._rows(b)]
      longest = int(mask_RN[idx].sum(axis=1).max())
      width = next(w for w in self.score_widths if w >= longest)
      if width not in self._scorers:
        self._scorers[width] = jax.jit(functools.partial(
            step_lib.response_logprobs, self.cfg.model, self.cfg.sampling.temperature, n=width))
      batch = parallel.shard_batch(self.mesh, {
          "tokens": np.concatenate([self.prompts["tokens"][idx], tokens_RN[idx, :width]], axis=1),
          "mask": np.concatenate([self.prompts["mask"][idx], mask_RN[idx, :width]], axis=1)})
      logp = np.asarray(jax.device_get(self._scorers[width](params, batch["tokens"], batch["mask"])))
      out[idx, :width] = logp
      if progress:
        progress(1)
    self._tick("score", t0)
    return out * mask_RN


def effective_batch(batch_size: int, rows: int, dp: int) -> int:
  """Rows per sampling call: at most `batch_size` (and no more than needed), a multiple of dp."""
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  b = min(batch_size, rows)
  return -(-b // dp) * dp


def probe_stats(samples: ProbeSamples, base_logp_RN: np.ndarray, this_on_base_logp_RN: np.ndarray,
                base_mask_RN: np.ndarray) -> dict[str, float]:
  """The per-model probe statistics (module docstring) from its samples and the two cross scorings.

  Args:
    samples: this model's samples.
    base_logp_RN: the base's log π of this model's sampled tokens (for the base itself: its own).
    this_on_base_logp_RN: this model's log π of the base's sampled tokens.
    base_mask_RN: the base's response mask (where this_on_base_logp_RN counts).
  """
  m = samples.mask_RN.astype(np.float64)
  logp = samples.logp_RN.astype(np.float64)
  roles = samples.roles_RN
  kl = losses.k3(logp, base_logp_RN, np)  # the trainer's estimator, on numpy
  out = {
      "accuracy": float(samples.correct_R.mean()),
      **token_stats.role_means("entropy", samples.entropy_RN, m, roles),
      **token_stats.role_means("nll", -logp, m, roles),
      **token_stats.role_means("kl/k3", kl, m, roles, all_key=""),
      **token_stats.role_fractions(m, roles),
      "semantic_entropy/planning": entropy_lib.semantic_entropy(samples.units),
      **samples.strategy,
      "response_len/mean": float(samples.length_R.mean()),
      "response_len/truncated_frac": float(samples.truncated_R.mean()),
  }
  out = {k: float(v) for k, v in out.items()}
  out["ppl/base_on_this"] = float(np.exp(token_stats.masked_mean(-base_logp_RN, m)))
  out["ppl/this_on_base"] = float(np.exp(token_stats.masked_mean(-this_on_base_logp_RN,
                                                                  base_mask_RN.astype(np.float64))))
  out["ppl/self"] = float(np.exp(out["nll/all"]))
  return out


def examples(samples: ProbeSamples, problems: Sequence[Problem], n: int, count: int = 2) -> list[dict]:
  """Sample 0 of the first `count` problems (the same rows and keys for every model)."""
  return [{"prompt": problems[i].prompt, "answer": problems[i].answer, "response": samples.texts[i * n],
           "correct": bool(samples.correct_R[i * n])} for i in range(min(count, len(problems)))]
