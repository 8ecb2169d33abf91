"""rldyn.replay end to end on a tiny RL run: contract files, paired sampling, incremental caching."""
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from rldyn import config as config_lib
from rldyn import launch
from rldyn.metrics import passk
from rldyn.metrics import strategy
from rldyn.replay import cache as cache_lib
from rldyn.replay import probe as probe_lib
from rldyn.replay import runner
from rldyn.tasks import evalsets
from rldyn.workdir import Workdir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPTS = runner.ReplayOptions(n=4, probe=6, batch_size=8, progress=False)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  """A 2-step RL run (checkpoints 1 and 2) whose random reward moves the weights."""
  workdir = str(tmp_path_factory.mktemp("replay_run"))
  c = config_lib.default()
  config_lib.shrink(c)
  c.task.data_dir = os.path.join(workdir, "tfds")
  c.pretrain.steps = 4
  c.rl.steps = 2
  c.checkpoint.every = 1
  c.eval.every = 2
  c.reward.name = "random"  # a reward the untrained base can earn, so RL changes the weights
  c.sampling.max_new_tokens = 16
  launch.run(c, workdir)
  return workdir


@pytest.fixture(scope="module")
def first(run_dir):
  return runner.replay(run_dir, OPTS)


def test_first_replay_writes_the_contract(run_dir, first):
  assert first.computed == [0, 1, 2]
  out = os.path.join(run_dir, "replay")
  for name in ("replay.jsonl", "passk.json", "sparsity.json", "report.md", "passk.png", "entropy.png",
               "sparsity.png"):
    assert os.path.getsize(os.path.join(out, name)) > 0, name
  with open(os.path.join(out, "passk.json")) as f:
    pk = json.load(f)
  assert [e["step"] for e in pk["checkpoints"]] == [0, 1, 2]
  for e in pk["checkpoints"]:
    assert e["n"] == 4 and e["k"] == [1, 2, 4] and len(e["per_problem_correct"]) == 6
    recomputed = passk.pass_at_k_curve(e["n"], e["per_problem_correct"], e["k"])
    np.testing.assert_allclose(e["pass_at_k"], [recomputed[k] for k in e["k"]], atol=1e-12)
  assert {"crossover_k", "delta_se", "solvable", "ppl_base_on_this"} <= set(pk["checkpoints"][1]["vs_base"])
  # Nothing recompiles across models: one sampler and one scorer compilation for the whole replay
  # (the sampler's may already exist from the trainer in this process).
  assert first.compiled["sample"] <= 1 and first.compiled["score"] == 1


def test_weights_and_probe_statistics_are_sane(run_dir, first):
  with open(os.path.join(run_dir, "replay", "sparsity.json")) as f:
    sp = json.load(f)
  assert [c["step"] for c in sp["checkpoints"]] == [1, 2]
  last = sp["checkpoints"][-1]
  # Adam moves every weight a little: dense in fp32, while bf16 hides the sub-resolution moves.
  assert last["sparsity"]["fp32"]["0"] < 0.5
  assert last["sparsity"]["bf16"]["0"] > last["sparsity"]["fp32"]["0"]
  assert last["per_matrix"]["layers/0/self_attn/q_proj/kernel"]["full"] == 32  # [E, H·D] = [32, 32]
  base, ck = first.records[0]["probe"], first.records[2]["probe"]
  assert base["kl/k3"] == 0.0 and ck["kl/k3"] > 0.0  # the base against itself; a moved policy
  assert base["ppl/base_on_this"] == pytest.approx(base["ppl/self"])
  for p in (base, ck):
    assert 0.0 <= p["accuracy"] <= 1.0 and p["entropy/all"] > 0
    assert p["tokens/planning_frac"] + p["tokens/execution_frac"] <= 1.0 + 1e-9
    assert 1.0 <= p["strategy/distinct_per_prompt"] <= 4 and 0.0 <= p["strategy/distinct_correct_per_prompt"] <= 4
  report = open(os.path.join(run_dir, "replay", "report.md")).read()
  for section in ("## In short", "## Capability boundary", "## Probe dynamics", "## Weights",
                  "![pass@k curves](passk.png)"):
    assert section in report


def test_rerun_computes_nothing(run_dir, first, monkeypatch):
  def boom(*a, **k):
    raise AssertionError("a fully cached replay must not load models")
  monkeypatch.setattr(runner, "_Models", boom)
  again = runner.replay(run_dir, OPTS)
  assert again.computed == [] and sorted(again.records) == [0, 1, 2]
  assert again.records == first.records


