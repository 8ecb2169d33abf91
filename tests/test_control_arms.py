"""Control arms (docs/objectives.md): spurious rewards, covariance losses, entropy shaping, pass@k advantages,
the exact-zero KL gradient at θ = θ_ref, and the default update graph left as it was."""
import dataclasses
import functools
import itertools
import json
import types
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rldyn import config as config_lib
from rldyn import launch
from rldyn import model as M
from rldyn import parallel
from rldyn import state as state_lib
from rldyn.config import AdvantageConfig, ConfigError, LossConfig, OptimConfig, RewardConfig
from rldyn.metrics import token_stats
from rldyn.optim import make_optimizer
from rldyn.rl import advantages as A
from rldyn.rl import losses as L
from rldyn.rl import rewards as R
from rldyn.rl import step as S
from rldyn.tasks import make_task

# ---- rewards ------------------------------------------------------------------------------------------


def _ctx(task, problems, texts, g, name, seed=0):
  correct = R.verify_all(task, problems, texts)
  return R.RewardContext(task=task, problems=problems, texts=texts, correct=correct, group_size=g, step=0,
                         cfg=RewardConfig(name=name, seed=seed))


def _problems(task, n, seed=0):
  rng = np.random.default_rng(seed)
  return [task.sample_problem(rng) for _ in range(n)]


@pytest.mark.parametrize("name", ["countdown", "arithmetic"])
def test_answer_key_agrees_with_the_verifier(name):
  """answer_key(r) == true_label iff the verifier accepts r (reference traces are right ~70-90% of the time)."""
  task = make_task(name)
  rng = np.random.default_rng(1)
  agree = []
  for p in _problems(task, 40):
    text = task.reference_trace(p, rng)
    agree.append((R.answer_key(task, p, text) == R.true_label(task, p), task.verify(p, text)))
  assert all(a == b for a, b in agree)
  assert 0 < sum(b for _, b in agree) < len(agree)  # both outcomes exercised


def _countdown_witness(numbers, value):
  """Some expression over exactly `numbers` whose value is `value` (brute force, 3 numbers)."""
  def build(pool):
    if len(pool) == 1:
      yield pool[0]
    for i, j in itertools.permutations(range(len(pool)), 2):
      rest = [x for k, x in enumerate(pool) if k not in (i, j)]
      (a, ea), (b, eb) = pool[i], pool[j]
      for op in "+-*/":
        if op == "/" and b == 0:
          continue
        v = {"+": a + b, "-": a - b, "*": a * b, "/": Fraction(a) / b if b else None}[op]
        yield from build(rest + [(v, f"( {ea} ) {op} ( {eb} )")])
  for v, e in build([(n, str(n)) for n in numbers]):
    if v == value:
      return e
  raise AssertionError(f"no witness for {value} from {numbers}")


def test_wrong_label_is_wrong_reachable_and_deterministic():
  task = make_task("countdown")
  probs = _problems(task, 25)
  for p in probs:
    data = json.loads(p.data)
    wrong = R.wrong_label(task, p, seed=0)
    assert wrong != Fraction(data["target"]) and wrong == R.wrong_label(task, p, seed=0)
    text = "try 1 + 1 = 2 goal answer " + _countdown_witness(data["numbers"], wrong)
    got = R.compute(_ctx(task, [p], [text], 1, "incorrect_label"))
    assert got[0] == 1.0 and not task.verify(p, text)
    # the true solution gets 0 from the incorrect-label reward
    assert R.compute(_ctx(task, [p], ["answer " + p.answer], 1, "incorrect_label"))[0] == 0.0
  assert any(R.wrong_label(task, p, 0) != R.wrong_label(task, p, 1) for p in probs)  # the seed matters

  task = make_task("arithmetic")
  for p in _problems(task, 25):
    value = int(json.loads(p.data)["value"])
    wrong = R.wrong_label(task, p, seed=3)
    assert 1 <= abs(int(wrong) - value) <= task.config.max_error and int(wrong) >= 0
    texts = [f"answer {wrong}", f"answer {value}", "no answer here"]
    np.testing.assert_array_equal(R.compute(_ctx(task, [p] * 3, texts, 3, "incorrect_label", seed=3)), [1, 0, 0])
    assert not task.verify(p, texts[0])


def test_countdown_values_by_hand():
  # 2, 3: 5, 1, 6 (3/2 is not exact); 2, 2: 4, 4, 1 (2-2 = 0 is not allowed)
  assert R.countdown_values((2, 3)) == {5, 1, 6}
  assert R.countdown_values((2, 2)) == {4, 1}
  # 1, 2, 3 includes 6 = 1+2+3 = 1*2*3, 9 = (1+2)*3, 0 never
  vals = R.countdown_values((1, 2, 3))
  assert {6, 9, 7, 5, 1, 2, 3, 4, 8}.issubset(vals) and 0 not in vals and max(vals) == 9


def test_majority_vote_by_hand():
  task = make_task("arithmetic")
  p = task.make_problem("3 + 4")
  # group 1: answers None, 3, 5, 5, 3 -> 3 and 5 tie at 2; 3 appears first -> label 3
  # group 2: no answers at all -> all 0
  g1 = ["junk", "answer 3", "answer 5", "answer 5", "answer 3"]
  g2 = ["x", "y", "z", "w", "v"]
  got = R.compute(_ctx(task, [p] * 10, g1 + g2, 5, "majority_vote"))
  np.testing.assert_array_equal(got, [0, 1, 0, 0, 1, 0, 0, 0, 0, 0])
  # a clear majority that is wrong still wins (the reward ignores the true answer 7)
  g3 = ["answer 7", "answer 8", "answer 8"]
  np.testing.assert_array_equal(R.compute(_ctx(task, [p] * 3, g3, 3, "majority_vote")), [0, 1, 1])
  assert R.majority_labels([None, "a", "b", "b", "a"]) == "a" and R.majority_labels([None]) is None


