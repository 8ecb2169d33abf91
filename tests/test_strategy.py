"""Strategy-diversity metrics (rldyn/metrics/strategy.py): hand computations and invariance."""
from collections import Counter
import math

import numpy as np
import pytest

from rldyn import roles as roles_lib
from rldyn.metrics import entropy as entropy_lib
from rldyn.metrics import strategy
from rldyn.tasks import make_task

G = 8
# Largest spread allowed between the means of a signal that should not trend (nats / counts); the
# measured spreads are ~0.02 for strategy/entropy, while semantic_entropy/planning moves by > 2 nats.
TOL = {"strategy/entropy": 0.06, "strategy/first_move_entropy": 0.12,
       "strategy/distinct_per_prompt": 0.5}


def _countdown_batch(task, prompts, seed):
  rng = np.random.default_rng(seed)
  ids, texts, correct = [], [], []
  for _ in range(prompts):
    problem = task.sample_problem(rng)
    for _ in range(G):
      text = task.reference_trace(problem, rng)
      texts.append(text)
      ids.append(task.tokenizer.encode(text) + [task.tokenizer.eos_id])
      correct.append(task.verify(problem, text))
  return ids, texts, np.array(correct)


def _old_semantic_entropy(task, ids):
  return entropy_lib.semantic_entropy(
      [u for x in ids for u in entropy_lib.planning_units(x, task.token_roles(x))])


def _countdown_means(task, prompts, total_prompts=128):
  """Each metric averaged over total_prompts // prompts independent steps of `prompts` × G."""
  rows, old = [], []
  for seed in range(total_prompts // prompts):
    ids, texts, correct = _countdown_batch(task, prompts, seed)
    rows.append(strategy.step_strategy_metrics(task, None, ids, texts, None, correct, G))
    old.append(_old_semantic_entropy(task, ids))
  return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}, float(np.mean(old))


def test_entropies_by_hand():
  cs = strategy.chao_shen_entropy
  assert strategy.plugin_entropy([]) == 0.0 and cs([0, 0]) == 0.0
  assert strategy.plugin_entropy([5]) == 0.0 and cs([5]) == 0.0 and cs([1]) == 0.0
  assert strategy.plugin_entropy([2, 2, 2]) == pytest.approx(math.log(3))
  # No singletons: coverage 1, p = 1/3, N = 6: each term divided by 1 - (2/3)^6.
  assert cs([2, 2, 2, 0]) == pytest.approx(math.log(3) / (1 - (2 / 3) ** 6))
  # One singleton of N = 4: coverage 3/4, p = (9/16, 3/16).
  want = sum(-p * math.log(p) / (1 - (1 - p) ** 4) for p in (9 / 16, 3 / 16))
  assert cs([3, 1]) == pytest.approx(want)
  # All singletons: f1 = N - 1 = 1, coverage 1/2, p = (1/4, 1/4), N = 2.
  assert cs([1, 1]) == pytest.approx(2 * (-0.25 * math.log(0.25)) / (1 - 0.75 ** 2))


def test_countdown_strategy_types_by_hand():
  text = ("try 3 * 3 = 9 left 9 , 16 try 16 - 9 = 7 no back try 16 - 3 = 11 left 11 , 3 "
          "try 11 - 3 = 8 no back back try 3 + 16 = 19 left 19 , 3 try 19 - 3 = 16 goal "
          "answer ( 16 + 3 ) - 3")
  tokens = text.split(" ")
  tokens = [c for t in tokens for c in (list(t) if t.isdigit() else [t])]  # digits are tokens
  s = strategy.countdown_strategy(tokens, text)
  assert s.units == ("try *", "try -", "no", "back", "try -", "try -", "no", "back", "try +",
                     "try -", "goal")
  assert s.first == "3 * 3"
  assert s.solution == "((16 + 3) - 3)" == strategy.countdown_solution("answer ( 3 + 16 ) - 3")
  # + and * chains are one solution whatever their order and grouping; - and / keep theirs.
  assert strategy.countdown_solution("answer 7 + ( 5 + 3 )") == strategy.countdown_solution(
      "answer ( 3 + 5 ) + 7") == "(3 + 5 + 7)"
  assert strategy.countdown_solution("answer 8 - 3") != strategy.countdown_solution("answer 3 - 8")
  assert strategy.countdown_solution("no answer here (") is None
  bad = strategy.countdown_strategy(["try", "3", "*", "=", "fail"], "try 3 * = fail")
  assert bad.units == ("try ?", "fail") and bad.first == "try ?" and bad.solution is None
  assert strategy.countdown_strategy(["fail"], "fail").first == "fail"
  # Commutative first moves name one choice.
  assert strategy.countdown_strategy(["try", "5", "+", "3", "="], "").first == "3 + 5"


