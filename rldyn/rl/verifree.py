"""VeriFree (Zhou et al. 2025, arXiv 2505.21493): RL without a verifier.

A response o = (z, y) is split into reasoning z, ending with the answer marker, and the answer y. Instead
of sampling y and verifying it, VeriFree appends the reference answer y* (and the task's end token) to z and
scores it with one extra forward pass of the policy:

    R_i = π_θ(y* | q, z_i) = exp(Σ_t log π_θ(y*_t | q, z_i, y*_<t))     (0 when z_i has no marker)

The objective J = E_z π_θ(y*|q,z) equals the verifier objective E_{z,y} 1[y = y*] with y marginalised out,
and its gradient estimator over G responses to one prompt is

    ∇J ≈ (1/G) Σ_i [ A_i ∇log π_θ(z_i | q) + R_i ∇log π_θ(y* | q, z_i) ],  A_i = R_i − mean_{j≠i} R_j (RLOO)

a policy gradient on the reasoning with a leave-one-out baseline plus a reward-weighted SFT term on the
reference answer. It is on-policy (one update per batch: no ratio, no clip) and length-normalised as Dr.
GRPO (÷ L_max). `surrogate` is the scalar whose negative gradient is that estimator (weights are host
arrays: no gradient flows through R or A).

In the RL loop (`loss.objective = "verifree"`; docs/objectives.md): the sampler runs as usual (it may go
on past the marker, so the true verifier's `accuracy` is still measured), each response is cut just after
its first marker on token ids (`split_at_marker`: the appended answer continues exactly the tokens the
policy produced, the paper's token-safe split), `patch_rows` builds prompt + z + y* + end with the answer
padded to a bucketed width, one jitted forward gives `reward`, `weights` gives RLOO, and the update step
(rldyn.rl.step, `verifree_loss`) takes ONE step on `surrogate` over the same patched rows (z's log-probs
come from that forward too: the rows are causal, z is their prefix). Rows without a marker keep their whole
response as z (R = 0, so A_i < 0 pushes it down) and get no answer term. `check_config` lists what the
objective refuses.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from rldyn import tasks as tasks_lib
from rldyn.rl import advantages as adv_lib

ANSWER_BUCKET = 16  # the appended answer (+ end token) is padded to a multiple of this: few compiled widths


def split_at_marker(ids: Sequence[int], marker: Sequence[int]) -> int | None:
  """Length of the reasoning z: the index just past the first occurrence of `marker` in `ids` (None if
  the marker is absent, and such a response gets R = 0)."""
  ids, marker = list(ids), list(marker)
  if not marker:
    raise ValueError("the answer marker must be a non-empty token sequence")
  for i in range(len(ids) - len(marker) + 1):
    if ids[i:i + len(marker)] == marker:
      return i + len(marker)
  return None


def reward(answer_logp_BA: np.ndarray, answer_mask_BA: np.ndarray, has_marker_B: np.ndarray) -> np.ndarray:
  """R_B = π_θ(y* | q, z) = exp(Σ_t log π_θ(y*_t | ·)) over the appended answer tokens; 0 without a marker."""
  s = (np.asarray(answer_logp_BA, np.float64) * np.asarray(answer_mask_BA, np.float64)).sum(axis=1)
  return np.where(np.asarray(has_marker_B, bool), np.exp(s), 0.0).astype(np.float32)


def weights(rewards_B: np.ndarray, group_size: int) -> tuple[np.ndarray, np.ndarray]:
  """(reasoning weights A_B, answer weights R_B): the RLOO advantage of each R_i in its group, and R_i."""
  r = np.asarray(rewards_B, np.float32)
  if group_size < 2 or r.size % group_size:
    raise ValueError(f"VeriFree's RLOO baseline needs group_size >= 2 dividing the batch; got group_size "
                     f"{group_size} for {r.size} rows")
  a = np.asarray(adv_lib.rloo(r.reshape(-1, group_size)), np.float32).reshape(-1)
  return a, r


def surrogate(logp_reason_BN, reason_mask_BN, logp_answer_BA, answer_mask_BA, reason_w_B, answer_w_B,
              max_len: int):
  """−(1/(B·L_max)) Σ_i [A_i Σ_t log π(z_i,t) + R_i Σ_t log π(y*_t | z_i)]; its gradient is −∇J's estimator.

  logp_*: log π_θ of the reasoning tokens and of the appended answer tokens (differentiable); masks select
  them; the weights come from `weights` (constants).
  """
  z = (logp_reason_BN * reason_mask_BN).sum(axis=1)
  y = (logp_answer_BA * answer_mask_BA).sum(axis=1)
  b = z.shape[0]
  return -(jnp.asarray(reason_w_B) * z + jnp.asarray(answer_w_B) * y).sum() / (b * max_len)


# ---- configuration and patched rows (the loop's side; pure host functions) -----------------------------

def check_config(cfg) -> None:
  """Refuses (ValueError, one line naming the fix) what `loss.objective = "verifree"` cannot run with."""
  need = {"rl.updates_per_batch": (cfg.rl.updates_per_batch, 1),  # on-policy: one update, no ratio
          "rl.dynamic_sampling": (cfg.rl.dynamic_sampling, False),  # its rewards need a forward pass
          "reward.name": (cfg.reward.name, "ground_truth"),  # R replaces the reward; accuracy is logged
          "reward.kl_coef": (cfg.reward.kl_coef, 0.0),
          "advantage.name": (cfg.advantage.name, "rloo"),  # the paper's baseline
          "advantage.transform": (cfg.advantage.transform, "none"),
          "loss.name": (cfg.loss.name, "vanilla"),  # no clip (at ratio 1 vanilla IS the reasoning term)
          "loss.aggregation": (cfg.loss.aggregation, "seq-mean-token-sum-norm"),  # Dr. GRPO's ÷ L_max
          "loss.kl_coef": (cfg.loss.kl_coef, 0.0), "loss.entropy_coef": (cfg.loss.entropy_coef, 0.0)}
  if marker_word(cfg.task.name) is None:
    raise ValueError(f"loss.objective=verifree splits responses at the task's answer marker and task "
                     f"{cfg.task.name!r} has none; valid tasks: {', '.join(marked_tasks())}")
  if cfg.rl.group_size < 2:
    raise ValueError(f"loss.objective=verifree needs rl.group_size >= 2 (RLOO baseline), got "
                     f"{cfg.rl.group_size}")
  bad = [f"{k}={v!r} (needs {want!r})" for k, (v, want) in need.items() if v != want]
  if bad:
    raise ValueError(f"loss.objective=verifree cannot run with {', '.join(bad)}: VeriFree is one on-policy "
                     "update of its own surrogate with an RLOO baseline, Dr. GRPO normalisation, no clip, "
                     "KL or entropy term (docs/objectives.md)")


def marked_tasks() -> list[str]:
  """The registered tasks whose responses state their answer after a marker word (`Task.answer_marker`)."""
  return sorted(n for n, cls in tasks_lib.TASKS.items() if cls.answer_marker)


def marker_word(task_name: str) -> str | None:
  """The task's answer marker (`Task.answer_marker`), None for free-form tasks and unknown names."""
  cls = tasks_lib.TASKS.get(task_name)
  return None if cls is None else cls.answer_marker