def test_majority_vote_countdown_votes_on_values():
  """(3 + 5) and (5 + 3) are the same answer; an expression over other numbers has none."""
  task = make_task("countdown")
  p = task.make_problem([3, 5, 7], 15)
  texts = ["answer 3 + 5 + 7", "answer 7 + ( 5 + 3 )", "answer 3 * 5 * 7", "answer 1 + 14", "fail"]
  np.testing.assert_array_equal(R.compute(_ctx(task, [p] * 5, texts, 5, "majority_vote")), [1, 1, 0, 0, 0])
  assert R.answer_key(task, p, texts[3]) is None


def test_distinct_correct_by_hand():
  """1 + β/m per correct response (m = correct responses sharing its solution), 0 otherwise."""
  task = make_task("countdown")
  p = task.make_problem([3, 5, 7], 15)
  # group 1: one solution written three ways (m = 3), 3 * 7 - 5 = 16 (wrong), no answer
  g1 = ["answer 3 + 5 + 7", "answer ( 3 + 5 ) + 7", "answer 7 + ( 5 + 3 )", "answer 3 * 7 - 5", "fail"]
  # group 2: one solution written two ways (m = 2); 5 * 3 * 1 and 15 do not use the problem's numbers
  g2 = ["answer 3 + 5 + 7", "answer 5 * 3 * 1", "nothing", "answer 15", "answer 5 + 7 + 3"]
  ctx = _ctx(task, [p] * 10, g1 + g2, 5, "distinct_correct")
  ctx = dataclasses.replace(ctx, cfg=RewardConfig(name="distinct_correct", distinct_bonus=0.6))
  got = R.compute(ctx)
  assert list(ctx.correct) == [True, True, True, False, False, True, False, False, False, True]
  np.testing.assert_allclose(got, [1.2, 1.2, 1.2, 0, 0, 1.3, 0, 0, 0, 1.3], rtol=1e-6)
  # the group sums: #correct + β · #distinct correct solutions
  np.testing.assert_allclose([got[:5].sum(), got[5:].sum()], [3 + 0.6, 2 + 0.6], rtol=1e-6)
  # two solutions in one group: 2 * 3 + 4 = 3 * 2 + 4 (m = 2) and 4 * 3 - 2 (m = 1); a malformed answer
  p2 = task.make_problem([2, 3, 4], 10)
  g3 = ["answer 2 + 4 * ... ", "answer 2 * 3 + 4", "answer 4 * 3 - 2", "answer 3 * 2 + 4"]
  got = R.compute(dataclasses.replace(_ctx(task, [p2] * 4, g3, 4, "distinct_correct"),
                                      cfg=RewardConfig(name="distinct_correct", distinct_bonus=0.5)))
  np.testing.assert_allclose(got, [0, 1.25, 1.5, 1.25], rtol=1e-6)
  # β = 0 is ground_truth
  ctx0 = dataclasses.replace(ctx, cfg=RewardConfig(name="distinct_correct", distinct_bonus=0.0))
  np.testing.assert_array_equal(R.compute(ctx0), ctx.correct.astype(np.float32))


def test_distinct_correct_refuses_tasks_without_solutions():
  with pytest.raises(ConfigError, match="distinct_bonus must be >= 0"):
    RewardConfig(distinct_bonus=-1.0)
  task = make_task("arithmetic")
  p = task.make_problem("3 + 4")
  with pytest.raises(RuntimeError, match="valid: countdown"):
    R.compute(_ctx(task, [p], ["answer 7"], 1, "distinct_correct"))
  c = config_lib.default()
  c.task.name, c.reward.name = "arithmetic", "distinct_correct"
  with pytest.raises(ConfigError, match="needs a task whose solutions have a key; valid tasks: countdown"):
    launch.validate(config_lib.load(c, vocab_size=33, pad_id=0, stop_tokens=(2,)), 1)


def test_incorrect_label_refuses_unlabelled_tasks():
  task = types.SimpleNamespace(name="mathx", extract_answer=lambda t: "1")
  p = make_task("arithmetic").make_problem("1 + 1")
  ctx = R.RewardContext(task=task, problems=[p], texts=["answer 1"], correct=np.zeros(1, bool), group_size=1,
                        step=0, cfg=RewardConfig(name="incorrect_label"))
  with pytest.raises(RuntimeError, match="valid: arithmetic, countdown"):
    R.compute(ctx)


# ---- pass@k advantages --------------------------------------------------------------------------------


def _passk_brute(r, k):
  """Per response: mean over the k-subsets containing it of (max reward − mean)/std, both over all subsets."""
  g = len(r)
  subsets = list(itertools.combinations(range(g), k))
  vals = np.array([max(r[i] for i in s) for s in subsets], float)
  mean, std = vals.mean(), vals.std()
  if std == 0:
    return np.zeros(g)
  return np.array([np.mean([(v - mean) / std for s, v in zip(subsets, vals) if i in s]) for i in range(g)])


