"""VeriFree wired into the RL loop (loss.objective = verifree): patched rows by hand, the launch checks, and a
3-step smoke run whose logged reward is π_θ(y*|q,z) recomputed by a plain decoder forward, whose first
update equals a hand-built `verifree.surrogate` update, and which resumes exactly."""

import dataclasses
import functools
import importlib
import math
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rldyn import launch
from rldyn import model as model_lib
from rldyn import parallel
from rldyn import sampling
from rldyn.metrics.writers import read_jsonl
from rldyn.optim import make_optimizer
from rldyn.rl import rollout as rollout_lib
from rldyn.rl import verifree as V
from rldyn.rl.emit import TIMING_KEYS
from rldyn.tasks import make_task
from rldyn.workdir import Workdir


def _config(base, **overrides):
  c = importlib.import_module("experiments.verifree").get_config("verifree,smoke")
  c.base_workdir = base
  for k, v in overrides.items():
    section, key = k.split("__")
    c[section][key] = v
  return c


# ---- host pieces ---------------------------------------------------------------------------------------

def test_patch_rows_by_hand():
  """z = the response up to and including its first marker (7), then the answer; no marker: z = all."""
  prompt = np.array([[0, 3, 4], [5, 6, 4]], np.int32)
  pmask = np.array([[False, True, True], [True, True, True]])
  out = V.patch_rows(prompt, pmask, [[9, 7, 8, 7, 2], [9, 9]], [7], [[11, 12, 2], [13, 2]], width=6, pad_id=0)
  np.testing.assert_array_equal(out["tokens_BS"], [[0, 3, 4, 9, 7, 11, 12, 2, 0], [5, 6, 4, 9, 9, 0, 0, 0, 0]])
  np.testing.assert_array_equal(out["mask_BS"], [[0, 1, 1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0, 0, 0, 0]])
  np.testing.assert_array_equal(out["reason_mask_BM"], [[1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0]])
  np.testing.assert_array_equal(out["answer_mask_BM"], [[0, 0, 1, 1, 1, 0], [0, 0, 0, 0, 0, 0]])
  assert out["has_marker_B"].tolist() == [True, False] and out["z_len_B"].tolist() == [2, 2]
  with pytest.raises(ValueError, match="exceed the patched width 4"):
    V.patch_rows(prompt, pmask, [[9, 7], [9]], [7], [[11, 12, 2], [2]], width=4, pad_id=0)
  assert V.answer_width([[1] * 16]) == 16 and V.answer_width([[1] * 17, [1]]) == 32


@pytest.mark.parametrize("name", ["countdown", "arithmetic"])
def test_answer_ids_follow_the_marker_token_safely(name):
  task = make_task(name)
  p = task.sample_problem(np.random.default_rng(3))
  tok = task.tokenizer
  assert V.marker_ids(task) == [tok.token_to_id("answer")]
  ids = V.answer_ids(task, p)
  assert ids[-1] == tok.eos_id and V.marker_ids(task) + ids[:-1] == tok.encode("answer " + p.answer)
  assert task.verify(p, tok.decode(V.marker_ids(task) + ids))  # the appended answer is a correct one
  with pytest.raises(ValueError, match="reference answer"):
    V.answer_ids(task, dataclasses.replace(p, answer=""))


def test_launch_refuses_what_verifree_cannot_run(smoke_base, tmp_path):
  launch.prepare(_config(smoke_base), str(tmp_path / "ok"))
  for key, value, match in [("rl__updates_per_batch", 2, r"rl.updates_per_batch=2 \(needs 1\)"),
                            ("rl__dynamic_sampling", True, "rl.dynamic_sampling=True"),
                            ("advantage__name", "grpo", "advantage.name='grpo' .needs 'rloo'"),
                            ("loss__name", "clipped", "loss.name='clipped'"),
                            ("loss__kl_coef", 0.01, "loss.kl_coef=0.01"),
                            ("reward__name", "random", "reward.name='random'"),
                            ("loss__objective", "sft", "valid: pg, verifree")]:
    with pytest.raises(launch.ConfigError, match=match):
      launch.prepare(_config(smoke_base, **{key: value}), str(tmp_path / key))
  cfg, _ = launch.make_config(_config(smoke_base))
  with pytest.raises(ValueError, match="task 'textmath' has none; valid tasks: arithmetic, countdown"):
    V.check_config(dataclasses.replace(cfg, task=dataclasses.replace(cfg.task, name="textmath")))
  with pytest.raises(ValueError, match="group_size >= 2"):
    V.check_config(dataclasses.replace(cfg, rl=dataclasses.replace(cfg.rl, group_size=1)))


