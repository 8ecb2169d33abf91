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
from rldyn.rl import advantages as adv_lib
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
  """Semantic entropy of planning; with a non-structural tagger, its precision/recall vs the truth."""
  ids = ro.ids
  out = {}
  if cfg.roles.tagger != "structural":  # how the configured tagger agrees with the ground truth
    truth = np.concatenate([task.token_roles(x) for x in ids] or [np.zeros(0)])
    pred = np.concatenate([roles_BN[i, :len(x)] for i, x in enumerate(ids)] or [np.zeros(0)])
    tp = float(((pred == PLANNING) & (truth == PLANNING)).sum())
    out["roles/precision"] = tp / max(float((pred == PLANNING).sum()), 1.0)
    out["roles/recall"] = tp / max(float((truth == PLANNING).sum()), 1.0)
  if hasattr(tagger, "group_uses"):  # strategic-gram groups (lexicon tagger)
    uses = tagger.group_uses(ro.texts)
  else:  # the task's planning units stand in for gram groups
    uses = [u for i, x in enumerate(ids) for u in entropy_lib.planning_units(x, roles_BN[i])]
  out["semantic_entropy/planning"] = entropy_lib.semantic_entropy(uses)
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