def test_passk_matches_brute_force_enumeration():
  fn = A.ADVANTAGES.get("passk")
  for g in range(2, 7):
    for k in range(1, g + 1):
      # every pass count, passes placed at the end and at the start
      rows = [[0.0] * (g - n) + [1.0] * n for n in range(g + 1)] + [[1.0] * n + [0.0] * (g - n) for n in range(g + 1)]
      got = np.asarray(fn(np.array(rows, np.float32), eps=0.0 + 1e-12, k=k))
      want = np.array([_passk_brute(row, k) for row in rows])
      np.testing.assert_allclose(got, want, atol=2e-5, err_msg=f"G={g} k={k}")


def test_passk_hand_values_and_limits():
  fn = A.ADVANTAGES.get("passk")
  # G = 4, k = 2, one pass: R̄ = 1 − C(3,2)/C(4,2) = 1/2, σ = 1/2: A_pass = 1, A_fail = (1/2 − C(2,1)/C(3,1))/(1/2) = −1/3
  np.testing.assert_allclose(fn(np.array([[1.0, 0, 0, 0]]), eps=0.0, k=2), [[1, -1 / 3, -1 / 3, -1 / 3]], atol=1e-6)
  r = np.array([[1.0, 0, 0, 1, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], np.float32)
  np.testing.assert_allclose(fn(r, k=1), A.ADVANTAGES.get("grpo")(r), atol=1e-5)  # k = 1 is GRPO
  np.testing.assert_array_equal(fn(r, k=3)[1:], 0.0)  # all fail / all pass: no signal
  # k = G: the one k-subset is the whole group, which passes whenever anyone does: no signal at all
  np.testing.assert_array_equal(fn(r, k=5), 0.0)
  # k = 2 gives the failures of a mixed group less blame than GRPO does, and the passes less credit
  a2, a1 = np.asarray(fn(r, k=2))[0], np.asarray(fn(r, k=1))[0]
  assert (0 < a2[[0, 3]]).all() and (a2[[1, 2, 4]] > a1[[1, 2, 4]]).all() and (a2[[1, 2, 4]] < 0).all()
  with pytest.raises(ValueError, match="1 <= k <= group size"):
    fn(r, k=6)
  with pytest.raises(TypeError):
    fn(r)  # k has no default: it comes from the config
  assert A.estimator_options(types.SimpleNamespace(name="passk", pass_k=4)) == {"k": 4}
  assert A.estimator_options(AdvantageConfig()) == {}


# ---- entropy advantage shaping -------------------------------------------------------------------------


def test_entropy_shaping_hand_values():
  adv = np.array([[1.0, 1.0, -1.0, -1.0, 0.0, 0.5]], np.float32)
  ent = np.array([[0.5, 3.0, 0.5, 3.0, 9.0, 0.2]], np.float32)
  out = A.TRANSFORMS.get("entropy")(adv, np.zeros_like(adv, np.int32), 0.4, entropy_BN=ent, kappa=2.0)
  # bonus = min(0.4 H, |A|/2): 0.2, min(1.2, .5)=.5, 0.2, .5, (A=0) 0, min(0.08, 0.25)=0.08
  np.testing.assert_allclose(out, [[1.2, 1.5, -0.8, -0.5, 0.0, 0.58]], atol=1e-6)
  pad = np.array([[np.nan]], np.float32)  # garbage entropy where A = 0 is ignored
  assert float(A.TRANSFORMS.get("entropy")(np.zeros((1, 1)), pad, 0.4, entropy_BN=pad, kappa=2.0)[0, 0]) == 0.0
  # κ > 1 never flips a sign: A + |A|/κ for A < 0 stays negative
  a = -np.abs(np.random.default_rng(0).normal(size=(4, 8))).astype(np.float32) - 1e-3
  big = np.full_like(a, 100.0)
  assert (np.asarray(A.TRANSFORMS.get("entropy")(a, big, 1.0, entropy_BN=big, kappa=1.5)) < 0).all()


def test_apply_transform_dispatch():
  adv = np.array([[1.0, -1.0, 0.5]], np.float32)
  roles = np.array([[1, 1, 2]], np.int32)
  ent = np.array([[1.0, 1.0, 1.0]], np.float32)
  for t in ("none", "hicra"):
    acfg = AdvantageConfig(transform=t)
    np.testing.assert_array_equal(A.apply_transform(acfg, adv, roles, ent),
                                  A.TRANSFORMS.get(t)(adv, roles, acfg.hicra_alpha))
  acfg = types.SimpleNamespace(transform="entropy", hicra_alpha=0.2, entropy_alpha=0.1, entropy_kappa=4.0)
  np.testing.assert_allclose(A.apply_transform(acfg, adv, roles, ent), [[1.1, -0.9, 0.6]], atol=1e-6)


# ---- covariance losses ---------------------------------------------------------------------------------


def _cov_np(logp, adv, m):
  mm = m > 0
  return (adv - adv[mm].mean()) * (logp - logp[mm].mean())


def test_token_covariance_by_hand():
  logp = np.array([[-1.0, -2.0, -3.0], [-0.5, -9.0, 0.0]], np.float32)
  adv = np.array([[1.0, 1.0, 1.0], [-1.0, -1.0, 0.0]], np.float32)
  m = np.array([[1, 1, 1], [1, 1, 0]], np.float32)
  # masked means: Ā = (3 − 2)/5 = 0.2; mean log π = (−6 − 9.5)/5 = −3.1
  want = (adv - 0.2) * (logp + 3.1)
  np.testing.assert_allclose(L.token_covariance(jnp.asarray(logp), jnp.asarray(adv), jnp.asarray(m)), want,
                             rtol=1e-5)
  np.testing.assert_allclose(want, _cov_np(logp, adv, m), rtol=1e-6)


def _cov_case():
  logp = np.log(np.array([[0.9, 0.5, 0.2, 0.05], [0.8, 0.3, 0.6, 0.1]], np.float32))
  old = logp.copy()
  old[1, 3] = logp[1, 3] - 1.0  # ratio e ≈ 2.7 on a positive-advantage token: clipped by origin
  adv = np.array([[1.0, 1.0, 1.0, 1.0], [-1.0, -1.0, 1.0, 1.0]], np.float32)
  m = np.array([[1, 1, 1, 1], [1, 1, 1, 1]], np.float32)
  return logp, old, adv, m


def test_clip_cov_detaches_a_random_subset_of_the_covariance_band():
  logp, old, adv, m = _cov_case()
  cov = _cov_np(logp, adv, m)
  base, base_clip = L.clipped(jnp.asarray(logp), jnp.asarray(old), jnp.asarray(adv), 0.2, 0.2, None)
  assert bool(base_clip[1, 3])
  lb, ub = -0.05, 0.5
  eligible = (cov > lb) & (cov < ub) & ~np.asarray(base_clip)
  assert 3 <= eligible.sum() <= 6

  def run(ratio, key):
    fn = functools.partial(L.clip_cov, old_logp_BT=jnp.asarray(old), adv_BT=jnp.asarray(adv), eps_low=0.2,
                           eps_high=0.2, dual_clip=None, mask_BT=jnp.asarray(m), ratio=ratio, cov_lb=lb,
                           cov_ub=ub, key=key)
    loss, no_grad = fn(jnp.asarray(logp))
    grad = jax.grad(lambda lp: fn(lp)[0].sum())(jnp.asarray(logp))
    return np.asarray(loss), np.asarray(no_grad), np.asarray(grad)

  base_grad = np.asarray(jax.grad(lambda lp: L.clipped(lp, jnp.asarray(old), jnp.asarray(adv), 0.2, 0.2,
                                                         None)[0].sum())(jnp.asarray(logp)))
  # ratio 2/8 -> ⌊0.25·8⌋ = 2 tokens, drawn among the eligible ones; different keys, different draws
  draws = set()
  for seed in range(12):
    loss, no_grad, grad = run(0.25, jax.random.key(seed))
    detached = no_grad & ~np.asarray(base_clip)
    assert detached.sum() == 2 and not (detached & ~eligible).any()
    np.testing.assert_array_equal(loss, np.asarray(base))  # the value is kept
    np.testing.assert_array_equal(grad[detached], 0.0)
    np.testing.assert_allclose(grad[~detached], base_grad[~detached], rtol=1e-6)
    draws.add(tuple(np.flatnonzero(detached)))
  assert len(draws) > 1
  # ratio 1: every eligible token is detached; a tiny ratio still detaches one (max(⌊r·n⌋, 1))
  assert (run(1.0, jax.random.key(0))[1] & ~np.asarray(base_clip)).sum() == eligible.sum()
  assert (run(1e-4, jax.random.key(0))[1] & ~np.asarray(base_clip)).sum() == 1
  # padding never counts: the same case with row 1 masked out detaches only inside row 0
  m2 = m.copy(); m2[1] = 0
  loss, no_grad = L.clip_cov(jnp.asarray(logp), jnp.asarray(old), jnp.asarray(adv), 0.2, 0.2, None,
                             mask_BT=jnp.asarray(m2), ratio=1.0, cov_lb=-1e9, cov_ub=1e9)
  detached = np.asarray(no_grad) & ~np.asarray(base_clip)  # (the clip flags are unmasked, as for `clipped`)
  assert not detached[1].any() and detached[0].all()


def test_kl_cov_penalises_the_top_covariance_tokens():
  logp, old, adv, m = _cov_case()
  old = logp - np.array([[0.1, -0.2, 0.3, 0.0], [0.05, 0.0, -0.4, 1.0]], np.float32)  # log-ratios
  cov = _cov_np(logp, adv, m)
  top2 = np.zeros_like(m, bool)
  top2.flat[np.argsort(-cov, axis=None, kind="stable")[:2]] = True  # ⌊0.25·8⌋ = 2
  d = logp - old
  want = -adv * np.exp(d) + np.where(top2, 0.7 * np.abs(d), 0.0)
  loss, clipped = L.kl_cov(jnp.asarray(logp), jnp.asarray(old), jnp.asarray(adv), 0.2, 0.2, None,
                           mask_BT=jnp.asarray(m), ratio=0.25, coef=0.7)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  assert not np.asarray(clipped).any()
  grad = np.asarray(jax.grad(lambda lp: L.kl_cov(lp, jnp.asarray(old), jnp.asarray(adv), 0.2, 0.2, None,
                                                 mask_BT=jnp.asarray(m), ratio=0.25, coef=0.7)[0].sum())(
                                                     jnp.asarray(logp)))
  np.testing.assert_allclose(grad, -adv * np.exp(d) + np.where(top2, 0.7 * np.sign(d), 0.0), rtol=1e-5)
  # coef 0 is the vanilla loss
  van, _ = L.vanilla(jnp.asarray(logp), jnp.asarray(old), jnp.asarray(adv), 0.2, 0.2, None)
  np.testing.assert_array_equal(L.kl_cov(jnp.asarray(logp), jnp.asarray(old), jnp.asarray(adv), 0.2, 0.2, None,
                                         mask_BT=jnp.asarray(m), coef=0.0)[0], van)


def test_content_key_ignores_padding_and_changes_with_data():
  a = jnp.array([[-1.0, -2.0, 5.0]]); m = jnp.array([[1.0, 1.0, 0.0]])
  same = jax.random.key_data(L.content_key(a, m)) == jax.random.key_data(L.content_key(a.at[0, 2].set(7.0), m))
  diff = jax.random.key_data(L.content_key(a, m)) != jax.random.key_data(L.content_key(a.at[0, 0].set(-1.5), m))
  assert bool(jnp.all(same)) and bool(jnp.any(diff))


def test_cov_options_read_the_config():
  with pytest.raises(ValueError, match="valid: clip_cov, kl_cov"):
    L.cov_options(LossConfig())
  assert L.cov_options(_CovLoss(name="clip_cov")) == {"ratio": 2e-4, "cov_lb": 1.0, "cov_ub": 5.0}
  assert L.cov_options(_CovLoss(name="kl_cov", kl_cov_coef=0.5)) == {"ratio": 2e-4, "coef": 0.5}


# ---- the update step -----------------------------------------------------------------------------------

CFG = M.ModelConfig(vocab_size=32, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, d_ff=64)
P, N, B = 4, 6, 8


@dataclasses.dataclass(frozen=True)
class _CovLoss(LossConfig):
  """LossConfig with the covariance-loss fields (until rldyn.config.LossConfig has them)."""
  cov_ratio: float = 2e-4
  clip_cov_lb: float = 1.0
  clip_cov_ub: float = 5.0
  kl_cov_coef: float = 1.0


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  prompt = rng.integers(3, 32, (B, P)).astype(np.int32)
  lengths = rng.integers(2, N + 1, B)
  resp_mask = np.arange(N)[None] < lengths[:, None]
  resp = np.where(resp_mask, rng.integers(3, 32, (B, N)), 0).astype(np.int32)
  return {
      "tokens_BS": np.concatenate([prompt, resp], 1),
      "mask_BS": np.concatenate([np.ones((B, P), bool), resp_mask], 1),
      "resp_mask_BN": resp_mask.astype(np.float32),
      "old_logp_BN": np.where(resp_mask, -rng.uniform(0.1, 3, (B, N)), 0).astype(np.float32),
      "ref_logp_BN": np.where(resp_mask, -rng.uniform(0.1, 3, (B, N)), 0).astype(np.float32),
      "adv_BN": (rng.normal(size=(B, 1)) * resp_mask).astype(np.float32),
      "entropy_BN": np.where(resp_mask, rng.uniform(0, 2, (B, N)), 0).astype(np.float32),
      "roles_BN": np.where(resp_mask, rng.integers(0, 3, (B, N)), 0).astype(np.int32),
  }


@functools.lru_cache(maxsize=1)
def _mesh():
  return parallel.make_mesh(parallel.MeshConfig(1, 1, 1), jax.devices()[:1])


_TX = make_optimizer(OptimConfig(lr=1e-3, warmup_steps=0, decay="constant", weight_decay=0.0), 10)


def _state():
  params = state_lib.init_params(CFG, _mesh(), jax.random.key(0))
  return {"params": params, "opt_state": state_lib.init_opt_state(_TX, params, _mesh())}


@functools.lru_cache(maxsize=None)
def _update_fn(lcfg):
  return S.make_update_step(CFG, lcfg, _TX, 1.0, 2, N, _mesh(), _state())


def _update(lcfg, batch, ref_params=None):
  """(params before, params after, metrics) of one update from the seed-0 init; θ_ref = θ unless given."""
  st = _state()
  before = jax.device_get(st["params"])
  ref = jax.tree.map(lambda x: x.copy(), st["params"]) if ref_params is None else ref_params(st["params"])
  new, metrics = _update_fn(lcfg)(st, ref, parallel.shard_batch(_mesh(), batch))
  return before, jax.device_get(new["params"]), jax.device_get(metrics), ref


def test_kl_gradient_is_exactly_zero_at_the_reference():
  """θ = θ_ref, every advantage 0, β = 0.04: the update is exactly zero, whatever the reference scorer says.

  The reference log-probs come from the separately compiled scorer (as in the loop) and, to make the test
  independent of whether this backend happens to compile both forwards identically, with 1e-6 noise added:
  without the fix that noise alone moves every weight by ~lr.
  """
  batch = _batch(5)
  batch["adv_BN"][:] = 0.0
  mesh = _mesh()
  params = state_lib.init_params(CFG, mesh, jax.random.key(0))
  ref_fn = S.make_ref_logprobs(CFG, 1.0, N, mesh, params)
  ref_logp = np.asarray(ref_fn(params, jnp.asarray(batch["tokens_BS"]), jnp.asarray(batch["mask_BS"])))
  noise = np.random.default_rng(0).normal(size=ref_logp.shape).astype(np.float32) * 1e-6
  for est in ("k3", "k2"):
    for rl in (ref_logp, ref_logp + noise):
      batch["ref_logp_BN"] = (rl * batch["resp_mask_BN"]).astype(np.float32)
      before, after, m, _ = _update(LossConfig(kl_coef=0.04, kl_estimator=est), batch)
      assert m["update_norm"] == 0.0 and m["grad_norm"] == 0.0, (est, m["update_norm"])
      jax.tree.map(np.testing.assert_array_equal, before, after)
      assert m["kl/k3"] == 0.0 and m["kl/k1"] == 0.0
  # control: a reference a hair away from θ is not θ, so the KL gradient acts and Adam moves by ~lr
  def nudge(p):
    leaves, tree = jax.tree.flatten(jax.tree.map(lambda x: x.copy(), p))
    return jax.tree.unflatten(tree, [leaves[0] * (1 + 1e-6)] + leaves[1:])
  _, _, m, _ = _update(LossConfig(kl_coef=0.04), batch, ref_params=nudge)
  assert m["update_norm"] > 1e-4


def test_kl_gate_only_when_params_equal():
  """With β > 0 and θ ≠ θ_ref (a real difference), the loss uses the given reference log-probs unchanged."""
  batch = _batch(6)
  mesh = _mesh()
  params = state_lib.init_params(CFG, mesh, jax.random.key(0))
  ref_params = jax.tree.map(lambda x: x * 0.5, params)
  lcfg = LossConfig(kl_coef=0.5)
  mb = {k: jnp.asarray(v) for k, v in batch.items()}
  logits = S.response_logits(CFG, ref_params, mb["tokens_BS"], mb["mask_BS"], N)
  mb["ref_logp_BN"] = S.token_logp_entropy(logits, mb["tokens_BS"][:, -N:], 1.0)[0] * mb["resp_mask_BN"]
  mb["at_ref"] = S.params_equal(params, ref_params)
  assert not bool(mb["at_ref"]) and bool(S.params_equal(params, jax.tree.map(lambda x: x.copy(), params)))
  _, stats = S.policy_loss(CFG, lcfg, 1.0, N, params, mb)
  logits = S.response_logits(CFG, params, mb["tokens_BS"], mb["mask_BS"], N)
  logp = S.token_logp_entropy(logits, mb["tokens_BS"][:, -N:], 1.0)[0]
  want = float((L.k3(logp, mb["ref_logp_BN"]) * mb["resp_mask_BN"]).sum())
  assert float(stats["k3"]) == pytest.approx(want, rel=1e-6) and want > 1e-3


def test_clip_cov_step_detaching_everything_moves_nothing():
  """ratio 1 and an unbounded band: every token is either clipped or detached -> exactly zero update."""
  lcfg = _CovLoss(name="clip_cov", cov_ratio=1.0, clip_cov_lb=-1e30, clip_cov_ub=1e30)
  before, after, m, _ = _update(lcfg, _batch(7))
  assert m["update_norm"] == 0.0 and m["clip_frac"] == 1.0
  jax.tree.map(np.testing.assert_array_equal, before, after)
  _, _, m_narrow, _ = _update(_CovLoss(name="clip_cov"), _batch(7))
  assert m_narrow["update_norm"] > 0


def test_clip_cov_step_sharded_equals_unsharded():
  """The random draw comes from the minibatch's bits, not from the layout: 8 devices pick the same tokens."""
  lcfg = _CovLoss(name="clip_cov", cov_ratio=0.1, clip_cov_lb=-1e30, clip_cov_ub=1e30)
  _, p1, m1, _ = _update(lcfg, _batch(10))
  mesh8 = parallel.make_mesh(parallel.MeshConfig(2, 2, 2))
  params = state_lib.init_params(CFG, mesh8, jax.random.key(0))
  st = {"params": params, "opt_state": state_lib.init_opt_state(_TX, params, mesh8)}
  ref = jax.tree.map(lambda x: x.copy(), params)
  new, m8 = S.make_update_step(CFG, lcfg, _TX, 1.0, 2, N, mesh8, st)(st, ref, parallel.shard_batch(mesh8, _batch(10)))
  assert float(m8["clip_frac"]) == m1["clip_frac"] > 0
  jax.tree.map(functools.partial(np.testing.assert_allclose, atol=1e-5), p1, jax.device_get(new["params"]))


def test_kl_cov_step_with_zero_coef_is_vanilla():
  _, p_van, m_van, _ = _update(LossConfig(name="vanilla"), _batch(8))
  _, p_kl, m_kl, _ = _update(_CovLoss(name="kl_cov", kl_cov_coef=0.0), _batch(8))
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=0, atol=1e-7), p_van, p_kl)
  _, p_kl1, _, _ = _update(_CovLoss(name="kl_cov", cov_ratio=0.5, kl_cov_coef=1.0), _batch(8))
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(p_van), jax.tree.leaves(p_kl1)))