def marker_ids(task) -> list[int]:
  """The task's answer marker as token ids (ValueError naming the valid tasks if it has none)."""
  if not task.answer_marker:
    raise ValueError(f"task {task.name!r} has no answer marker; valid: {', '.join(marked_tasks())}")
  return task.tokenizer.encode(task.answer_marker)


def answer_ids(task, problem) -> list[int]:
  """y* + the task's end token, tokenised after the marker (token-safe: `marker + answer` encodes as the
  marker's ids followed by these)."""
  if not problem.answer:
    raise ValueError(f"VeriFree needs each training problem's reference answer; {problem.uid} has none")
  marker = marker_ids(task)
  full = task.tokenizer.encode(f"{task.answer_marker} {problem.answer}")
  if full[:len(marker)] != marker:
    raise ValueError(f"{task.name}: the marker {task.answer_marker!r} does not tokenise apart from the "
                     f"answer {problem.answer!r}")
  return full[len(marker):] + [task.tokenizer.eos_id]


def answer_width(answers: Sequence[Sequence[int]]) -> int:
  """The appended answer's padded width: the longest answer (+ end) rounded up to ANSWER_BUCKET."""
  longest = max((len(a) for a in answers), default=1)
  return -(-longest // ANSWER_BUCKET) * ANSWER_BUCKET


def patch_rows(prompt_tokens_BP: np.ndarray, prompt_mask_BP: np.ndarray, responses: Sequence[Sequence[int]],
               marker: Sequence[int], answers: Sequence[Sequence[int]], width: int, pad_id: int
               ) -> dict[str, np.ndarray]:
  """Patched rows prompt + z + y* (+ end) of width P + M, M = `width` (>= the longest z + answer).

  responses: each row's sampled ids (length-trimmed); answers: each row's `answer_ids`. z is the response
  up to and including its first marker, or the whole response when it has none (then no answer is
  appended). Returns tokens_BS, mask_BS (prompt left-padded as sampled, response right-padded with pad_id),
  reason_mask_BM (z), answer_mask_BM (y* and the end token), has_marker_B and z_len_B.
  """
  b = len(responses)
  tokens = np.full((b, width), pad_id, np.int32)
  reason, answer = np.zeros((b, width), np.float32), np.zeros((b, width), np.float32)
  has, z_len = np.zeros(b, bool), np.zeros(b, np.int32)
  for i, (ids, ans) in enumerate(zip(responses, answers)):
    cut = split_at_marker(ids, marker)
    z = list(ids) if cut is None else list(ids[:cut])
    row = z if cut is None else z + list(ans)
    if len(row) > width:
      raise ValueError(f"row {i}: reasoning ({len(z)}) + answer ({len(ans)}) tokens exceed the patched "
                       f"width {width}")
    tokens[i, :len(row)] = row
    reason[i, :len(z)] = 1.0
    answer[i, len(z):len(row)] = 1.0
    has[i], z_len[i] = cut is not None, len(z)
  resp_mask = (reason + answer) > 0
  return {"tokens_BS": np.concatenate([np.asarray(prompt_tokens_BP, np.int32), tokens], axis=1),
          "mask_BS": np.concatenate([np.asarray(prompt_mask_BP, bool), resp_mask], axis=1),
          "reason_mask_BM": reason, "answer_mask_BM": answer, "has_marker_B": has, "z_len_B": z_len}