def test_countdown_from_ids_matches_tokens():
  task = make_task("countdown")
  text = "try 12 + 3 = 15 left 15 , 2 back try 12 / 3 = 4 left 4 , 2 try 4 * 2 = 8 goal answer ( 12 / 3 ) * 2"
  ids = task.tokenizer.encode(text) + [task.tokenizer.eos_id]
  (s,) = strategy.response_strategies(task, None, [ids], [text])
  assert s.units == ("try +", "back", "try /", "try *", "goal") and s.first == "3 + 12"
  assert s.solution == "((12 / 3) * 2)"  # terms sorted as text: "(" < "2"


def test_arithmetic_and_generic_types_by_hand():
  task = make_task("arithmetic")
  text = "3 + 4 = 7 then 7 * 5 - 6 ; 7 * 5 = 35 then 35 - 6 ; 35 - 6 = 29 answer 29"
  ids = task.tokenizer.encode(text)
  (s,) = strategy.response_strategies(task, None, [ids], [text])
  assert s.units == ("+", "*", "-") and s.first == "3 + 4" and s.solution == ("+", "*", "-")
  g = strategy.generic_strategy(["try", "1", "2", "=", "no", "back"], [1, 1, 1, 2, 1, 1])
  assert g.units == ("try # #", "no back") and g.first == "try # #"


def test_metrics_by_hand():
  def s(units, first, sol):
    return strategy.ResponseStrategy(tuple(units), first, sol)
  # Prompt 0: types a,a,b,b over 4 uses; firsts x,x,y,y -> log 2; 2 distinct strategies; correct
  # responses 0 and 1 with solutions S and T -> 2.  Prompt 1: types c,c,c; one first move -> 0;
  # responses 2 and 3 have no units (one empty strategy); nothing correct -> 0.
  strats = [s("a", "x", "S"), s("ab", "x", "T"), s("b", "y", "U"), s("ab", "y", "T"),
            s("cc", "z", None), s("c", "z", None), s("", None, None), s("", None, None)]
  correct = [True, True, False, True, False, False, False, False]
  m = strategy.strategy_metrics(strats, correct, 4)
  h0 = math.log(2) / (1 - 0.5 ** 6)  # prompt 0: a ×3, b ×3 over N = 6 uses, no singleton
  assert m["strategy/entropy"] == pytest.approx((h0 + 0.0) / 2)
  assert m["strategy/distinct_per_prompt"] == pytest.approx((3 + 3) / 2)  # {a, ab, b}, {cc, c, ()}
  assert m["strategy/distinct_correct_per_prompt"] == pytest.approx((2 + 0) / 2)  # {S, T}
  assert m["strategy/first_move_entropy"] == pytest.approx((math.log(2) + 0.0) / 2)
  assert m["strategy/units_per_response"] == pytest.approx(9 / 8)
  empty = strategy.strategy_metrics([s("", None, None)] * 2, [False, False], 2)
  assert math.isnan(empty["strategy/entropy"]) and math.isnan(empty["strategy/first_move_entropy"])
  assert empty["strategy/distinct_per_prompt"] == 1.0
  with pytest.raises(ValueError, match="groups of 3"):
    strategy.strategy_metrics(strats, correct, 3)
  with pytest.raises(ValueError, match="correctness flags"):
    strategy.strategy_metrics(strats, correct[:-1], 4)
  task = make_task("countdown")
  with pytest.raises(ValueError, match="need one each"):
    strategy.step_strategy_metrics(task, None, [[5], [6]], ["a", "b"], None, [True], 1)