# ---- the loop ------------------------------------------------------------------------------------------

STEPS = 3


@pytest.fixture(scope="module")
def vf_run(smoke_base, tmp_path_factory):
  d = str(tmp_path_factory.mktemp("verifree"))
  launch.run(_config(smoke_base, rl__steps=STEPS, checkpoint__every=1, log__samples=32), d)
  return d


def _padded(rows, pad_id):
  """Unpadded rows -> (tokens, mask), right-padded to the longest."""
  width = max(map(len, rows))
  tokens = np.array([r + [pad_id] * (width - len(r)) for r in rows], np.int32)
  return tokens, np.arange(width)[None] < np.array([len(r) for r in rows])[:, None]


def _plain_logp(cfg, params, tokens, mask):
  """log π(tokens[:, t+1] | tokens[:, :t+1]) ([B, T-1]) by a plain full forward of the decoder (no cache,
  no chunking; right-padded rows, so positions are 0, 1, ...)."""
  t = jnp.asarray(tokens)
  logits, _ = model_lib.apply(cfg.model, params, t, jnp.broadcast_to(jnp.arange(t.shape[1]), t.shape),
                              model_lib.causal_mask(jnp.asarray(mask)))
  lp = jax.nn.log_softmax(logits[:, :-1] / cfg.sampling.temperature, axis=-1)
  return jnp.take_along_axis(lp, t[:, 1:, None], axis=-1)[..., 0]


def test_run_logs_verifree_and_accuracy(vf_run):
  rows = read_jsonl(os.path.join(vf_run, "metrics.jsonl"))
  assert [r["step"] for r in rows] == list(range(STEPS))
  for r in rows:
    for k in ("accuracy", "verifree/reward", "verifree/marker_frac", "verifree/answer_nll", "loss/answer",
              "entropy/planning", "entropy/execution", "kl/k3", "clip_frac"):
      assert k in r and math.isfinite(r[k]), k
    assert r["reward/mean"] == r["verifree/reward"] and r["clip_frac"] == 0.0
    assert 0 < r["verifree/marker_frac"] <= 1 and r["sampler/logp_diff_max"] < 1e-4
    assert math.isclose(r["loss/total"], r["loss/pg"] + r["loss/answer"], rel_tol=1e-5, abs_tol=1e-9)
  assert rows[-1]["update_norm"] > 0


def _resample(wd, step):
  """(cfg, task, params, rollout) of RL step `step` re-sampled with the run's key from the params it ran with
  (the base at 0, else checkpoint `step`): the same token ids the loop had."""
  cfg, task = wd.load_config()
  mesh = parallel.make_mesh(cfg.mesh)
  params = wd.base_params(cfg.model, mesh) if step == 0 else wd.checkpoint_params(step, cfg, mesh)
  ro = rollout_lib.rollout(cfg, task, mesh, sampling.make_sampler(cfg.model, cfg.sampling), params,
                           jax.random.key(cfg.seed), step)
  return cfg, task, jax.device_get(params), ro


def test_logged_reward_is_the_reference_answer_probability(vf_run):
  """Every row of step 1: R = exp(Σ log π(y*, eos | q, z)) by a plain forward of the checkpoint-1 policy on
  bos + prompt + z (the response cut after its first `answer`) + y* + eos; no marker: exactly 0."""
  cfg, task, params, ro = _resample(Workdir(vf_run), 1)
  samples = [s for s in read_jsonl(os.path.join(vf_run, "samples", "samples.jsonl")) if s["step"] == 1]
  assert [s["response"] for s in samples] == ro.texts  # every row, in row order
  tok, marker = task.tokenizer, task.tokenizer.token_to_id("answer")
  rows, spans = [], []
  for p, ids in zip(ro.problems, ro.ids):
    z = ids[:ids.index(marker) + 1] if marker in ids else ids
    prefix, answer = task.prompt_ids(p) + z, tok.encode(p.answer) + [tok.eos_id]
    rows.append(prefix + answer)
    spans.append((len(prefix) - 1, len(answer)) if marker in ids else None)
  logp = np.asarray(jax.jit(functools.partial(_plain_logp, cfg))(params, *_padded(rows, tok.pad_id)), np.float64)
  for s, span, lp in zip(samples, spans, logp):
    if span is None:
      assert s["reward"] == 0.0
    else:
      np.testing.assert_allclose(s["reward"], np.exp(lp[span[0]:span[0] + span[1]].sum()), rtol=2e-4, atol=1e-12)
  assert sum(x is not None for x in spans) >= 4


