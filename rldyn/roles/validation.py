"""How well lexicon roles agree with the ground truth, and whether high-entropy tokens are planning.

`validate` (rldyn.roles CLI) writes WORKDIR/roles_validation.json: token-level precision/recall/F1 of
lexicon planning against structural planning over the samples' responses, and
`high_entropy_planning_frac`, the fraction of the top-20 % highest-entropy response tokens that are
structural planning tokens. Entropies come from a forward pass of the run's base model (default) or its
last RL checkpoint over the samples, scored as the RL step scores responses (rldyn.rl.step).

How good is the recipe? On countdown it is at chance. The shipped lexicon (5117 exact 3-5-grams, top
20 % of 25584 candidates with CDF >= 2, from 1410 verified traces) against structural roles on 703
other verified reference traces (`validate --task=countdown --traces=1000 --seed=1`): precision 0.472,
recall 0.973, F1 0.635; it tags 95 % of tokens planning. A random mask of the same density (the
placebo) has precision 0.470, F1 0.630; tagging everything planning, F1 0.640. In this 33-word
language every structure is frequent, so CDF selects all of it: "try 2 +" (planning) ranks beside
"- 1 =" (execution). Neither `<num>` placeholders nor other n-gram ranges or top fractions beat chance
by much (best F1 0.66; precision reaches 0.67 only at recall 0.44). The ground truth disagrees with the
text at the `=` inside a step ("try 3 + 4" planning, "= 7" execution), which no frequency statistic
over word n-grams sees. On natural text the recipe is the published one; validate it there with the
hand-curated math_en lexicon or a mined one.

    res = validate_texts(task, texts, load_lexicon("countdown"))   # precision, recall, f1, baselines
    res = validate_workdir(workdir, entropy_model="base")          # writes roles_validation.json

Imports jax (the entropy forward pass); `rldyn.roles` itself does not import this module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import functools
import json
import math
import os
from typing import Any

import jax
import numpy as np

from rldyn import parallel
from rldyn.rl import step as step_lib
from rldyn.roles.ids import PLANNING, ROLE_NAMES
from rldyn.roles.lexicon import Lexicon, default_lexicon_name, lexicon_path, load_lexicon
from rldyn.roles.matcher import Matcher, planning_semantic_entropy
from rldyn.roles.mining import reference_traces
from rldyn.roles.taggers import tag_text
from rldyn.workdir import Workdir

ENTROPY_MODELS = ("base", "final", "none")  # which model scores the samples' entropies (none: skip)


def planning_prf(pred: Sequence[np.ndarray], truth: Sequence[np.ndarray]) -> dict[str, float]:
  """Token-level precision/recall/F1 of predicted planning against true planning."""
  p = np.concatenate([np.asarray(r) for r in pred]) == PLANNING if pred else np.zeros(0, bool)
  t = np.concatenate([np.asarray(r) for r in truth]) == PLANNING if truth else np.zeros(0, bool)
  if p.shape != t.shape:
    raise ValueError(f"role arrays differ in length: {p.shape} vs {t.shape}")
  tp = float((p & t).sum())
  prec = tp / p.sum() if p.sum() else float("nan")
  rec = tp / t.sum() if t.sum() else float("nan")
  f1 = 2 * prec * rec / (prec + rec) if prec + rec > 0 else float("nan")
  return {"precision": prec, "recall": rec, "f1": f1, "tokens": int(p.size),
          "planning_frac/pred": float(p.mean()) if p.size else float("nan"),
          "planning_frac/true": float(t.mean()) if t.size else float("nan")}


def high_entropy_planning_frac(entropies: Sequence[np.ndarray], roles: Sequence[np.ndarray],
                               top_frac: float = 0.2) -> float:
  """Fraction of the top `top_frac` highest-entropy tokens (pooled) whose role is planning.

  The top set is the ceil(top_frac * T) tokens of largest entropy (stable order breaks ties).
  """
  h = np.concatenate([np.asarray(e, np.float64) for e in entropies])
  r = np.concatenate([np.asarray(x) for x in roles])
  if h.shape != r.shape:
    raise ValueError(f"entropies and roles differ in length: {h.shape} vs {r.shape}")
  if not h.size:
    return float("nan")
  k = math.ceil(top_frac * h.size)
  top = np.argsort(-h, kind="stable")[:k]
  return float((r[top] == PLANNING).mean())


def validate_texts(task: Any, texts: Sequence[str], lexicon: Lexicon,
                   entropies: Sequence[np.ndarray] | None = None, top_frac: float = 0.2) -> dict:
  """Lexicon roles vs the task's structural roles over `texts` (responses), token level."""
  matcher = Matcher(lexicon)
  ids_list = [task.tokenizer.encode(t) for t in texts]
  truth = [np.asarray(task.token_roles(ids), np.int8) for ids in ids_list]
  pred = [tag_text(t, matcher, task.tokenizer)[1] for t in texts]
  out = {**planning_prf(pred, truth), "responses": len(texts),
         "semantic_entropy/planning": planning_semantic_entropy(texts, matcher)}
  conf = np.zeros((3, 3), np.int64)  # rows: structural role; cols: lexicon role
  for t, p in zip(truth, pred):
    np.add.at(conf, (t.astype(np.int64), p.astype(np.int64)), 1)
  # Chance levels over the structurally non-other tokens: tag all of them planning, or a random
  # subset as large as the lexicon's planning set (the placebo; its precision is the base rate).
  n_tok, n_true, n_pred = conf[1:].sum(), conf[1].sum(), conf[1:, 1].sum()
  base = n_true / n_tok if n_tok else float("nan")
  rec_placebo = min(n_pred / n_tok, 1.0) if n_tok else float("nan")
  out["baseline/all_planning_f1"] = 2 * base / (base + 1) if n_tok else float("nan")
  out["baseline/placebo_precision"] = base
  out["baseline/placebo_f1"] = (2 * base * rec_placebo / (base + rec_placebo)
                                if n_tok and base + rec_placebo > 0 else float("nan"))
  out["confusion"] = {"rows_structural_cols_lexicon": list(ROLE_NAMES),
                      "counts": conf.tolist()}
  if entropies is not None:
    out["high_entropy_planning_frac"] = high_entropy_planning_frac(entropies, truth, top_frac)
    out["high_entropy_lexicon_planning_frac"] = high_entropy_planning_frac(entropies, pred, top_frac)
    out["entropy_top_frac"] = top_frac
  return out