def test_text_recipe_uses_strategic_gram_groups():
  task = make_task("countdown")
  tagger = roles_lib.make_tagger("lexicon", task)
  texts = [task.reference_trace(task.sample_problem(np.random.default_rng(i)), np.random.default_rng(i))
           for i in range(4)]
  ids = [task.tokenizer.encode(t) for t in texts]
  got = strategy.response_strategies(task, tagger, ids, texts)
  types = strategy.group_types(tagger.lexicon)
  want = [[types[g] for g in u] for u in tagger.matcher.uses_batch(texts)]
  assert [s.units for s in got] == [tuple(u) for u in want]
  assert [s.first for s in got] == [u[0] if u else None for u in want]
  m = strategy.step_strategy_metrics(task, tagger, ids, texts, None, [False] * 4, 4)
  counts = list(Counter(g for u in want for g in u).values())
  assert m["strategy/entropy"] == pytest.approx(strategy.chao_shen_entropy(counts))
  # Mined exact-identity groups lose their operands; groups by meaning keep their ids.
  by_ngram = {g.ngrams[0]: types[g.id] for g in tagger.lexicon.groups if len(g.ngrams) == 1}
  assert by_ngram["- 4 ="] == by_ngram["- 5 ="] == "- # =" and by_ngram["no back try"] != "no back try"
  math_types = strategy.group_types(roles_lib.load_lexicon("math_en"))
  assert all(k == v for k, v in math_types.items()) and "backtrack" in math_types


def test_invariant_to_prompts_per_step_on_the_countdown_generator():
  """Same generator, 4 / 16 / 64 prompts × 8, 128 prompts each: the old pooled signal climbs by
  > 1.5 nats, the per-prompt strategy metrics stay within TOL."""
  task = make_task("countdown")
  means, old = {}, {}
  for p in (4, 16, 64):
    means[p], old[p] = _countdown_means(task, p)
  assert old[64] - old[4] > 1.5 and old[4] < old[16] < old[64]
  for key, tol in TOL.items():
    vals = [means[p][key] for p in (4, 16, 64)]
    assert max(vals) - min(vals) < tol, (key, vals)


def test_invariant_to_response_length_on_the_countdown_generator():
  """Same search, cut at 4 vs 30 tries (42 vs 114 tokens on average): strategy/entropy within TOL."""
  short, long_ = make_task("countdown", budget=4), make_task("countdown", budget=30)
  (ms, old_s), (ml, old_l) = _countdown_means(short, 64), _countdown_means(long_, 64)
  assert ml["strategy/units_per_response"] > 2 * ms["strategy/units_per_response"]
  assert old_l - old_s > 0.5
  assert abs(ml["strategy/entropy"] - ms["strategy/entropy"]) < TOL["strategy/entropy"]


def test_stationary_generator_estimates_the_true_entropy_at_any_length():
  """Responses of L iid strategy events from a per-prompt distribution (operands random): the
  estimate matches the true mean entropy within 0.03 at L = 3 and L = 30; the plug-in does not."""
  types = ["try +", "try -", "try *", "try /", "back", "no"]
  rng = np.random.default_rng(0)
  task = make_task("countdown")
  est, plug = {}, {}
  truths = []
  for length in (3, 30):
    rows, plugins = [], []
    for prompt in range(300):
      p = np.random.default_rng(prompt).dirichlet(np.ones(len(types)))
      if length == 3:
        truths.append(-(p * np.log(p)).sum())
      texts = []
      for _ in range(G):
        ev = rng.choice(len(types), size=length, p=p)
        texts.append(" ".join(
            f"try {rng.integers(1, 20)} {types[e][-1]} {rng.integers(1, 20)} = 1" if e < 4 else types[e]
            for e in ev))
      ids = [task.tokenizer.encode(t) for t in texts]
      strats = strategy.response_strategies(task, None, ids, texts)
      rows.append(strategy.strategy_metrics(strats, [False] * G, G)["strategy/entropy"])
      counts = Counter(u for s in strats for u in s.units)
      plugins.append(strategy.plugin_entropy(list(counts.values())))
    est[length], plug[length] = np.mean(rows), np.mean(plugins)
  truth = np.mean(truths)
  assert abs(est[3] - truth) < 0.03 and abs(est[30] - truth) < 0.03, (est, truth)
  assert truth - plug[3] > 0.06  # the uncorrected estimate reads short responses as less diverse