def test_first_update_equals_a_manual_surrogate_update(vf_run):
  """Step 0 by hand: the same rollout (re-sampled from the base with the run's key), rows bos + prompt + z +
  y* + eos right-padded, R and RLOO A from a plain forward, jax.grad of `verifree.surrogate`, one AdamW
  step: the parameters of checkpoint 1."""
  wd = Workdir(vf_run)
  cfg, task, params0, ro = _resample(wd, 0)
  tok, marker = task.tokenizer, task.tokenizer.token_to_id("answer")
  rows, zs, ans = [], [], []
  for p, ids in zip(ro.problems, ro.ids):
    z = ids[:ids.index(marker) + 1] if marker in ids else ids
    a = tok.encode(p.answer) + [tok.eos_id] if marker in ids else []
    prompt = task.prompt_ids(p)
    rows.append(prompt + z + a)
    zs.append((len(prompt), len(z)))
    ans.append(len(a))
  tokens, mask = _padded(rows, tok.pad_id)
  reason = np.zeros((len(rows), tokens.shape[1] - 1), np.float32)  # position t predicts token t + 1
  answer = np.zeros_like(reason)
  for i, ((p, z), a) in enumerate(zip(zs, ans)):
    reason[i, p - 1:p - 1 + z] = 1.0
    answer[i, p - 1 + z:p - 1 + z + a] = 1.0
  logp_fn = jax.jit(lambda params: _plain_logp(cfg, params, tokens, mask))
  lp0 = np.asarray(logp_fn(params0), np.float64)
  r = np.where(answer.sum(1) > 0, np.exp((lp0 * answer).sum(1)), 0.0).astype(np.float32)
  g = cfg.rl.group_size
  rg = r.reshape(-1, g)
  adv = (rg - (rg.sum(1, keepdims=True) - rg) / (g - 1)).reshape(-1).astype(np.float32)
  assert answer.sum() > 0 and np.abs(adv).max() > 0
  grads = jax.jit(jax.grad(lambda p: V.surrogate(logp_fn(p), reason, logp_fn(p), answer, adv, r,
                                                 cfg.sampling.max_new_tokens)))(params0)
  tx = make_optimizer(cfg.rl.optim, cfg.rl.steps)
  upd, _ = tx.update(grads, tx.init(params0), params0)
  manual = optax.apply_updates(params0, upd)
  loop1 = jax.device_get(wd.checkpoint_params(1, cfg, parallel.make_mesh(cfg.mesh)))
  moved = [float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in
           zip(jax.tree.leaves(loop1), jax.tree.leaves(params0))]
  assert max(moved) > 1e-5  # the update did move the policy
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-6), manual, loop1)


def test_resume_is_exact(vf_run, smoke_base, tmp_path):
  """Drop checkpoints after step 1 and rerun: the replayed steps write the same lines and samples (R)."""
  d = str(tmp_path / "run")
  shutil.copytree(vf_run, d)
  strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]  # noqa: E731
  before = strip(read_jsonl(os.path.join(d, "metrics.jsonl")))
  samples = read_jsonl(os.path.join(d, "samples", "samples.jsonl"))
  ck = os.path.join(d, "checkpoints")
  for name in os.listdir(ck):
    if name.isdigit() and int(name) > 1:
      shutil.rmtree(os.path.join(ck, name))
  launch.run(_config(smoke_base, rl__steps=STEPS, checkpoint__every=1, log__samples=32), d)
  assert [e["step"] for e in read_jsonl(os.path.join(d, "events.jsonl")) if e["event"] == "run_resume"] == [1]
  assert strip(read_jsonl(os.path.join(d, "metrics.jsonl"))) == before
  assert read_jsonl(os.path.join(d, "samples", "samples.jsonl")) == samples  # R of every row replayed


def test_micro_batches_give_the_same_step(vf_run, smoke_base, tmp_path):
  """rl.micro_batches = 2 splits VeriFree's update (rows weigh equally): step 0's line as with one."""
  d = str(tmp_path / "micro")
  launch.run(_config(smoke_base, rl__steps=1, rl__micro_batches=2), d)
  a = read_jsonl(os.path.join(vf_run, "metrics.jsonl"))[0]
  b = read_jsonl(os.path.join(d, "metrics.jsonl"))[0]
  assert a["verifree/reward"] == b["verifree/reward"] and a["accuracy"] == b["accuracy"]  # same samples
  for k in a:
    if k in TIMING_KEYS:
      continue
    if a[k] is None:  # a metric with nothing to measure is null in both
      assert b[k] is None, k
    else:
      assert math.isclose(a[k], b[k], rel_tol=2e-3, abs_tol=2e-5), (k, a[k], b[k])
