"""Token-role taggers, strategic-gram mining and matching, validation and the CLI (rldyn.roles); CPU."""

import json
import math
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import smoke_config
from rldyn import config as config_lib
from rldyn import model as model_lib
from rldyn import roles
from rldyn.metrics.entropy import semantic_entropy
from rldyn.roles import validation
from rldyn.tasks import EXECUTION, OTHER, PLANNING, TOKENIZER, make_task
from rldyn.workdir import Workdir

tokenizers = pytest.importorskip("tokenizers")

P, E, O = PLANNING, EXECUTION, OTHER


def _lexicon(groups, **match):
  return roles.Lexicon(tuple(roles.Group(gid, tuple(ngs)) for gid, ngs in groups),
                       roles.MatchOptions(**match))


@pytest.fixture(scope="module")
def countdown():
  return make_task("countdown")


@pytest.fixture(scope="module")
def traces(countdown):
  return [t for _, t in roles.reference_traces(countdown, 24, seed=3, correct_only=False)]


@pytest.fixture(scope="module")
def bpe():
  """A byte-level BPE trained in memory: words after the first carry a leading-space 'Ġ'."""
  from tokenizers import decoders, models, pre_tokenizers, trainers  # pylint: disable=g-import-not-at-top
  corpus = ["Hmm, but wait, let me check the sum again.", "but wait this is wrong, let me check",
            "let me check the answer but wait", "the sum of the numbers is the answer",
            "<think> try this first </think> answer 5"]
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.train_from_iterator(corpus * 10, trainers.BpeTrainer(
      vocab_size=400, special_tokens=["<s>", "</s>"], show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  return tok


# ---- mining --------------------------------------------------------------------------------------

CORPUS = ["but wait let me check the sum", "but wait let me redo it", "ok so but wait let me",
          "we can use the fact that x", "We can use the fact that y", "random words here now"]


def test_miner_exact_groups_and_cdf_ranking():
  lex = roles.mine_lexicon(CORPUS, n_min=3, n_max=3, top_frac=1.0, min_df=2)
  got = [(g.ngrams, g.cdf) for g in lex.groups]
  # CDF descending; ties alphabetical. Case-folded: "We can use" counts for "we can use".
  assert got == [(("but wait let",), 3), (("wait let me",), 3), (("can use the",), 2),
                 (("the fact that",), 2), (("use the fact",), 2), (("we can use",), 2)]
  assert [g.id for g in lex.groups] == [f"g{i}" for i in range(6)]
  top = roles.mine_lexicon(CORPUS, n_min=3, n_max=5, top_frac=0.2, min_df=2)
  # 3..5-grams with df >= 2: 6 three-grams + 4 four-grams + 2 five-grams = 12; ceil(0.2 * 12) = 3,
  # all CDF 3 ties broken by more words first.
  assert [(g.ngrams[0], g.cdf) for g in top.groups] == [
      ("but wait let me", 3), ("but wait let", 3), ("wait let me", 3)]
  assert top.meta["candidates"] == 12


def test_miner_embedding_groups_use_union_cdf():
  def embed(strings):  # two clear meanings: "wait" phrases vs the rest
    return np.array([[1.0, 0.05 * i] if "wait" in s else [0.05 * i, 1.0]
                     for i, s in enumerate(strings)])
  lex = roles.mine_lexicon(CORPUS, n_min=3, n_max=3, top_frac=1.0, embed=embed, num_groups=2)
  assert [(sorted(g.ngrams), g.cdf) for g in lex.groups] == [
      (["but wait let", "wait let me"], 3),  # union over its n-grams' documents, not the sum (6)
      (["can use the", "the fact that", "use the fact", "we can use"], 2)]
  assert lex.meta["grouping"] == "kmeans"
  assert len(roles.mine_lexicon(CORPUS, n_min=3, n_max=3, top_frac=0.5, embed=embed,
                                num_groups=2).groups) == 1


def test_kmeans_recovers_blobs():
  rng = np.random.default_rng(0)
  centers = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
  x = np.concatenate([c + rng.normal(size=(30, 2)) for c in centers])
  labels = roles.kmeans(x, 3, seed=1)
  for b in range(3):
    assert len(set(labels[30 * b:30 * (b + 1)])) == 1
  assert len(set(labels)) == 3


def test_lexicon_json_round_trip(tmp_path):
  lex = roles.mine_lexicon(CORPUS, n_min=3, n_max=4, top_frac=0.5, meta={"source": "test"},
                           match=roles.MatchOptions(case_sensitive=True, number_placeholder=True))
  path = str(tmp_path / "lex.json")
  lex.save(path)
  with open(path) as f:
    d = json.load(f)
  assert d["version"] == 1 and {"id", "ngrams", "cdf"} == set(d["groups"][0])
  back = roles.load_lexicon(path)
  assert back == lex
  assert back.match == roles.MatchOptions(True, True)


def test_shipped_lexicons_load_and_match():
  assert {"math_en", "countdown"} <= set(roles.shipped_lexicons())
  math_en = roles.load_lexicon("math_en")
  uses = roles.group_uses(["But wait, let’s try a different approach. Let me check: 2+2=4."], math_en)
  assert uses == ["pause", "backtrack", "verify"]
  cd = roles.load_lexicon("countdown")
  assert cd.meta["n"] == [3, 5] and cd.meta["top_frac"] == 0.2 and all(g.cdf >= 2 for g in cd.groups)
  with pytest.raises(FileNotFoundError, match="math_en"):
    roles.load_lexicon("no_such_lexicon")


def test_lexicon_rejects_ngram_in_two_groups():
  with pytest.raises(ValueError, match="in groups"):
    _lexicon([("a", ["let me check"]), ("b", ["Let me  check"])])


# ---- matching ------------------------------------------------------------------------------------


def test_matcher_word_boundaries_and_overlaps():
  lex = _lexicon([("a", ["try 1 - 9"]), ("b", ["- 9 = 2"]), ("c", ["left 2"])])
  text = "try 11 - 9 = 2 left 22 , 9"
  m = roles.Matcher(lex)
  # "try 1 - 9" must not match inside "try 11"; "left 2" must not match "left 22".
  assert [(o.group, text[o.start:o.end]) for o in m.find(text)] == [("b", "- 9 = 2")]
  ids, got = roles.tag_text(text, lex, TOKENIZER)
  assert [TOKENIZER.id_to_token(i) for i in ids] == "try 1 1 - 9 = 2 left 2 2 , 9".split()
  np.testing.assert_array_equal(got, [E, E, E, P, P, P, P, E, E, E, E, E])
  # Overlapping occurrences of two n-grams are both covered.
  lex2 = _lexicon([("a", ["try 11 - 9"]), ("b", ["- 9 = 2"])])
  np.testing.assert_array_equal(roles.tag_text(text, lex2, TOKENIZER)[1],
                                [P, P, P, P, P, P, P, E, E, E, E, E])


def test_number_placeholder_matches_any_number():
  lex = _lexicon([("choice", ["try <num> + <num>"])], number_placeholder=True)
  ids, got = roles.tag_text("try 3 + 14 = 17 no try 12 + 5 = 17 goal", lex, TOKENIZER)
  np.testing.assert_array_equal(got, [P, P, P, P, P, E, E, E, E, P, P, P, P, P, E, E, E, E])


def test_synthetic_ids_path_matches_text_path(countdown, traces):
  lex = roles.load_lexicon("countdown")
  tt = roles.text_tokenizer(TOKENIZER)
  rng = np.random.default_rng(0)
  for text in traces[:8]:
    ids, from_text = roles.tag_text(text, lex, TOKENIZER)
    padded = [TOKENIZER.bos_id] + ids + [TOKENIZER.eos_id, TOKENIZER.pad_id]
    from_ids = roles.lexicon_roles(padded, lex, TOKENIZER)
    assert from_ids[0] == O and list(from_ids[-2:]) == [O, O]
    np.testing.assert_array_equal(from_ids[1:-2], from_text)
  for _ in range(20):  # any ids: offsets equal those of re-encoding the decoded text
    ids = rng.integers(3, TOKENIZER.vocab_size, size=int(rng.integers(0, 30))).tolist()
    text, off = tt.text_and_offsets(ids)
    enc_ids, enc_off = tt.encode_with_offsets(TOKENIZER.decode(ids))
    assert enc_ids == ids and text == TOKENIZER.decode(ids)
    np.testing.assert_array_equal(off, enc_off)


def test_batch_offsets_match_single_decode():
  tt = roles.text_tokenizer(TOKENIZER)
  rng = np.random.default_rng(1)
  ids_list = [rng.integers(0, TOKENIZER.vocab_size, size=int(rng.integers(0, 25))).tolist()
              for _ in range(30)]
  texts, offsets = tt.batch_text_and_offsets(ids_list)
  for ids, text, off in zip(ids_list, texts, offsets):
    one_text, one_off = tt.text_and_offsets(ids)
    assert text == one_text == TOKENIZER.decode(ids)
    keep = ~tt.special_mask(ids)
    np.testing.assert_array_equal(off[keep], one_off[keep])
    assert (off[~keep, 0] == off[~keep, 1]).all()  # specials: empty spans


def _naive_mask(text, lex):
  words, spans = roles.words_with_spans(text, lex.match)
  keys = {roles.ngram_words(ng, lex.match) for g in lex.groups for ng in g.ngrams}
  mask = np.zeros(len(text), bool)
  for key in keys:
    for i in range(len(words) - len(key) + 1):
      if tuple(words[i:i + len(key)]) == key:
        mask[spans[i][0]:spans[i + len(key) - 1][1]] = True
  return mask


def test_matcher_equals_naive_reference_and_dict_fallback():
  rng = np.random.default_rng(2)
  vocab = ["a", "B", "c", "d", "12", "7", ",", "let's"]
  texts = [" ".join(rng.choice(vocab, size=int(rng.integers(0, 30)))) for _ in range(40)]
  for placeholder in (False, True):
    ngrams = {" ".join(rng.choice(vocab, size=int(rng.integers(1, 5)))) for _ in range(25)}
    lex = roles.Lexicon(tuple(roles.Group(f"g{i}", (ng,)) for i, ng in enumerate(sorted(ngrams))),
                        roles.MatchOptions(number_placeholder=placeholder), {})
    m = roles.Matcher(lex)
    fallback = roles.Matcher(lex)
    fallback._codes = {}  # pylint: disable=protected-access
    mask, base = m.char_masks(texts)
    for text, b in zip(texts, base):
      np.testing.assert_array_equal(mask[b:b + len(text)], _naive_mask(text, lex), err_msg=text)
      np.testing.assert_array_equal(fallback.char_mask(text), _naive_mask(text, lex))
    assert m.uses_batch(texts) == fallback.uses_batch(texts)


def test_bpe_leading_space_tokens(bpe, tmp_path):
  lex = _lexicon([("pause", ["but wait"]), ("verify", ["let me check"])])
  text = "Hmm, but wait, let me check the sum again."
  ids, got = roles.tag_text(text, lex, bpe)
  toks = [bpe.id_to_token(i) for i in ids]
  plan = [i for i, r in zip(ids, got) if r == P]
  assert bpe.decode(plan) == " but wait let me check"
  assert any(bpe.id_to_token(i).startswith("Ġ") for i in plan)  # the leading-space tokens
  assert toks[got.tolist().index(P) - 1] == ","  # the comma before "but" is execution
  # From ids (with a special token), via decode + re-encode.
  from_ids = roles.lexicon_roles([bpe.token_to_id("<s>")] + ids, lex, bpe)
  assert from_ids[0] == O
  np.testing.assert_array_equal(from_ids[1:], got)
  path = str(tmp_path / "tokenizer.json")
  bpe.save(path)
  np.testing.assert_array_equal(roles.tag_text(text, lex, path)[1], got)


def test_bpe_non_canonical_ids_fall_back_to_prefix_decoding(bpe):
  lex = _lexicon([("pause", ["but wait"])])
  ids = bpe.encode("ok but wait now").ids
  wait = bpe.token_to_id("Ġwait")
  assert wait in ids
  k = ids.index(wait)
  chars = [bpe.token_to_id(c) for c in ["Ġ", "w", "a", "i", "t"]]
  odd = ids[:k] + chars + ids[k + 1:]  # same text, not the canonical encoding
  assert bpe.decode(odd) == bpe.decode(ids) and bpe.encode(bpe.decode(odd)).ids != odd
  assert bpe.id_to_token(ids[k - 1]) == "Ġbut"
  got = roles.lexicon_roles(odd, lex, bpe)
  # "Ġbut", then "Ġ" (the space inside "but wait") and w a i t; the rest is execution.
  expect = [P if k - 1 <= j <= k + 4 else E for j in range(len(odd))]
  np.testing.assert_array_equal(got, expect)


def test_word_level_tokenizer_offsets():
  from tokenizers import models, pre_tokenizers  # pylint: disable=g-import-not-at-top
  vocab = {w: i for i, w in enumerate(["[UNK]", "so", "let", "me", "check", "it", ",", "."])}
  tok = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  ids, got = roles.tag_text("so, let me   check it.", _lexicon([("v", ["let me check"])]), tok)
  assert [tok.id_to_token(i) for i in ids] == ["so", ",", "let", "me", "check", "it", "."]
  np.testing.assert_array_equal(got, [E, E, P, P, P, E, E])


# ---- semantic entropy ----------------------------------------------------------------------------


def test_semantic_entropy_of_group_uses():
  lex = _lexicon([("a", ["let me check"]), ("b", ["but wait"]), ("c", ["on second thought"])])
  texts = ["let me check. but wait", "on second thought, let me check", "but wait on second thought"]
  uses = roles.group_uses(texts, lex)
  assert sorted(uses) == ["a", "a", "b", "b", "c", "c"]
  assert semantic_entropy(uses) == pytest.approx(math.log(3))
  assert roles.planning_semantic_entropy(["but wait", "BUT WAIT, but wait"], lex) == 0.0
  assert roles.planning_semantic_entropy(["nothing here"], lex) == 0.0


def test_group_uses_are_leftmost_longest_non_overlapping():
  lex = _lexicon([("a", ["let me check"]), ("b", ["me check the"]), ("c", ["check"])])
  assert roles.group_uses(["let me check the sum"], lex) == ["a"]
  assert roles.group_uses(["check it, let me check"], lex) == ["c", "a"]


# ---- taggers -------------------------------------------------------------------------------------


def test_structural_tagger_is_token_roles(countdown, traces):
  ids_list = [TOKENIZER.encode(t) for t in traces]
  got = roles.make_tagger("structural", countdown)(ids_list, traces, 0)
  for ids, r in zip(ids_list, got):
    assert r.dtype == np.int8
    np.testing.assert_array_equal(r, countdown.token_roles(ids))


def test_lexicon_tagger_and_group_uses(countdown, traces):
  tagger = roles.make_tagger("lexicon", countdown)
  assert tagger.lexicon == roles.load_lexicon("countdown")
  ids_list = [[TOKENIZER.bos_id] + TOKENIZER.encode(t) for t in traces]
  got = tagger(ids_list, traces, 3)
  for ids, text, r in zip(ids_list, traces, got):
    assert r.dtype == np.int8 and len(r) == len(ids) and r[0] == O
    np.testing.assert_array_equal(r[1:], roles.tag_text(text, tagger.lexicon, TOKENIZER)[1])
  assert tagger.group_uses(traces) == roles.group_uses(traces, tagger.lexicon)
  other = roles.make_tagger("lexicon", countdown, lexicon_path="math_en")
  assert all((r != P).all() for r in other(ids_list, traces, 0))


def test_placebo_density(countdown, traces):
  ids_list = [TOKENIZER.encode(t) for t in traces]
  ref = roles.make_tagger("structural", countdown)(ids_list, traces, 0)
  tagger = roles.make_tagger("placebo", countdown, placebo_of="structural", seed=7)
  flat_ref = np.concatenate(ref)
  cand = flat_ref != O
  density = (flat_ref == P).sum() / cand.sum()
  steps = 200
  hits = np.zeros(len(flat_ref))
  for step in range(steps):
    got = tagger(ids_list, traces, step)
    assert [len(r) for r in got] == [len(r) for r in ref]
    flat = np.concatenate(got)
    assert (flat == P).sum() == (flat_ref == P).sum()  # same count per batch as the reference
    np.testing.assert_array_equal(flat == O, ~cand)  # only non-other tokens are re-labelled
    hits += flat == P
  np.testing.assert_array_equal(np.concatenate(tagger(ids_list, traces, 5)),
                                np.concatenate(tagger(ids_list, traces, 5)))
  assert not np.array_equal(np.concatenate(tagger(ids_list, traces, 5)),
                            np.concatenate(tagger(ids_list, traces, 6)))
  # Uniform placement: every candidate's planning frequency is the density, within sampling error.
  freq = hits[cand] / steps
  sigma = math.sqrt(density * (1 - density) / steps)
  assert np.abs(freq - density).max() < 5 * sigma
  assert abs(freq.mean() - density) < 1e-9
  # Placebo of the lexicon copies the lexicon's count.
  lex_ref = np.concatenate(roles.make_tagger("lexicon", countdown)(ids_list, traces, 0))
  lex_pl = np.concatenate(roles.make_tagger("placebo", countdown, placebo_of="lexicon")(
      ids_list, traces, 0))
  assert (lex_pl == P).sum() == (lex_ref == P).sum()


def test_spans_tagger(bpe, countdown):
  tagger = roles.make_tagger("spans", countdown, tokenizer=bpe)
  ids = [bpe.token_to_id("<s>")] + bpe.encode("<think> try this first </think> answer 5").ids
  (got,) = tagger([ids], [""], 0)
  by_role = {r: bpe.decode([i for i, x in zip(ids, got) if x == r]) for r in (P, E)}
  assert by_role[P].strip() == "try this first"
  assert by_role[E].strip() == "answer 5"
  assert got[0] == O and got[1] == O  # the special token and "<"
  unclosed = bpe.encode("<think> try this").ids
  (got2,) = roles.make_tagger("spans", countdown, tokenizer=bpe,
                              span_patterns=(r"<think>(.*?)(?:</think>|\Z)",))([unclosed], [""], 0)
  assert bpe.decode([i for i, x in zip(unclosed, got2) if x == P]).strip() == "try this"


def test_unknown_tagger_lists_valid_names(countdown):
  with pytest.raises(ValueError, match="valid: lexicon, placebo, spans, structural"):
    roles.make_tagger("nope", countdown)
  assert roles.TAGGERS.names() == ["lexicon", "placebo", "spans", "structural"]


# ---- validation and CLI --------------------------------------------------------------------------


def test_validate_texts_hand_computed(countdown):
  text = "try 3 + 4 = 7 goal answer ( 3 + 4 )"
  # structural: try 3 + 4 -> P; = 7 -> E; goal -> P; answer -> O; ( 3 + 4 ) -> E.
  lex = _lexicon([("choice", ["try <num> + <num>"])], number_placeholder=True)
  res = roles.validate_texts(countdown, [text], lex, entropies=[np.arange(13.0)], top_frac=0.2)
  assert res["precision"] == 1.0 and res["recall"] == pytest.approx(0.8)
  assert res["f1"] == pytest.approx(2 * 0.8 / 1.8)
  # top ceil(0.2 * 13) = 3 entropies: the last three tokens "+ 4 )", all execution.
  assert res["high_entropy_planning_frac"] == 0.0
  assert roles.high_entropy_planning_frac([np.array([5.0, 0, 0, 0, 9])], [np.array([P, E, E, E, E])],
                                          0.4) == 0.5
  assert res["confusion"]["counts"] == [[0, 0, 1], [0, 4, 1], [0, 0, 7]]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  """A run workdir: the smoke config's config.json, a random-init base model, 40 countdown samples."""
  wd = Workdir(str(tmp_path_factory.mktemp("run")))
  tok = TOKENIZER
  cfg = config_lib.load(smoke_config(), vocab_size=tok.vocab_size, pad_id=tok.pad_id,
                        stop_tokens=(tok.eos_id,))
  wd.write_config(cfg)
  _, task = wd.load_config()
  wd.write_base(model_lib.init_params(cfg.model, jax.random.key(0)), {})
  rng = np.random.default_rng(0)
  os.makedirs(os.path.dirname(wd.samples_path))
  with open(wd.samples_path, "w") as f:
    for step in range(40):
      p = task.sample_problem(rng)
      r = task.reference_trace(p, rng)
      ok = task.verify(p, r)
      f.write(json.dumps({"step": step, "problem": p.uid, "prompt": p.prompt, "response": r,
                          "reward": float(ok), "correct": ok}) + "\n")
  return pathlib.Path(wd.root), cfg, task


def _cli(*args):
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  return subprocess.run([sys.executable, "-m", "rldyn.roles", *args], cwd=root, capture_output=True,
                        text=True, timeout=120)


def test_cli_mine_and_validate(tmp_path, run_dir):
  wd = run_dir[0]
  out = str(tmp_path / "lex.json")
  mined = _cli("mine", f"--samples={wd / 'samples'}", f"--out={out}", "--top_frac=0.5")
  assert mined.returncode == 0, mined.stderr
  lex = roles.load_lexicon(out)
  assert lex.groups and lex.meta["correct_only"] and lex.meta["top_frac"] == 0.5
  assert lex.meta["docs"] == len(roles.read_texts(str(wd), correct_only=True)) < 40
  report = wd / "roles_validation.json"
  report.unlink(missing_ok=True)
  val = _cli("validate", f"--workdir={wd}", f"--lexicon={out}", "--entropy_model=none")
  assert val.returncode == 0, val.stderr
  assert val.stdout.startswith("precision=") and val.stdout.strip().endswith(str(report))
  with open(report) as f:
    res = json.load(f)
  assert {"precision", "recall", "f1", "correct_only", "lexicon"} <= set(res)
  assert 0 < res["precision"] <= 1 and 0 < res["recall"] <= 1
  assert "high_entropy_planning_frac" not in res and res["entropy_model"] == "none"


def test_cli_usage_errors_and_help():
  bad = _cli("minee", "--task=countdown")
  assert bad.returncode != 0
  assert bad.stderr.strip().splitlines() == [
      "rldyn.roles: unknown command 'minee'; valid commands: mine, validate (--help lists the flags)"]
  assert "give exactly one of --workdir or --task" in _cli("validate").stderr
  assert "mine does not take --lexicon, --workdir" in _cli(
      "mine", "--task=countdown", "--out=x.json", "--workdir=w", "--lexicon=l").stderr
  assert "valid: base, final, none" in _cli("validate", "--task=countdown", "--entropy_model=best").stderr
  helped = _cli("--help")  # absl's --help exits 1
  for flag in ("--samples", "--workdir", "--entropy_model", "--[no]number_placeholder", "--top_frac"):
    assert flag in helped.stdout, flag
  assert "python -m rldyn.roles mine" in helped.stdout


def test_python_dash_m_entry_point(tmp_path):
  out = str(tmp_path / "cd.json")
  mined = _cli("mine", "--task=countdown", "--traces=30", f"--out={out}")
  assert mined.returncode == 0, mined.stderr
  assert roles.load_lexicon(out).meta["traces_drawn"] == 30


def test_model_entropies_equal_a_plain_forward(run_dir):
  """Left-padded, batched scoring gives each response's entropies as a plain forward pass does.

  The reference lays each [bos] + prompt + response from position 0 (right-padded, which a causal
  model ignores) and reads the response's entropies at positions len(prompt) - 1 onwards.
  """
  wd, cfg, task = run_dir
  with open(wd / "samples" / "samples.jsonl") as f:
    records = [json.loads(line) for line in f][:5]
  got = validation.model_entropies(str(wd), records, "base", batch_size=2)  # 3 batches, 1 padding row
  tok = task.tokenizer
  prompts = [[tok.bos_id] + tok.encode(r["prompt"]) for r in records]
  responses = [tok.encode(r["response"]) for r in records]
  width = max(len(p) + len(r) for p, r in zip(prompts, responses))
  tokens = np.full((len(records), width), tok.pad_id, np.int32)
  mask = np.zeros(tokens.shape, bool)
  for i, (p, r) in enumerate(zip(prompts, responses)):
    tokens[i, :len(p) + len(r)], mask[i, :len(p) + len(r)] = p + r, True
  params = model_lib.init_params(cfg.model, jax.random.key(0))
  forward = jax.jit(lambda t, m: model_lib.apply(cfg.model, params, t, model_lib.positions_from_mask(m),
                                                 model_lib.causal_mask(m))[0])
  z = np.asarray(forward(tokens, mask), np.float64) / cfg.sampling.temperature
  logp = z - z.max(-1, keepdims=True)
  logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
  ent = -(np.exp(logp) * logp).sum(-1)
  for i, (p, r) in enumerate(zip(prompts, responses)):
    assert got[i].shape == (len(r),)
    np.testing.assert_allclose(got[i], ent[i, len(p) - 1:len(p) - 1 + len(r)], rtol=1e-4, atol=1e-4)
  with pytest.raises(FileNotFoundError, match="no RL checkpoints"):
    validation.model_entropies(str(wd), records, "final")
  with pytest.raises(ValueError, match="valid: base, final, none"):
    validation.validate_workdir(str(wd), entropy_model="best")


def test_validate_workdir_with_base_entropies(run_dir):
  wd = run_dir[0]
  res = validation.validate_workdir(str(wd), lexicon="countdown", entropy_model="base")
  with open(wd / "roles_validation.json") as f:
    saved = json.load(f)
  assert saved["entropy_model"] == "base" and saved["lexicon"].endswith("lexicon_countdown.json")
  assert 0 <= res["high_entropy_planning_frac"] <= 1 and res["entropy_top_frac"] == 0.2
  assert saved["high_entropy_planning_frac"] == pytest.approx(res["high_entropy_planning_frac"])
  assert res["responses"] == 40 and res["correct_only"]["responses"] < 40


def test_role_ids_have_one_definition():
  from rldyn.roles import ids  # pylint: disable=g-import-not-at-top
  from rldyn.tasks import base  # pylint: disable=g-import-not-at-top
  assert (base.OTHER, base.PLANNING, base.EXECUTION) == (ids.OTHER, ids.PLANNING, ids.EXECUTION)
  assert (roles.OTHER, roles.PLANNING, roles.EXECUTION) == (0, 1, 2)
  assert ids.ROLE_NAMES[ids.PLANNING] == "planning" and ids.ROLE_NAMES[ids.EXECUTION] == "execution"
  with open(ids.__file__) as f:
    assert not [line for line in f if line.startswith(("import ", "from "))]


def test_package_imports_lazily_without_jax():
  code = ("import sys; import rldyn.tasks; from rldyn import roles; roles.make_tagger; roles.group_uses; "
          "roles.mine_lexicon; assert 'jax' not in sys.modules, 'jax imported'; "
          "assert 'rldyn.roles.validation' not in sys.modules; roles.validate_texts; "
          "assert 'jax' in sys.modules")
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
  assert done.returncode == 0, done.stderr
