"""`make demo`'s entry point, run as a user runs it (smoke size): table, phase verdict, files."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_cli_smoke(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="",
             JAX_COMPILATION_CACHE_DIR=os.path.join(ROOT, ".jax_cache"))
  workdir = str(tmp_path / "demo")
  out = subprocess.run([sys.executable, "-m", "rldyn.demo", f"--workdir={workdir}", "--variant=smoke"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  from rldyn import demo  # pylint: disable=g-import-not-at-top
  devices = demo.auto_cpu_devices(demo.usable_cores())
  assert f"[rldyn] {devices} cpu device(s)" in out.stdout + out.stderr  # one device per core (auto)
  assert "greedy accuracy" in out.stdout and "sampled pass@1" in out.stdout
  assert "H(execution)" in out.stdout and "Phase detector" in out.stdout
  phases = json.load(open(os.path.join(workdir, "phases.json")))
  assert set(phases) >= {"detected", "boundary_step", "ci", "confidence", "signals", "reason"}
  assert phases["reason"]
  for name in ("config.json", "metrics.jsonl", "eval.jsonl", "events.jsonl", "base/info.json"):
    assert os.path.exists(os.path.join(workdir, name)), name


def test_demo_splits_its_batches_over_one_cpu_device_per_core():
  from rldyn import demo  # pylint: disable=g-import-not-at-top
  assert [demo.auto_cpu_devices(c) for c in (1, 2, 3, 4, 6, 8, 12, 64)] == [1, 2, 2, 4, 4, 8, 8, 8]
  with pytest.raises(ValueError, match="--cpu_devices must be -1"):
    demo.set_cpu_devices(0)


def _stream_problems(easy_fraction, seed=3, batches=6):
  """Number counts of the problems packed into `batches` pretraining batches of the default world."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from rldyn import config as config_lib, launch, pretrain  # pylint: disable=g-import-not-at-top
  c = config_lib.default()
  c.pretrain.easy_fraction = easy_fraction
  cfg, task = launch.make_config(c)
  stream = pretrain.TraceStream(task, seed, 16, 192, 0, easy=pretrain.easy_task(cfg))
  out = [stream.make(i) for i in range(batches)]
  stream.close()
  counts = []
  sep, target = task.tokenizer.token_to_id(","), task.tokenizer.token_to_id("target")
  for b in out:
    for row, seg in zip(b["tokens"], b["segment"]):
      for s in range(1, seg.max() + 1):
        ids = row[seg == s].tolist()
        counts.append(ids[:ids.index(target)].count(sep) + 1)
  return out, np.array(counts)


def test_pretraining_mixes_two_number_problems():
  """pretrain.easy_fraction of the problems come from the 2-number world; 0 leaves the stream as it was."""
  from rldyn import config as config_lib  # pylint: disable=g-import-not-at-top
  assert config_lib.default().pretrain.easy_fraction == 0.0  # off in the default study
  _, counts = _stream_problems(0.25)
  assert set(counts.tolist()) == {2, 3}
  assert 0.15 < (counts == 2).mean() < 0.45  # 25% of problems, packed (2-number traces are shorter)
  plain, counts0 = _stream_problems(0.0)
  assert set(counts0.tolist()) == {3}
  from rldyn import launch, pretrain  # pylint: disable=g-import-not-at-top
  _, task = launch.make_config(config_lib.default())
  stream = pretrain.TraceStream(task, 3, 16, 192, 0)  # no `easy`: the stream before issue #16
  for i, b in enumerate(plain):
    assert all((b[k] == stream.make(i)[k]).all() for k in b)
  stream.close()


def test_easy_options_errors_name_the_fix():
  import pytest  # pylint: disable=g-import-not-at-top
  from rldyn import config as config_lib, launch, pretrain  # pylint: disable=g-import-not-at-top
  c = config_lib.default()
  c.pretrain.easy_fraction = 1.5
  with pytest.raises(config_lib.ConfigError, match=r"easy_fraction is a probability"):
    launch.make_config(c)
  c = config_lib.default()
  c.pretrain.easy_fraction = 0.25
  c.pretrain.easy_options = {"num_cont": 2}
  cfg, _ = launch.make_config(c)
  with pytest.raises(ValueError, match=r"easy_fraction=0"):
    pretrain.easy_task(cfg)
  with pytest.raises(config_lib.ConfigError, match=r"easy_options.*easy_fraction=0"):
    launch.prepare(c, "/tmp/never-written")  # refused before anything is written
  assert not os.path.exists("/tmp/never-written")