def _original_policy_loss(model_cfg, lcfg, temperature, max_len, params, mb, role_metrics=True):
  """`rldyn.rl.step.policy_loss` as it was before the control arms (frozen): the default graph's golden."""
  n = mb["resp_mask_BN"].shape[1]
  logits = S.response_logits(model_cfg, params, mb["tokens_BS"], mb["mask_BS"], n)
  logp, ent = S.token_logp_entropy(logits, mb["tokens_BS"][:, -n:], temperature)
  m = mb["resp_mask_BN"]
  pg, clipped = L.POLICY_LOSSES.get(lcfg.name)(
      logp, mb["old_logp_BN"], mb["adv_BN"], lcfg.eps_low, lcfg.eps_high, lcfg.dual_clip or None)
  agg = functools.partial(L.AGGREGATIONS.get(lcfg.aggregation), mask_BT=m, max_len=max_len)
  kl = L.KL_ESTIMATORS.get(lcfg.kl_estimator)(logp, mb["ref_logp_BN"])
  loss_pg = agg(pg)
  loss = loss_pg + lcfg.kl_coef * agg(kl) - lcfg.entropy_coef * agg(ent)
  sums = {
      "tokens": m.sum(),
      "clip": (clipped * m).sum(),
      "k1": (L.k1(logp, mb["ref_logp_BN"]) * m).sum(),
      "k3": (L.k3(logp, mb["ref_logp_BN"]) * m).sum(),
      "logp_diff_sum": (jnp.abs(logp - mb["old_logp_BN"]) * m).sum(),
      "logp_diff_max": jnp.max(jnp.abs(logp - mb["old_logp_BN"]) * m),
  }
  for name, w in (token_stats.role_weights(m, mb["roles_BN"]).items() if role_metrics else ()):
    sums[f"tokens_{name}"] = w.sum()
    sums[f"clip_{name}"] = (clipped * w).sum()
  return loss, {"loss/pg": loss_pg, "loss/total": loss, **sums}