def response_entropy(model_cfg, temperature: float, params, tokens_BS, mask_BS, n: int):
  """Full-vocabulary entropy at the sampling temperature of the N response positions (float32 [B, N]).

  The RL step's own scoring (`rl.step.response_logp_entropy`), as training and replay use it.
  """
  return step_lib.response_logp_entropy(model_cfg, temperature, params, tokens_BS, mask_BS, n)[1]


def run_params(wd: Workdir, cfg: Any, which: str, mesh) -> dict:
  """The run's base params (which="base") or those of its last RL checkpoint (which="final")."""
  if which == "base":
    return wd.base_params(cfg.model, mesh)
  if which == "final":
    steps = wd.checkpoint_steps()
    if not steps:
      raise FileNotFoundError(f"{wd.root} has no RL checkpoints; use --entropy_model=base")
    return wd.checkpoint_params(steps[-1], cfg, mesh)
  raise ValueError(f"entropy model must be 'base' or 'final', got {which!r}")


def model_entropies(workdir: str, records: Sequence[Mapping[str, Any]], which: str = "base",
                    batch_size: int = 64) -> list[np.ndarray]:
  """Per-token entropy of each record's response under the run's base model or last RL checkpoint.

  One forward pass over [bos] + prompt + response (prompts left-padded, responses right-padded, fixed
  shapes), full-vocabulary entropy at the sampling temperature, float32 (`response_entropy`).
  """
  wd = Workdir(workdir)
  cfg, task = wd.load_config()
  mesh = parallel.make_mesh(parallel.MeshConfig(data=1, fsdp=1, tensor=1), devices=jax.devices()[:1])
  params = run_params(wd, cfg, which, mesh)
  tok = task.tokenizer
  prompts = [[tok.bos_id] + tok.encode(r["prompt"]) for r in records]
  responses = [tok.encode(r["response"]) for r in records]
  p_w = max(len(x) for x in prompts)
  n = max(1, max(len(x) for x in responses))
  score = jax.jit(functools.partial(response_entropy, cfg.model, cfg.sampling.temperature, n=n))
  out = []
  for start in range(0, len(records), batch_size):
    rows = list(range(start, min(start + batch_size, len(records))))
    tokens = np.full((batch_size, p_w + n), tok.pad_id, np.int32)
    mask = np.zeros((batch_size, p_w + n), bool)
    for b, i in enumerate(rows):
      p, r = prompts[i], responses[i]
      tokens[b, p_w - len(p):p_w], mask[b, p_w - len(p):p_w] = p, True
      tokens[b, p_w:p_w + len(r)], mask[b, p_w:p_w + len(r)] = r, True
    mask[len(rows):, p_w - 1] = True  # padding rows: one real token keeps the softmax finite
    h = np.asarray(jax.device_get(score(params, tokens, mask)))
    out += [h[b, :len(responses[i])] for b, i in enumerate(rows)]
  return out