def test_diverse_prior_reads_more_diverse_than_a_single_strategy():
  """Sanity of meaning: one greedy strategy per trace vs the default mix, same problems."""
  single = make_task("countdown", strategy_mix=(("greedy", 1.0),))
  mixed = make_task("countdown")
  ms, _ = _countdown_means(single, 32, 64)
  mm, _ = _countdown_means(mixed, 32, 64)
  assert ms["strategy/first_move_entropy"] == 0.0 < mm["strategy/first_move_entropy"] - 0.5
  assert mm["strategy/distinct_per_prompt"] > ms["strategy/distinct_per_prompt"] + 1.5
  assert mm["strategy/entropy"] > ms["strategy/entropy"] + 0.2


def _confounded_log(scenario, seed, steps=80, tau=35, prompts=8):
  """Execution entropy falls until tau, then flat; after tau responses get longer (`length`: the
  search may use 4 -> 30 tries) or strategies diversify (`strategy`: greedy only -> a mix)."""
  rng = np.random.default_rng(seed)
  recs = []
  for t in range(steps):
    u = max(0.0, (t - tau) / (steps - tau))
    if scenario == "length":
      task = make_task("countdown", budget=int(round(4 + 26 * u)))
    else:
      task = make_task("countdown", strategy_mix=(("greedy", 1 - 0.8 * u), ("dfs", 0.4 * u),
                                                  ("random", 0.4 * u)))
    ids, texts, correct = _countdown_batch(task, prompts, rng.integers(2**31))
    new = strategy.step_strategy_metrics(task, None, ids, texts, None, correct, G)["strategy/entropy"]
    ex = 0.8 + 1.2 * max(0.0, 1 - t / tau) ** 1.5 + 0.03 * rng.standard_normal()
    recs.append((t, {"entropy/execution": ex, "semantic_entropy/planning": _old_semantic_entropy(task, ids),
                     "strategy/entropy": new}))
  return recs


def test_detector_sees_diversification_but_not_longer_responses():
  """The phase detector on its default signal (strategy/entropy): no arc when only the length grows
  after tau (the old pooled signal reports one), an arc near tau when strategies really diversify.
  Seed 0 at this small size (8 prompts × 8, 80 steps); over seeds 0-5: longer responses alone read as
  an arc 1/6 times on strategy/entropy and 6/6 on semantic_entropy/planning, diversification 5/6 and
  6/6 (docs/phases.md has the larger check)."""
  from rldyn import phases  # pylint: disable=g-import-not-at-top
  from rldyn.phases.detect import PhaseConfig, SignalSpec  # pylint: disable=g-import-not-at-top
  recs = _confounded_log("length", 0)
  assert not phases.detect(recs).detected  # the default reads strategy/entropy
  old = PhaseConfig(signals=(SignalSpec("entropy/execution", "execution"),
                             SignalSpec("semantic_entropy/planning", "planning")))
  assert phases.detect(recs, old).detected
  r = phases.detect(_confounded_log("strategy", 0))
  assert r.detected and abs(r.boundary_step - 35) <= 8 and "strategy/entropy" in r.signals