def test_only_missing_checkpoints_are_recomputed_identically(run_dir, first, monkeypatch):
  path = os.path.join(run_dir, "replay", "replay.jsonl")
  lines = open(path).read().splitlines()
  kept = [ln for ln in lines if json.loads(ln).get("step") != 2]
  with open(path, "w") as f:  # as if checkpoint 2 had appeared after the last replay
    f.write("\n".join(kept) + "\n")
  calls = []
  original = runner._Models.record
  sample_calls = []
  original_sample = runner.probe_lib.Prober.sample

  def counting(self, step, params, progress):
    calls.append(step)
    return original(self, step, params, progress)

  def counting_sample(self, params, progress=None):
    sample_calls.append(1)
    return original_sample(self, params, progress)

  monkeypatch.setattr(runner._Models, "record", counting)
  monkeypatch.setattr(runner.probe_lib.Prober, "sample", counting_sample)
  again = runner.replay(run_dir, OPTS)
  assert calls == [2] and again.computed == [2]
  assert len(sample_calls) == 1  # the base's samples came from base_samples.npz, not resampled
  # Same prompts, same keys: the recomputed record equals the first one (timings aside).
  strip = lambda r: {k: v for k, v in r.items() if k != "time_s"}  # noqa: E731
  assert strip(again.records[2]) == strip(first.records[2])


def test_compare_with_itself_overlaps_fully(run_dir, first):
  res = runner.replay(run_dir, dataclasses.replace(OPTS, compare=run_dir))
  assert res.computed == [] and res.compared == [1, 2]
  ov = res.comparisons[2]["overlap"]["0"]
  assert res.comparisons[2]["same_base"]
  assert ov["overlap"] == 1.0 and ov["random"] == pytest.approx(ov["density_1"])
  with open(os.path.join(run_dir, "replay", "sparsity.json")) as f:
    assert json.load(f)["compare"]["steps"][0]["step"] == 1


