"""rldyn against live transformers (optional group: needs torch and transformers, skipped without).

    .venv/bin/pip install torch==2.13.0 transformers
    .venv/bin/python -m pytest -q tests/test_hf_transformers.py

Tiny random Llama, Qwen2 and Qwen3 checkpoints are built with transformers here (tied and untied,
one sharded); rldyn's logits, next-token log-probs and entropies must match within 1e-4 in float32 on
left-padded batches; an rldyn export must load in transformers and give the same logits; the
checkpoint tokenizer must render and encode as transformers does; the committed fixtures must still be
what transformers computes.
"""
import importlib.util
import os
import sys

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from rldyn.model import hf  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import test_hf  # noqa: E402  pylint: disable=g-import-not-at-top
import test_hf_tokenizer  # noqa: E402  pylint: disable=g-import-not-at-top

_spec = importlib.util.spec_from_file_location(
    "make_fixtures", os.path.join(test_hf.FIXTURES, "make_fixtures.py"))
make_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_fixtures)


def _build(kind, directory, tie=None, seed=1):
  """A random transformers model saved to `directory` (sharded for qwen2); returns the torch model."""
  overrides = dict(make_fixtures.KINDS[kind])
  if tie is not None:
    overrides["tie_word_embeddings"] = tie
  saved = make_fixtures.KINDS[kind]
  make_fixtures.KINDS[kind] = overrides
  try:
    model = make_fixtures.hf_model(kind, seed)
  finally:
    make_fixtures.KINDS[kind] = saved
  kwargs = {"max_shard_size": make_fixtures.SHARD[kind]} if kind in make_fixtures.SHARD else {}
  model.save_pretrained(directory, **kwargs)
  return model


def _compare(cfg, params, model, t=24, seed=3):
  tokens, mask, positions = make_fixtures.batch(seed, t)
  want = make_fixtures.hf_logits(model, tokens, mask, positions)
  got = test_hf.forward(cfg, params, tokens, mask)
  np.testing.assert_allclose(got[mask], want[mask], atol=1e-4, rtol=0)
  logp, ent = test_hf.logp_entropy(got)
  want_logp, want_ent = test_hf.logp_entropy(want)  # transformers' logits, processed the same way
  nxt = tokens[:, 1:]
  pick = lambda lp: np.take_along_axis(lp[:, :-1], nxt[..., None], -1)[..., 0]
  real = mask[:, :-1] & mask[:, 1:]
  np.testing.assert_allclose(pick(logp)[real], pick(want_logp)[real], atol=1e-4)
  np.testing.assert_allclose(ent[mask], want_ent[mask], atol=1e-4)
  return got


@pytest.mark.parametrize("kind,tie", [("llama", False), ("llama", True), ("qwen2", True),
                                      ("qwen2", False), ("qwen3", False), ("qwen3", True)])
def test_logits_match_transformers(tmp_path, kind, tie):
  model = _build(kind, str(tmp_path), tie)
  cfg, params = hf.load(str(tmp_path))
  assert cfg.tie_embeddings == tie and ("lm_head" in params) != tie
  if kind == "qwen2":
    assert len([f for f in os.listdir(tmp_path) if f.endswith(".safetensors")]) > 1
  _compare(cfg, params, model)


@pytest.mark.parametrize("kind", test_hf.KINDS)
def test_fixtures_are_what_transformers_computes(kind):
  model = transformers.AutoModelForCausalLM.from_pretrained(test_hf.fixture(kind), dtype=torch.float32)
  ref = np.load(os.path.join(test_hf.fixture(kind), "reference.npz"))
  want = make_fixtures.hf_logits(model, ref["tokens"], ref["mask"], ref["positions"])
  np.testing.assert_allclose(ref["logits"][ref["mask"]], want[ref["mask"]], atol=1e-5)