def test_text_recipe_estimates_the_true_entropy_at_any_length():
  """Strategic-gram text (math_en groups, one phrase each, numbers between them) with L phrases per
  response drawn from a per-prompt distribution over the 12 groups: within 0.05 nats of the true mean
  entropy at L = 3 and L = 30; the plug-in is 0.15 nats low at L = 3."""
  task = make_task("countdown")
  tagger = roles_lib.make_tagger("lexicon", task, lexicon_path="math_en")
  phrases = {}
  for g in tagger.lexicon.groups:  # a phrase that the matcher reads as its own group
    phrases[g.id] = next(ng for ng in sorted(g.ngrams, key=len)
                         if tagger.matcher.uses_batch([ng]) == [[g.id]])
  names = sorted(phrases)
  rng = np.random.default_rng(0)
  truths = [None] * 200
  for length in (3, 30):
    est, plug = [], []
    for prompt in range(200):
      p = np.random.default_rng(prompt).dirichlet(np.full(len(names), 0.5))
      truths[prompt] = -(p[p > 0] * np.log(p[p > 0])).sum()
      texts, want = [], []
      for _ in range(G):
        ev = rng.choice(len(names), size=length, p=p)
        texts.append(" ".join(f"{phrases[names[e]]}, x {rng.integers(1, 99)} y {rng.integers(1, 99)}."
                              for e in ev))
        want.append(tuple(names[e] for e in ev))
      strats = strategy.response_strategies(task, tagger, [[0]] * G, texts)
      assert [s.units for s in strats] == want
      est.append(strategy.strategy_metrics(strats, [False] * G, G)["strategy/entropy"])
      plug.append(strategy.plugin_entropy(list(Counter(u for s in strats for u in s.units).values())))
    truth = np.mean(truths)
    assert abs(np.mean(est) - truth) < 0.05, (length, np.mean(est), truth)
    if length == 3:
      assert truth - np.mean(plug) > 0.15


def test_types_follow_the_responses_not_the_credit_mask():
  """A placebo tagger is measured with its reference's types; tasks without their own abstraction use
  their ground-truth planning runs (never a placebo's random roles); tasks without ground-truth roles
  use the text recipe on their default lexicon."""
  task = make_task("countdown")
  rng = np.random.default_rng(3)
  texts = [task.reference_trace(task.sample_problem(rng), rng) for _ in range(4)]
  ids = [task.tokenizer.encode(t) for t in texts]
  placebo = roles_lib.make_tagger("placebo", task, placebo_of="structural")
  random_roles = np.asarray(placebo(ids, texts, 0)[0])[None].repeat(4, 0)  # not the truth
  assert strategy.response_strategies(task, placebo, ids, texts) == strategy.response_strategies(
      task, None, ids, texts)
  lex_placebo = roles_lib.make_tagger("placebo", task, placebo_of="lexicon")
  assert strategy.response_strategies(task, lex_placebo, ids, texts) == strategy.response_strategies(
      task, roles_lib.make_tagger("lexicon", task), ids, texts)

  class Plain(type(task)):
    name = "plain"

  plain = Plain(task.config)
  want = [strategy.generic_strategy([task.tokenizer.id_to_token(t) for t in x], task.token_roles(x))
          for x in ids]
  assert strategy.response_strategies(plain, placebo, ids, texts, random_roles) == want
  assert want[0].units and all("#" in u or not any(c.isdigit() for c in u) for s in want for u in s.units)

  class NoTruth(type(task)):
    name = "notruth"
    has_role_truth = False

  (s,) = strategy.response_strategies(NoTruth(task.config), roles_lib.make_tagger("structural", task),
                                      [[0]], ["hmm, let me check this. thus x = 3"])
  assert s.units == ("pause", "verify", "deduce")