@pytest.mark.parametrize("lcfg", [LossConfig(), LossConfig(aggregation="seq-mean-token-mean", entropy_coef=0.01),
                                  LossConfig(name="vanilla", dual_clip=3.0)])
def test_default_graphs_are_unchanged(lcfg):
  """With kl_coef = 0 and the built-in losses, the objective's value and gradient are bit-identical to the
  original's, and every original metric sum is too. (Metrics added since, such as the per-role KL sums,
  may extend the aux dict: the jaxpr is no longer compared whole.)"""
  params = state_lib.init_params(CFG, _mesh(), jax.random.key(0))
  mb = {k: jnp.asarray(v) for k, v in _batch(9).items()}

  def run(f):
    return jax.jit(jax.value_and_grad(functools.partial(f, CFG, lcfg, 1.0, N), has_aux=True))(params, mb)

  (loss, aux), grads = run(S.policy_loss)
  (loss0, aux0), grads0 = run(_original_policy_loss)
  assert float(loss) == float(loss0)
  for g, g0 in zip(jax.tree.leaves(grads), jax.tree.leaves(grads0)):
    np.testing.assert_array_equal(np.asarray(g), np.asarray(g0))
  assert set(aux0) <= set(aux)
  for k in aux0:
    np.testing.assert_array_equal(np.asarray(aux[k]), np.asarray(aux0[k]), err_msg=k)