def test_cli_rerun_is_cached(run_dir, first):
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=8")
  proc = subprocess.run(
      [sys.executable, "-m", "rldyn.replay", f"--workdir={run_dir}", "--n=4", "--probe=6",
       "--batch_size=8", "--noprogress", "--k=1,4"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "computed none" in proc.stdout
  with open(os.path.join(run_dir, "replay", "passk.json")) as f:
    assert json.load(f)["k"] == [1, 4]
  proc = subprocess.run(  # a budget the model cannot hold: one line, exit 2, nothing written
      [sys.executable, "-m", "rldyn.replay", f"--workdir={run_dir}", "--max_new_tokens=10000"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2 and "rldyn: error: sampling.max_new_tokens=10000" in proc.stderr, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr


def test_cache_ignores_other_settings(tmp_path):
  path = str(tmp_path / "replay.jsonl")
  a = cache_lib.ReplayCache(path, {"n": 4})
  a.append({"kind": "checkpoint", "step": 0, "x": float("nan")})
  b = cache_lib.ReplayCache(path, {"n": 8})
  assert b.checkpoints() == {} and b.stale() == 1
  assert a.checkpoints()[0]["x"] is None  # NaN stored as null


def test_options_validate():
  with pytest.raises(ValueError):
    runner.ReplayOptions(n=4, ks=(8,))
  with pytest.raises(ValueError):
    runner.ReplayOptions(steps=(0,))
  assert runner.ReplayOptions(n=100).k_grid() == [1, 2, 4, 8, 16, 32, 64, 100]
  assert runner.parse_ints("all") is None and runner.parse_ints("2, 4") == (2, 4)


def test_length_bucketed_scoring_matches_the_sampler(run_dir):
  """Teacher-forced log-probs (rows sorted by length, batches cut to a few widths) equal the sampler's."""
  from rldyn.tasks import evalsets  # pylint: disable=g-import-not-at-top
  from rldyn.workdir import Workdir  # pylint: disable=g-import-not-at-top
  cfg, task = Workdir(run_dir).load_config()
  cfg = dataclasses.replace(cfg, sampling=dataclasses.replace(cfg.sampling, max_new_tokens=48))
  mesh = runner.make_mesh(cfg)
  problems = evalsets.load_eval_set(task, 4, 1, cfg.task.data_dir)
  prober = runner.probe_lib.Prober(cfg, task, problems, 4, mesh, batch_size=8, seed=0)
  assert prober.score_widths == [16, 32, 48]
  params = Workdir(run_dir).base_params(cfg.model, mesh)
  s = prober.sample(params)
  # Cut the responses to lengths spread over every width (a prefix keeps its log-probs), so the sorted
  # batches land in several widths whatever lengths this tiny model happened to sample.
  cut = np.minimum(s.length_R, 2 + 3 * np.arange(len(s.length_R)))
  mask = s.mask_RN & (np.arange(s.mask_RN.shape[1])[None] < cut[:, None])
  tokens = np.where(mask, s.tokens_RN, 0)
  assert len(set(cut.tolist())) > 2
  logp = prober.score(params, tokens, mask)
  np.testing.assert_allclose(logp[mask], s.logp_RN[mask], atol=2e-4)
  assert (logp[~mask] == 0).all()
  assert prober.compiled_variants()["score"] == len(prober._scorers) > 1
  # The probe's strategy metrics are the loop's (rldyn.metrics.strategy), per problem over its n samples.
  ids = [s.tokens_RN[i, :n].tolist() for i, n in enumerate(s.length_R)]
  want = strategy.step_strategy_metrics(task, None, ids, s.texts, s.roles_RN, s.correct_R, 4)
  assert set(strategy.KEYS) <= set(s.strategy)
  for k in strategy.KEYS:
    np.testing.assert_equal(s.strategy[k], want[k])


def test_probe_stats_match_a_hand_computation():
  """Role-split means, k3 and cross perplexities of probe_stats on a 2-row example computed by hand."""
  m = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool)
  roles = np.array([[1, 2, 0, 0], [2, 2, 0, 0]], np.int8)
  logp = np.log(np.array([[0.5, 0.25, 0.5, 1.0], [0.5, 0.5, 1.0, 1.0]]))
  ent = np.array([[1.0, 2.0, 3.0, 9.0], [4.0, 6.0, 9.0, 9.0]], np.float32)
  base_logp = logp - 0.1  # d = log π − log π_base = 0.1 on every token
  s = runner.probe_lib.ProbeSamples(
      tokens_RN=np.zeros((2, 4), np.int32), mask_RN=m, logp_RN=logp.astype(np.float32), entropy_RN=ent,
      length_R=np.array([3, 2]), truncated_R=np.array([False, True]), correct_R=np.array([True, False]),
      roles_RN=roles, units=[(1,), (1,), (2,)], texts=["a", "b"])
  out = runner.probe_lib.probe_stats(s, base_logp, logp, m)
  assert out["accuracy"] == 0.5 and out["response_len/truncated_frac"] == 0.5
  assert out["entropy/all"] == pytest.approx((1 + 2 + 3 + 4 + 6) / 5)
  assert out["entropy/planning"] == pytest.approx(1.0)
  assert out["entropy/execution"] == pytest.approx((2 + 4 + 6) / 3)
  nll = -np.log([0.5, 0.25, 0.5, 0.5, 0.5])
  assert out["nll/all"] == pytest.approx(nll.mean(), rel=1e-6)
  assert out["nll/execution"] == pytest.approx(nll[[1, 3, 4]].mean(), rel=1e-6)
  k3 = np.exp(-0.1) + 0.1 - 1
  assert out["kl/k3"] == pytest.approx(k3, rel=1e-5) and out["kl/k3/planning"] == pytest.approx(k3, rel=1e-5)
  assert out["tokens/planning_frac"] == pytest.approx(1 / 5) and out["tokens/execution_frac"] == pytest.approx(3 / 5)
  assert out["ppl/base_on_this"] == pytest.approx(np.exp(nll.mean() + 0.1), rel=1e-5)
  assert out["ppl/self"] == pytest.approx(np.exp(nll.mean()), rel=1e-6)
  assert out["semantic_entropy/planning"] == pytest.approx(-(2 / 3 * np.log(2 / 3) + 1 / 3 * np.log(1 / 3)))


def test_another_generation_budget_writes_beside_the_runs_replay(run_dir, first):
  """--max_new_tokens: the same probe at another budget, in replay/max_new_tokens_N/, the run's own
  replay untouched; a budget that does not fit the model is refused before anything is sampled."""
  own = os.path.join(run_dir, "replay", "replay.jsonl")
  before = open(own).read()
  res = runner.replay(run_dir, dataclasses.replace(OPTS, max_new_tokens=24, steps=(2,), plots=False))
  assert res.out_dir == os.path.join(run_dir, "replay", "max_new_tokens_24")
  assert res.computed == [0, 2] and open(own).read() == before
  lines = [json.loads(ln) for ln in open(os.path.join(res.out_dir, "replay.jsonl"))]
  assert {ln["settings"]["sampling"]["max_new_tokens"] for ln in lines} == {24}
  assert os.path.exists(os.path.join(res.out_dir, "base_samples.npz"))
  for step in (0, 2):  # the run's budget was 16: the longer one lets responses run past it
    assert res.records[step]["probe"]["response_len/mean"] <= 24
  assert max(res.records[s]["probe"]["response_len/mean"] for s in (0, 2)) > 16
  assert runner.replay(run_dir, dataclasses.replace(OPTS, max_new_tokens=16)).out_dir == \
      os.path.join(run_dir, "replay")  # the run's own budget is the run's own replay
  with pytest.raises(config_lib.ConfigError, match=r"\(at most 240 new tokens\)"):  # max_seq_len 256 - 16
    runner.replay(run_dir, dataclasses.replace(OPTS, max_new_tokens=10_000))
  assert not os.path.exists(os.path.join(run_dir, "replay", "max_new_tokens_10000"))
  # The exact check, on the probe's padded prompts (16 tokens here): 16 + 30 > 40.
  cfg, task = Workdir(run_dir).load_config()
  short = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, max_seq_len=40),
                              sampling=dataclasses.replace(cfg.sampling, max_new_tokens=30))
  with pytest.raises(config_lib.ConfigError, match="at most 24 new tokens fit"):
    probe_lib.Prober(short, task, evalsets.generate_eval_problems(task, 6, 1), 4, runner.make_mesh(cfg), 8, 0)
  with pytest.raises(ValueError):
    runner.ReplayOptions(max_new_tokens=0)
