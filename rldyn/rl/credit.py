"""Credit assignment: a scored `Rollout` -> the update batch (advantages per token, token roles).

1. Group advantages from the rewards (`advantage.name`: grpo | drgrpo | rloo), broadcast to every
   response token.
2. Token roles from the configured tagger (`roles.tagger`), and the step's planning units (strategic-gram
   groups for the lexicon tagger, the task's planning-token runs otherwise) for semantic entropy.
3. The token transform (`advantage.transform`: none | hicra on planning tokens | entropy shaping) on the
   broadcast advantages.
The result is the batch `rldyn.rl.step.update_step` consumes, plus the host-side role statistics.
"""

from __future__ import annotations

import numpy as np

from rldyn.config import Config
from rldyn.metrics import entropy as entropy_lib
from rldyn.metrics import procedure as procedure_lib
from rldyn.metrics import strategy as strategy_lib
from rldyn.metrics import token_stats
from rldyn.rl import advantages as adv_lib
from rldyn.rl import losses
from rldyn.rl.rollout import Rollout
from rldyn.tasks.base import PLANNING, Task


def group_advantages(cfg: Config, ro: Rollout) -> np.ndarray:
  """adv_B: the configured estimator over each group's rewards."""
  r_pg = ro.rewards_B.reshape(-1, ro.group_size)
  adv = adv_lib.ADVANTAGES.get(cfg.advantage.name)(r_pg, eps=cfg.advantage.eps, ddof=cfg.advantage.std_ddof,
                                                   **adv_lib.estimator_options(cfg.advantage))
  return np.asarray(adv, np.float32).reshape(-1)


def tag_roles(tagger, ro: Rollout, step: int) -> np.ndarray:
  """roles_BN (int32; 0 other, 1 planning, 2 execution) from the tagger, zero past each response."""
  roles = np.zeros_like(ro.tokens_BN, np.int32)
  for i, r in enumerate(tagger(ro.ids, ro.texts, step)):
    roles[i, :len(r)] = r
  return roles


def role_stats(cfg: Config, task: Task, tagger, ro: Rollout, roles_BN: np.ndarray) -> dict[str, float]:
  """Semantic entropy of planning, strategy diversity (strategy/*), procedure errors (procedure/*, on tasks
  whose traces state checkable steps); with a non-structural tagger on a task
  with ground-truth roles, its precision/recall vs the truth and the token entropy by *true* role
  (truth/entropy/*, from the sampler's entropies: the run's entropy/* follow its tagger's mask)."""
  ids = ro.ids
  out = {}
  if cfg.roles.tagger != "structural" and task.has_role_truth:  # the tagger vs the ground truth
    truth_BN = np.zeros_like(roles_BN)  # roles_BN and truth_BN are both 0 (other) past each response
    for i, x in enumerate(ids):
      truth_BN[i, :len(x)] = task.token_roles(x)
    tp = float(((roles_BN == PLANNING) & (truth_BN == PLANNING)).sum())
    out["roles/precision"] = tp / max(float((roles_BN == PLANNING).sum()), 1.0)
    out["roles/recall"] = tp / max(float((truth_BN == PLANNING).sum()), 1.0)
    means = token_stats.role_means("truth/entropy", ro.entropy_BN, ro.mask_BN.astype(np.float32), truth_BN)
    out.update({k: float(v) for k, v in means.items() if k != "truth/entropy/all"})  # = entropy/all
  if hasattr(tagger, "group_uses"):  # strategic-gram groups (lexicon tagger)
    uses = tagger.group_uses(ro.texts)
  else:  # the task's planning units stand in for gram groups
    uses = [u for i, x in enumerate(ids) for u in entropy_lib.planning_units(x, roles_BN[i])]
  out["semantic_entropy/planning"] = entropy_lib.semantic_entropy(uses)
  out.update(strategy_lib.step_strategy_metrics(task, tagger, ids, ro.texts, roles_BN, ro.correct_B,
                                                ro.group_size))
  out.update(procedure_lib.procedure_metrics(task, ro.problems, ro.texts))
  return out


def update_batch(cfg: Config, ro: Rollout, adv_B: np.ndarray, roles_BN: np.ndarray) -> dict[str, np.ndarray]:
  """The arrays of `rldyn.rl.step.BATCH_KEYS` except ref_logp_BN (computed on device)."""
  resp_mask = ro.mask_BN.astype(np.float32)
  adv_BN = np.asarray(adv_lib.apply_transform(cfg.advantage, adv_B[:, None] * resp_mask, roles_BN,
                                              ro.entropy_BN), np.float32)
  return {
      "tokens_BS": np.concatenate([ro.prompt_tokens_BP, ro.tokens_BN], axis=1),
      "mask_BS": np.concatenate([ro.prompt_mask_BP, ro.mask_BN], axis=1),
      "resp_mask_BN": resp_mask,
      "old_logp_BN": ro.logp_BN,
      "adv_BN": adv_BN,
      "entropy_BN": ro.entropy_BN,
      "roles_BN": roles_BN,
  }


def assign(cfg: Config, task: Task, tagger, ro: Rollout, step: int) -> tuple[dict[str, np.ndarray], dict]:
  """(update batch, host role statistics) of a rollout."""
  roles = tag_roles(tagger, ro, step)
  return update_batch(cfg, ro, group_advantages(cfg, ro), roles), role_stats(cfg, task, tagger, ro, roles)