# ---- loop-level arms: KL reward penalty, dynamic sampling, reference reset (rldyn.rl.credit) -----------

from rldyn.rl import credit as C  # noqa: E402
from rldyn.rl import verifree as V  # noqa: E402


def test_zero_reward_gives_zero_advantages():
  task = make_task("arithmetic")
  ps = [p for p in _problems(task, 2) for _ in range(2)]
  r = R.compute(_ctx(task, ps, ["x", "y", "z", "w"], 2, "zero"))
  assert r.tolist() == [0.0] * 4 and np.all(np.asarray(A.grpo(r.reshape(2, 2))) == 0)


def test_kl_reward_penalty_by_hand():
  old = np.array([[-1.0, -2.0, -0.5], [-0.1, -0.2, -30.0]], np.float32)
  ref = np.array([[-1.5, -1.0, -9.0], [-0.1, -0.4, 0.0]], np.float32)
  mask = np.array([[1, 1, 0], [1, 1, 1]], np.float32)
  r = np.array([1.0, 0.0], np.float32)
  pen, kl = C.kl_reward_penalty(r, old, ref, mask, beta=0.1)
  # row 0: k1 = 0.5 − 1.0 (third token masked) = −0.5; row 1: 0 + 0.2 + clamp(−30, ±10) = −9.8
  np.testing.assert_allclose(kl, [-0.5, -9.8], rtol=1e-6)
  np.testing.assert_allclose(pen, [1.05, 0.98], rtol=1e-6)
  np.testing.assert_array_equal(C.kl_reward_penalty(r, old, old, mask, 0.5)[0], r)  # θ = θ_ref: no penalty
  with pytest.raises(ValueError, match="beta >= 0"):
    C.kl_reward_penalty(r, old, ref, mask, -1.0)


