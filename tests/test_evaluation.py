"""Held-out evaluation: which sampling config each half of `evaluation.evaluate` uses."""
import dataclasses

import jax
import numpy as np

from rldyn import config as config_lib
from rldyn import evaluation
from rldyn import sampling
from rldyn.rl import loop


class _Task:
  def verify(self, problem, text):
    return text == "right"


def _record(calls):
  def fake_generate(model_cfg, scfg, params, task, problems, key, samples=1):
    calls.append((scfg, samples))
    n = len(problems) * samples
    return list(range(n)), ["right" if i % 2 == 0 else "wrong" for i in range(n)], None
  return fake_generate


def test_eval_temperature_applies_to_the_sampled_half_only(monkeypatch):
  calls = []
  monkeypatch.setattr(evaluation, "generate_texts", _record(calls))
  scfg = sampling.SamplingConfig(temperature=0.7)
  problems = [0, 1, 2, 3]
  with monkeypatch.context() as m:
    m.setattr(evaluation.parallel, "allgather", lambda x: np.asarray(x))
    out = evaluation.evaluate(None, scfg, None, _Task(), problems, jax.random.key(0), 2, temperature=1.0)
    evaluation.evaluate(None, scfg, None, _Task(), problems, jax.random.key(0), 2)
  (greedy, g_n), (sampled, s_n), (greedy2, _), (sampled2, _) = calls
  assert greedy.greedy and greedy == greedy2 and g_n == 1
  assert sampled == dataclasses.replace(scfg, temperature=1.0) and not sampled.greedy and s_n == 2
  assert sampled2 == scfg  # 0 = the rollouts' temperature
  assert out == {"eval/accuracy": 0.5, "eval/pass@1": 0.5}


def test_rl_evaluation_reads_eval_temperature(monkeypatch):
  seen = {}
  monkeypatch.setattr(loop.evaluation, "evaluate",
                      lambda *a, **k: seen.setdefault("args", a) and {})
  c = config_lib.default()
  c.sampling.temperature, c.eval.temperature = 0.6, 1.0
  cfg = config_lib.load(c, 33, 0, (2,))
  loop.evaluate(cfg, None, [], None, jax.random.key(0), 0)
  assert seen["args"][1].temperature == 0.6 and seen["args"][-1] == 1.0