# ---- loop-level control arms (pure functions; the loop drives them) ------------------------------------
#
# KL as a reward penalty (verl's use_kl_in_reward), DAPO/ProRL dynamic sampling, and ProRL's reference reset.
# Each is a host-side numpy function with no state of its own; docs/objectives.md describes how a loop
# uses them.

def kl_reward_penalty(rewards_B: np.ndarray, old_logp_BN: np.ndarray, ref_logp_BN: np.ndarray,
                      mask_BN: np.ndarray, beta: float) -> tuple[np.ndarray, np.ndarray]:
  """(r − β·Σ_t k1_t, Σ_t k1_t): the sequence reward minus β times the response's summed per-token k1.

  k1_t = clamp(log π_old(o_t) − log π_ref(o_t), ±10) over the response tokens (mask_BN), the sampler's
  log-probs standing in for π_θ as in verl (`algorithm.use_kl_in_reward`, `kl_penalty = kl`), which puts
  −β·k1_t on every token's reward; GRPO-style outcome estimators sum the token rewards, so the sequence
  reward is r − β·Σ_t k1_t. verl's k1 is not clamped (rldyn's is, as for the `kl/k1` metric). The
  penalised rewards then go through the configured advantage estimator like any reward.
  """
  if beta < 0:
    raise ValueError(f"the KL reward penalty needs beta >= 0, got {beta}")
  m = np.asarray(mask_BN, np.float32)
  kl_B = (np.asarray(losses.k1(np.asarray(old_logp_BN, np.float32), np.asarray(ref_logp_BN, np.float32),
                               xp=np)) * m).sum(axis=1)
  return (np.asarray(rewards_B, np.float32) - np.float32(beta) * kl_B).astype(np.float32), kl_B.astype(np.float32)


def informative_groups(rewards_PG: np.ndarray) -> np.ndarray:
  """keep_P: groups whose rewards are not all equal (DAPO dynamic sampling drops the others: every
  group-relative estimator gives them advantage 0, so they carry no policy gradient)."""
  r = np.asarray(rewards_PG)
  return r.max(axis=1) > r.min(axis=1)


def refill_stream(seed: int, step: int, round_: int) -> np.random.Generator:
  """The problem stream of refill round `round_` ≥ 1 of step `step`: `default_rng([seed, 1, step, round_])`,
  disjoint from the step's own stream `default_rng([seed, 1, step])`, so a resumed run refills identically."""
  if round_ < 1:
    raise ValueError(f"refill rounds count from 1 (round 0 is the step's own stream), got {round_}")
  return np.random.default_rng([seed, 1, step, round_])


def dynamic_sampling(round_rewards: list[np.ndarray], target: int, max_rounds: int
                     ) -> tuple[list[tuple[int, int]], bool]:
  """(selection, done) of DAPO-style dynamic sampling with a refill cap.

  round_rewards[r] is rewards_PG of round r: round 0 is the step's ordinary rollout; rounds 1, 2, …
  sample `target` further prompts each (the same shapes, so the sampler does not recompile) from
  `refill_stream(seed, step, r)`. The selection is the list of (round, group) to train on, in order: the
  informative groups of every round so far, first come first kept, cut at `target`.

  done is True when the batch is full or when `max_rounds` refill rounds have run; the loop samples
  another round while it is False. When the cap is reached short of `target`, the batch is padded with the
  earliest dropped groups (their advantage is 0, so they add no policy gradient but keep the update's
  shape fixed: no recompile). A step therefore never runs more than 1 + max_rounds rollouts.
  """
  if target < 1 or max_rounds < 0:
    raise ValueError(f"dynamic sampling needs target >= 1 and max_rounds >= 0, got {target}, {max_rounds}")
  kept, dropped = [], []
  for r, rewards in enumerate(round_rewards):
    keep = informative_groups(rewards)
    kept += [(r, g) for g in np.flatnonzero(keep)]
    dropped += [(r, g) for g in np.flatnonzero(~keep)]
  if len(kept) >= target:
    return kept[:target], True
  if len(round_rewards) > max_rounds:  # rounds 1..max_rounds have run
    return kept + dropped[:target - len(kept)], True
  return kept, False


def should_reset(step: int, history: list[tuple[int, float]], every: int, patience: int, delta: float,
                 last_reset: int = 0) -> bool:
  """Whether to hard-reset the reference (π_ref ← π_θ, optimizer state re-initialised; ProRL) at `step`.

  history: (eval step, held-out metric) pairs, higher is better, in step order. Two triggers, either
  enough (0 disables one):
    schedule  every > 0 and step − last_reset ≥ every;
    plateau   patience > 0, `step` is an evaluation step (history's last), and among the evaluations
              after `last_reset` (the one at last_reset counts as the starting point), none of the last
              `patience` improved on the best before them by more than `delta`.
  """
  if every < 0 or patience < 0:
    raise ValueError(f"reference reset needs every >= 0 and patience >= 0, got {every}, {patience}")
  if step <= last_reset:
    return False
  if every and step - last_reset >= every:
    return True
  if not patience or not history or history[-1][0] != step:
    return False
  since = [v for s, v in history if s >= last_reset and v is not None and np.isfinite(v)]
  if len(since) <= patience:
    return False
  best_before = max(since[:-patience])
  return max(since[-patience:]) <= best_before + delta