def test_dynamic_sampling_keeps_informative_groups_and_refills():
  r0 = np.array([[1, 1], [0, 1], [0, 0], [1, 0]], np.float32)  # groups 1 and 3 informative
  assert C.informative_groups(r0).tolist() == [False, True, False, True]
  sel, done = C.dynamic_sampling([r0], target=4, max_rounds=2)
  assert sel == [(0, 1), (0, 3)] and not done
  r1 = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], np.float32)
  sel, done = C.dynamic_sampling([r0, r1], target=4, max_rounds=2)
  assert sel == [(0, 1), (0, 3), (1, 1), (1, 2)] and done
  # cap reached short of the target: pad with the earliest dropped groups (zero advantage), same shape
  dead = np.ones((4, 2), np.float32)
  sel, done = C.dynamic_sampling([r0, dead], target=4, max_rounds=1)
  assert done and sel == [(0, 1), (0, 3), (0, 0), (0, 2)]
  assert C.dynamic_sampling([r0], target=2, max_rounds=0) == ([(0, 1), (0, 3)], True)
  assert C.dynamic_sampling([dead], target=2, max_rounds=0) == ([(0, 0), (0, 1)], True)
  # refill streams are deterministic and differ from the step's own stream and from each other
  a, b = C.refill_stream(0, 5, 1).random(3), C.refill_stream(0, 5, 1).random(3)
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, C.refill_stream(0, 5, 2).random(3))
  assert not np.allclose(a, np.random.default_rng([0, 1, 5]).random(3))
  with pytest.raises(ValueError, match="count from 1"):
    C.refill_stream(0, 5, 0)