def validate_workdir(workdir: str, lexicon: str = "", entropy_model: str = "base",
                     top_frac: float = 0.2) -> dict:
  """Writes and returns WORKDIR/roles_validation.json (see the module docstring).

  lexicon: a path or shipped name ("" = the task's default); entropy_model: one of ENTROPY_MODELS.
  """
  if entropy_model not in ENTROPY_MODELS:
    raise ValueError(f"unknown entropy model {entropy_model!r}; valid: {', '.join(ENTROPY_MODELS)}")
  wd = Workdir(workdir)
  _, task = wd.load_config()
  records = wd.read_samples()
  if not records:
    raise ValueError(f"{wd.samples_path} has no samples")
  lex_path = lexicon_path(lexicon or default_lexicon_name(task))
  lex = load_lexicon(lex_path)
  texts = [r["response"] for r in records]
  entropies = None if entropy_model == "none" else model_entropies(workdir, records, entropy_model)
  res = validate_texts(task, texts, lex, entropies, top_frac)
  res["correct_only"] = validate_texts(
      task, [r["response"] for r in records if r.get("correct")], lex)
  res.update({"lexicon": os.path.abspath(lex_path), "task": task.name,
              "entropy_model": entropy_model, "samples": wd.samples_path})
  write_report(res, wd.roles_validation_path)
  return res


def validate_reference_traces(task: Any, lexicon: str, num: int, seed: int,
                              correct_only: bool = True) -> dict:
  """validate_texts on `num` reference traces of `task` drawn with `seed` (see reference_traces)."""
  lex_path = lexicon_path(lexicon or default_lexicon_name(task))
  texts = [t for _, t in reference_traces(task, num, seed, correct_only=correct_only)]
  return {**validate_texts(task, texts, load_lexicon(lex_path)),
          "lexicon": os.path.abspath(lex_path), "task": task.name,
          "source": f"reference traces, seed {seed}"}


def write_report(res: Mapping[str, Any], path: str) -> None:
  """`res` as indented JSON, NaN and infinities written as null."""
  with open(path, "w") as f:
    json.dump(_finite(res), f, indent=1)


def _finite(x: Any) -> Any:
  if isinstance(x, float) and not math.isfinite(x):
    return None
  if isinstance(x, dict):
    return {k: _finite(v) for k, v in x.items()}
  if isinstance(x, list):
    return [_finite(v) for v in x]
  return x