@pytest.mark.parametrize("kind", test_hf.KINDS)
def test_export_loads_in_transformers(tmp_path, kind):
  original = transformers.AutoModelForCausalLM.from_pretrained(test_hf.fixture(kind), dtype=torch.float32)
  cfg, params = hf.load(test_hf.fixture(kind))
  hf.save(str(tmp_path), cfg, params, max_shard_bytes=40_000)
  exported = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32)
  assert type(exported) is type(original)
  tokens, mask, positions = make_fixtures.batch(5, 20)
  want = make_fixtures.hf_logits(original, tokens, mask, positions)
  got = make_fixtures.hf_logits(exported, tokens, mask, positions)
  np.testing.assert_allclose(got[mask], want[mask], atol=1e-5)
  _compare(cfg, params, exported)


def test_bf16_export_loads_in_transformers(tmp_path):
  cfg, params = hf.load(test_hf.fixture("qwen3"))
  hf.save(str(tmp_path), cfg, params, dtype="bfloat16")
  model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32)
  cfg32, rounded = hf.load(str(tmp_path), param_dtype="float32")
  _compare(cfg32, rounded, model)
  tokens, mask, _ = make_fixtures.batch(3, 24)  # and rounding changed something
  assert np.abs(test_hf.forward(cfg32, rounded, tokens, mask) - test_hf.forward(cfg, params, tokens, mask)
                ).max() > 1e-4


def test_hub_style_config_means_the_same_to_both(tmp_path):
  """transformers 4 / hub config.json: rope_theta and rope_scaling (legacy "type") at the top level."""
  import json  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  d = tmp_path / "llama"
  shutil.copytree(test_hf.fixture("llama"), d)
  c = json.loads((d / "config.json").read_text())
  rope = c.pop("rope_parameters")
  c["rope_theta"] = rope.pop("rope_theta")
  rope["type"] = rope.pop("rope_type")
  c["rope_scaling"] = rope
  (d / "config.json").write_text(json.dumps(c))
  model = transformers.AutoModelForCausalLM.from_pretrained(str(d), dtype=torch.float32)
  cfg, params = hf.load(str(d))
  assert cfg.rope_scaling == "llama3"
  _compare(cfg, params, model)


@pytest.mark.parametrize("make", ["qwen_dir", "llama_dir"])
def test_tokenizer_matches_transformers(tmp_path, make):
  d = getattr(test_hf_tokenizer, make)(str(tmp_path))
  ours = hf.load_tokenizer(d)
  theirs = transformers.PreTrainedTokenizerFast.from_pretrained(d)
  conversations = [[{"role": "user", "content": "What is 6 * 7?"}],
                   [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "<answer>42</answer>"},
                    {"role": "user", "content": "Again?"}]]
  for msgs in conversations:
    for gen in (True, False):
      text = theirs.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
      assert ours.render_chat(msgs, add_generation_prompt=gen) == text
    ids = theirs.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True)["input_ids"]
    assert ours.prompt_ids(msgs, chat=True) == list(ids)
  for text in test_hf_tokenizer.CORPUS[:3] + ["Question: 1 + 1?\nAnswer:"]:
    ids = theirs(text).input_ids
    assert ours.prompt_ids(text, chat=False) == list(ids)
    assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=True)
  gen = transformers.GenerationConfig.from_pretrained(d)
  assert set(gen.eos_token_id) | {theirs.eos_token_id} == set(ours.eos_ids)
  assert ours.bos_id == theirs.bos_token_id
  assert ours.pad_id == (theirs.pad_token_id if theirs.pad_token_id is not None else ours.eos_id)


def test_rldyn_logits_in_bf16_are_close(tmp_path):
  """bf16 compute (the accelerator setting) stays near transformers' float32 logits."""
  model = _build("qwen2", str(tmp_path))
  cfg, params = hf.load(str(tmp_path), dtype="bfloat16")
  tokens, mask, positions = make_fixtures.batch(4, 16)
  want = make_fixtures.hf_logits(model, tokens, mask, positions)
  got = test_hf.forward(cfg, params, tokens, mask)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got[mask], want[mask], atol=0.15)