def test_should_reset_schedule_and_plateau():
  assert not C.should_reset(0, [], every=10, patience=0, delta=0.0)
  assert C.should_reset(10, [], every=10, patience=0, delta=0.0)
  assert not C.should_reset(15, [], every=10, patience=0, delta=0.0, last_reset=10)
  assert C.should_reset(20, [], every=10, patience=0, delta=0.0, last_reset=10)
  h = [(0, 0.10), (10, 0.20), (20, 0.21), (30, 0.19)]
  # best before the last 2 evals = 0.20; the last two (0.21, 0.19) improve by 0.01: a plateau iff δ >= 0.01
  assert C.should_reset(30, h, every=0, patience=2, delta=0.02)
  assert not C.should_reset(30, h, every=0, patience=2, delta=0.005)
  assert not C.should_reset(25, h, every=0, patience=2, delta=0.02)  # not an evaluation step
  assert not C.should_reset(30, h, every=0, patience=3, delta=0.02)  # needs patience + 1 evals
  assert not C.should_reset(30, h, every=0, patience=2, delta=0.02, last_reset=20)  # too few since reset
  assert not C.should_reset(30, h, every=0, patience=0, delta=1.0)


# ---- VeriFree ------------------------------------------------------------------------------------------

def test_verifree_split_reward_and_weights_by_hand():
  assert V.split_at_marker([5, 6, 7, 8, 9], [7, 8]) == 4
  assert V.split_at_marker([5, 6, 7], [7, 8]) is None
  logp = np.log(np.array([[0.5, 0.8, 1.0], [0.2, 1.0, 1.0], [0.9, 0.9, 0.9]], np.float32))
  mask = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1]], np.float32)
  r = V.reward(logp, mask, np.array([True, True, False]))
  np.testing.assert_allclose(r, [0.4, 0.2, 0.0], rtol=1e-6)  # 0.5·0.8; 0.2; no marker -> 0
  a, w = V.weights(r, 3)
  np.testing.assert_allclose(a, [0.4 - 0.1, 0.2 - 0.2, 0.0 - 0.3], atol=1e-7)  # R_i − mean_{j≠i} R_j
  assert abs(a.sum()) < 1e-6 and np.array_equal(w, r)
  with pytest.raises(ValueError, match="group_size"):
    V.weights(r, 2)


def test_verifree_surrogate_gradient_by_hand():
  """Gradient of the surrogate w.r.t. per-row log-probs is −w/(B·L_max) on each masked token."""
  lz = jnp.array([[-1.0, -2.0], [-0.5, -0.5]])
  ly = jnp.array([[-0.3], [-0.7]])
  mz, my = jnp.array([[1.0, 0.0], [1.0, 1.0]]), jnp.ones((2, 1))
  a, r = np.array([0.3, -0.3], np.float32), np.array([0.6, 0.2], np.float32)
  gz, gy = jax.grad(lambda z, y: V.surrogate(z, mz, y, my, a, r, max_len=4), argnums=(0, 1))(lz, ly)
  np.testing.assert_allclose(gz, -np.array([[0.3, 0.0], [-0.3, -0.3]]) / 8, atol=1e-7)
  np.testing.assert_allclose(gy, -np.array([[0.6], [0.2]]) / 8, atol=1e-7)


def test_verifree_estimator_is_unbiased_with_lower_variance_than_the_verifier():
  """Toy categorical model: z ~ π(z), y ~ π(y|z), y* = 0. Both single-sample estimators (verifier:
  1[y = y*]∇log π(z, y); VeriFree: the surrogate's gradient with R = π(y*|z), no baseline) have mean ∇J,
  J = Σ_z π(z)π(y*|z); VeriFree's total variance is smaller (Rao-Blackwellisation; exact enumeration)."""
  rng = np.random.default_rng(0)
  theta = {"z": jnp.asarray(rng.normal(size=3), jnp.float32), "y": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)}
  flat = lambda g: np.concatenate([np.ravel(g["z"]), np.ravel(g["y"])])  # noqa: E731
  pz = np.asarray(jax.nn.softmax(theta["z"]))
  py = np.asarray(jax.nn.softmax(theta["y"], axis=-1))
  grad_j = flat(jax.grad(lambda t: (jax.nn.softmax(t["z"]) * jax.nn.softmax(t["y"], -1)[:, 0]).sum())(theta))

  def logp(t, z, y):
    return jax.nn.log_softmax(t["z"])[z], jax.nn.log_softmax(t["y"][z])[y]

  @jax.jit
  def vf_grad(t, z, rz):
    one = jnp.ones((1, 1))
    return jax.grad(lambda t: -V.surrogate(logp(t, z, 0)[0][None, None], one, logp(t, z, 0)[1][None, None], one,
                                           rz[None], rz[None], 1))(t)

  ver_grad = jax.jit(jax.grad(lambda t, z, y: sum(logp(t, z, y))))
  vf, ver = [], []
  for z in range(3):
    vf.append((pz[z], flat(vf_grad(theta, z, jnp.float32(py[z, 0])))))
    for y in range(4):
      ver.append((pz[z] * py[z, y], flat(ver_grad(theta, z, y)) * (y == 0)))

  def moments(samples):
    mean = sum(p * g for p, g in samples)
    return mean, sum(p * float(g @ g) for p, g in samples) - float(mean @ mean)

  (m_vf, var_vf), (m_ver, var_ver) = moments(vf), moments(ver)
  np.testing.assert_allclose(m_vf, grad_j, atol=1e-6)
  np.testing.assert_allclose(m_ver, grad_j, atol=1e-6)
  assert var_vf < var_ver, (var_vf, var_ver)