def test_decision_tokens_weigh_more_and_the_loss_is_their_weighted_mean():
  """pretrain.decision_weight multiplies loss_mask where the next token is `goal` or `no`; 1 changes nothing;
  the loss is sum(w * nll) / sum(w), checked by hand on a 2-token vocabulary slice."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from rldyn import config as config_lib, launch, pretrain  # pylint: disable=g-import-not-at-top
  _, task = launch.make_config(config_lib.default())
  plain = pretrain.TraceStream(task, 3, 16, 192, 0)
  heavy = pretrain.TraceStream(task, 3, 16, 192, 0, decision_weight=5.0)
  a, b = plain.make(0), heavy.make(0)
  plain.close()
  heavy.close()
  assert (a["tokens"] == b["tokens"]).all() and set(np.unique(a["loss_mask"])) == {0.0, 1.0}
  ids = [task.tokenizer.token_to_id(w) for w in ("goal", "no")]
  judged = np.zeros_like(a["loss_mask"], bool)
  judged[:, :-1] = np.isin(a["tokens"][:, 1:], ids)
  judged &= a["loss_mask"] > 0
  assert judged.sum() > 0
  np.testing.assert_array_equal(b["loss_mask"], np.where(judged, 5.0, a["loss_mask"]))
  with pytest.raises(config_lib.ConfigError, match="decision_weight must be > 0"):
    c = config_lib.default()
    c.pretrain.decision_weight = 0.0
    launch.make_config(c)
  # The loss is the weighted mean of the NLL, and the token count ignores the weights.
  cfg, _ = launch.make_config(config_lib.default())
  import jax  # pylint: disable=g-import-not-at-top
  from rldyn import model as model_lib  # pylint: disable=g-import-not-at-top
  params = model_lib.init_params(cfg.model, jax.random.key(0))
  batch = {k: jnp.asarray(v[:2, :48]) for k, v in b.items()}
  loss, n = pretrain.cross_entropy(cfg.model, params, batch)
  logits, _ = model_lib.apply(cfg.model, params, batch["tokens"],
                              model_lib.segment_positions(batch["segment"]),
                              model_lib.segment_mask(batch["segment"]))
  logp = np.asarray(jax.nn.log_softmax(logits[:, :-1], axis=-1), np.float64)
  tok = np.asarray(batch["tokens"])[:, 1:]
  nll = -np.take_along_axis(logp, tok[..., None], axis=-1)[..., 0]
  w = np.asarray(batch["loss_mask"])[:, :-1]
  np.testing.assert_allclose(float(loss), (nll * w).sum() / w.sum(), rtol=1e-5)
  assert float(n) == (w > 0).sum()


def test_summary_table_by_hand(tmp_path):
  """Base -> final from eval.jsonl, and the trajectory rows; a `gave up` column only when the log has it."""
  from rldyn import summary  # pylint: disable=g-import-not-at-top
  from rldyn.workdir import Workdir  # pylint: disable=g-import-not-at-top

  def write(path, rows):
    with open(path, "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in rows)

  wd = Workdir(str(tmp_path))
  write(wd.eval_path, [{"step": 0, "eval/accuracy": 0.5, "eval/pass@1": 0.25},
                       {"step": 2, "eval/accuracy": 0.625, "eval/pass@1": 0.5}])
  rows = [{"step": i, "accuracy": 0.5, "entropy/execution": 0.25, "entropy/planning": 0.125,
           "strategy/entropy": 1.5, "procedure/gave_up_rate": g} for i, g in enumerate([0.5, 0.25, 0.0])]
  write(wd.metrics_path, rows)
  lines = summary.table(wd, points=3).splitlines()
  assert lines[0].startswith("held-out (0 -> 2 RL steps)")
  assert lines[1].split() == ["greedy", "accuracy", "0.500", "0.625", "+0.125"]
  assert lines[2].split() == ["sampled", "pass@1", "0.250", "0.500", "+0.250"]
  assert lines[4].split()[-2:] == ["gave", "up"]
  assert [ln.split() for ln in lines[5:]] == [[str(i), "0.500", "0.250", "0.125", "1.500", f"{g:.3f}"]
                                               for i, g in enumerate([0.5, 0.25, 0.0])]
  write(wd.metrics_path, [{k: v for k, v in r.items() if k != "procedure/gave_up_rate"} for r in rows])
  lines = summary.table(wd, points=3).splitlines()
  assert "gave up" not in lines[4] and len(lines[5].split()) == 5  # arithmetic, text tasks: no column