def test_arc_hunt_variants_build_and_validate():
  """Every experiments/arc_hunt.py variant (and its smoke size) loads and passes launch.validate."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  from rldyn import config as config_lib  # pylint: disable=g-import-not-at-top
  from rldyn import launch  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments",
                      "arc_hunt.py")
  spec = importlib.util.spec_from_file_location("arc_hunt", path)
  arc = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(arc)
  seen = {}
  for variant in arc.VARIANTS:
    for size in ("", ",smoke"):
      cfg = config_lib.load(arc.get_config(variant + size), vocab_size=33, pad_id=0, stop_tokens=(2,))
      launch.validate(cfg, 1)
      seen[variant + size] = cfg
  assert seen["single"].task.kwargs["strategy_mix"] == {"dfs": 1.0, "greedy": 0.0, "random": 0.0}
  assert seen["rare_long"].task.kwargs["strategy_mix"]["random"] == 0.05
  assert seen["rare_long"].task.kwargs["num_count"] == 4 and seen["rare_long,smoke"].task.kwargs["num_count"] == 2
  assert seen["rare_long"].rl.curriculum == "num_count=3@0,4@200,5@400" and seen["rare_long"].rl.dynamic_sampling
  assert (seen["passk"].advantage.name, seen["entropy"].advantage.transform) == ("passk", "entropy")
  assert seen["placebo"].roles.tagger == "placebo" and seen["hicra"].advantage.transform == "hicra"
  assert (seen["distinct"].reward.name, seen["distinct"].reward.distinct_bonus) == ("distinct_correct", 0.5)
  assert seen["diverse,smoke"].rl.steps < seen["diverse"].rl.steps
  with pytest.raises(ValueError, match="valid: one of"):
    arc.get_config("bogus")


def test_role_stats_of_a_placebo_run_keep_the_true_role_entropies():
  """truth/entropy/<role>: the sampler's entropies averaged over the task's structural roles, by hand;
  only for taggers that are not the truth."""
  import types  # pylint: disable=g-import-not-at-top
  from rldyn import config as config_lib  # pylint: disable=g-import-not-at-top
  from rldyn.rl import credit  # pylint: disable=g-import-not-at-top
  from rldyn.tasks import EXECUTION, PLANNING  # pylint: disable=g-import-not-at-top
  task = make_task("countdown")
  rng = np.random.default_rng(5)
  problems = [task.sample_problem(rng) for _ in range(4)]
  texts = [task.reference_trace(p, rng) for p in problems]
  ids = [task.tokenizer.encode(t) for t in texts]
  n = max(len(x) for x in ids) + 3
  ent = rng.random((4, n)).astype(np.float32)
  mask = np.arange(n)[None, :] < np.array([len(x) for x in ids])[:, None]
  ro = types.SimpleNamespace(ids=ids, texts=texts, entropy_BN=ent, mask_BN=mask, correct_B=np.ones(4, bool),
                             group_size=4, problems=problems)
  truth = [task.token_roles(x) for x in ids]
  want = {r: np.mean(np.concatenate([ent[i, :len(x)][truth[i] == r] for i, x in enumerate(ids)]))
          for r in (PLANNING, EXECUTION)}
  for tagger_name in ("placebo", "structural"):
    c = config_lib.default()
    c.roles.tagger = tagger_name
    cfg = config_lib.load(c, task.tokenizer.vocab_size, 0, (2,))
    tagger = roles_lib.make_tagger(tagger_name, task, placebo_of="structural")
    roles_BN = np.zeros((4, n), np.int32)
    for i, r in enumerate(tagger(ids, texts, 0)):
      roles_BN[i, :len(r)] = r
    out = credit.role_stats(cfg, task, tagger, ro, roles_BN)
    from rldyn.metrics import procedure  # pylint: disable=g-import-not-at-top
    assert {k: out[k] for k in out if k.startswith("procedure/")} == procedure.procedure_metrics(task, problems, texts)
    if tagger_name == "structural":
      assert not [k for k in out if k.startswith("truth/")]
    else:
      assert math.isclose(out["truth/entropy/planning"], want[PLANNING], rel_tol=1e-6)
      assert math.isclose(out["truth/entropy/execution"], want[EXECUTION], rel_tol=1e-6)
