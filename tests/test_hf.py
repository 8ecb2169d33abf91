"""rldyn.model.hf without torch: logits against transformers-computed references, config mapping,
refusals, sharded loading, export round trips.

The checkpoints and reference logits in tests/fixtures/hf were written by transformers
(tests/fixtures/hf/make_fixtures.py); tests/test_hf_transformers.py repeats the comparison live.
"""
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rldyn import model as M
from rldyn import parallel
from rldyn import sampling
from rldyn.model import hf

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "hf")
KINDS = ("llama", "qwen2", "qwen3")


def fixture(kind):
  return os.path.join(FIXTURES, kind)


def forward(cfg, params, tokens, mask):
  mask = jnp.asarray(mask)
  return np.asarray(M.apply(cfg, params, jnp.asarray(tokens), M.positions_from_mask(mask),
                            M.causal_mask(mask))[0])


def logp_entropy(logits):
  logp = sampling.policy_logprobs(jnp.asarray(logits), 1.0)
  return np.asarray(logp), np.asarray(sampling.entropy_from_logprobs(logp))


def np_logp_entropy(logits):
  x = logits.astype(np.float64)
  logp = x - x.max(-1, keepdims=True)
  logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
  return logp, -(np.exp(logp) * logp).sum(-1)


@pytest.fixture(scope="module")
def loaded():
  return {k: hf.load(fixture(k)) for k in KINDS}


@pytest.mark.parametrize("kind", KINDS)
def test_matches_transformers_reference(kind, loaded):
  cfg, params = loaded[kind]
  ref = np.load(os.path.join(fixture(kind), "reference.npz"))
  mask = ref["mask"]
  assert (~mask).sum() == 9  # left padding on two of the three rows
  logits = forward(cfg, params, ref["tokens"], mask)
  want = ref["logits"]
  assert np.abs(want[mask]).max() > 1.0  # the random model is far from uniform
  np.testing.assert_allclose(logits[mask], want[mask], atol=1e-4, rtol=0)
  # Per-token log-probs of the next token and full-vocabulary entropies, as the RL step uses them.
  logp, ent = logp_entropy(logits)
  want_logp, want_ent = np_logp_entropy(want)
  nxt = ref["tokens"][:, 1:]
  pick = lambda lp: np.take_along_axis(lp[:, :-1], nxt[..., None], -1)[..., 0]
  real = mask[:, :-1] & mask[:, 1:]
  np.testing.assert_allclose(pick(logp)[real], pick(want_logp)[real], atol=1e-4)
  np.testing.assert_allclose(ent[mask], want_ent[mask], atol=1e-4)
  assert want_ent[mask].std() > 0.05


def test_config_from_checkpoint(loaded):
  llama, qwen2, qwen3 = (loaded[k][0] for k in KINDS)
  assert (llama.rope_scaling, llama.rope_factor, llama.rope_original_max_len) == ("llama3", 4.0, 16)
  assert not llama.tie_embeddings and not llama.qkv_bias and not llama.qk_norm
  assert (qwen2.rope_scaling, qwen2.rope_factor, qwen2.tie_embeddings, qwen2.qkv_bias) == (
      "linear", 2.0, True, True)
  assert (qwen3.head_dim, qwen3.n_heads, qwen3.d_model, qwen3.qk_norm, qwen3.rope_theta) == (
      16, 4, 32, True, 1e6)
  for cfg in (llama, qwen2, qwen3):
    assert (cfg.vocab_size, cfg.n_layers, cfg.n_kv_heads, cfg.d_ff, cfg.norm_eps, cfg.max_seq_len) == (
        96, 2, 2, 64, 1e-5, 128)
    assert cfg.param_dtype == cfg.dtype == "float32"


def test_hub_style_config_gives_the_same_model(tmp_path, loaded):
  """Hub checkpoints (transformers 4) say rope_theta + rope_scaling, some with the legacy "type" key."""
  d = tmp_path / "llama"
  shutil.copytree(fixture("llama"), d)
  c = json.loads((d / "config.json").read_text())
  rope = c.pop("rope_parameters")
  c["rope_theta"] = rope.pop("rope_theta")
  rope["type"] = rope.pop("rope_type")
  c["rope_scaling"] = rope
  c["torch_dtype"] = c.pop("dtype")
  (d / "config.json").write_text(json.dumps(c))
  cfg, params = hf.load(str(d))
  assert cfg == loaded["llama"][0]
  jax.tree.map(np.testing.assert_array_equal, params, loaded["llama"][1])


def test_rope_inv_freq_by_hand():
  base = M.ModelConfig(vocab_size=8, head_dim=8, rope_theta=10000.0)
  np.testing.assert_allclose(M.decoder.rope_inv_freq(base), [1, 0.1, 0.01, 0.001], rtol=1e-6)
  linear = M.ModelConfig(**{**base.__dict__, "rope_scaling": "linear", "rope_factor": 2.0})
  np.testing.assert_allclose(M.decoder.rope_inv_freq(linear), [0.5, 0.05, 0.005, 0.0005], rtol=1e-6)
  # llama3, original length 16, low/high 1/4: wavelengths 6.28 (between 16/4 and 16: smoothed),
  # 62.8, 628, 6283 (above 16: divided by the factor 4).
  llama3 = M.ModelConfig(**{**base.__dict__, "rope_scaling": "llama3", "rope_factor": 4.0,
                            "rope_original_max_len": 16})
  smooth = (16 / (2 * np.pi) - 1) / 3
  np.testing.assert_allclose(M.decoder.rope_inv_freq(llama3),
                             [(1 - smooth) / 4 + smooth, 0.025, 0.0025, 0.00025], rtol=1e-6)


def test_rope_scaling_changes_logits(loaded):
  cfg, params = loaded["llama"]
  ref = np.load(os.path.join(fixture("llama"), "reference.npz"))
  plain = M.ModelConfig(**{**cfg.__dict__, "rope_scaling": "default"})
  diff = np.abs(forward(plain, params, ref["tokens"], ref["mask"]) - ref["logits"])[ref["mask"]]
  assert diff.max() > 1e-2


def test_params_are_sharded_on_a_given_mesh(loaded):
  mesh = parallel.make_mesh(parallel.MeshConfig(data=2, fsdp=2, tensor=2))
  cfg, params = hf.load(fixture("qwen3"), mesh)
  q = params["layers"]["0"]["self_attn"]["q_proj"]["kernel"]  # [E=32, H=4, D=16]
  assert q.sharding.mesh.shape == mesh.shape
  assert tuple(q.sharding.spec) == ("fsdp", "tensor", None)
  assert {s.data.shape for s in q.addressable_shards} == {(16, 2, 16)}
  emb = params["embed_tokens"]["embedding"]  # [V=96, E=32]: vocab over tensor, embed over fsdp
  assert {s.data.shape for s in emb.addressable_shards} == {(48, 16)}
  jax.tree.map(np.testing.assert_array_equal, params, loaded["qwen3"][1])
  ref = np.load(os.path.join(fixture("qwen3"), "reference.npz"))
  np.testing.assert_allclose(forward(cfg, params, ref["tokens"], ref["mask"])[ref["mask"]],
                             ref["logits"][ref["mask"]], atol=1e-4)


def test_default_mesh_and_dtype_override():
  cfg, params = hf.load(fixture("qwen2"), param_dtype="bfloat16", dtype="float32")
  assert (cfg.param_dtype, cfg.dtype) == ("bfloat16", "float32")
  leaf = params["norm"]["scale"]
  assert leaf.dtype == jnp.bfloat16 and len(leaf.sharding.device_set) == len(jax.devices())


# ---- refusals -------------------------------------------------------------------------------------------


def _copy(tmp_path, kind="llama", **config_changes):
  d = tmp_path / kind
  shutil.copytree(fixture(kind), d)
  c = json.loads((d / "config.json").read_text())
  c.update(config_changes)
  (d / "config.json").write_text(json.dumps({k: v for k, v in c.items() if v is not ...}))
  return str(d)


@pytest.mark.parametrize("changes,match", [
    ({"model_type": "gemma2"}, r"model_type='gemma2'.*valid: llama, qwen2, qwen3"),
    ({"attention_bias": True}, "o_proj bias"),
    ({"mlp_bias": True}, "MLP biases"),
    ({"hidden_act": "gelu"}, "valid: silu"),
    ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}},
     "RoPE scaling 'yarn'; valid: default, linear, llama3"),
    ({"rope_parameters": {"rope_type": "llama3", "factor": 4.0, "rope_theta": 1e4}},
     "llama3 RoPE scaling without low_freq_factor, high_freq_factor, original_max_position_embeddings"),
    ({"use_sliding_window": True}, "sliding-window"),
    ({"hidden_size": ...}, "lacks hidden_size"),
    ({"dtype": "int8"}, "stored dtype 'int8'"),
])
def test_unsupported_configs_are_refused(tmp_path, changes, match):
  with pytest.raises(ValueError, match=match):
    hf.load(_copy(tmp_path, **changes))


def _rewrite_weights(d, edit):
  """Rewrites model.safetensors of checkpoint dir d with edit(dict of arrays) applied."""
  path = os.path.join(d, "model.safetensors")
  arrays = _tensors(d)
  edit(arrays)
  write = hf._write_safetensors  # pylint: disable=protected-access
  write(path, [(n, a.shape) for n, a in arrays.items()], np.dtype(np.float32), arrays.__getitem__)


def test_missing_tensor_is_named(tmp_path):
  d = _copy(tmp_path)
  _rewrite_weights(d, lambda a: a.pop("model.layers.1.mlp.up_proj.weight"))
  with pytest.raises(ValueError, match=r"lacks 1 tensor.*model\.layers\.1\.mlp\.up_proj\.weight"):
    hf.load(d)


def test_untied_config_without_lm_head_is_named(tmp_path):
  d = _copy(tmp_path, "qwen3")
  _rewrite_weights(d, lambda a: a.pop("lm_head.weight"))
  with pytest.raises(ValueError, match="lm_head.weight"):
    hf.load(d)


def test_unexpected_tensor_is_named(tmp_path):
  d = _copy(tmp_path)
  _rewrite_weights(d, lambda a: a.update({"model.layers.0.self_attn.o_proj.bias": np.zeros(32, np.float32)}))
  with pytest.raises(ValueError, match=r"no place.*o_proj\.bias"):
    hf.load(d)


def test_shape_mismatch_is_named(tmp_path):
  d = _copy(tmp_path, num_key_value_heads=4)
  with pytest.raises(ValueError,
                     match=r"k_proj\.weight has shape \(16, 32\); config.json implies \(32, 32\)"):
    hf.load(d)


def test_no_safetensors(tmp_path):
  shutil.copyfile(os.path.join(fixture("llama"), "config.json"), tmp_path / "config.json")
  (tmp_path / "pytorch_model.bin").write_bytes(b"")
  with pytest.raises(FileNotFoundError, match="no model.safetensors.*pytorch_model.bin"):
    hf.load(str(tmp_path))
  with pytest.raises(FileNotFoundError, match="no config.json"):
    hf.load(str(tmp_path / "nowhere"))


def test_shard_names_stay_inside_the_directory(tmp_path):
  d = _copy(tmp_path, "qwen2")
  index = json.loads(open(os.path.join(d, "model.safetensors.index.json")).read())
  index["weight_map"]["model.norm.weight"] = "../elsewhere.safetensors"
  open(os.path.join(d, "model.safetensors.index.json"), "w").write(json.dumps(index))
  with pytest.raises(ValueError, match="not a file name inside"):
    hf.load(d)


# ---- export ---------------------------------------------------------------------------------------------


def _tensors(d):
  """{name: array} of a checkpoint directory, through the loader's own reader."""
  mapped, tensors = hf._Mapped(), hf._checkpoint_tensors(d)  # pylint: disable=protected-access
  return {n: np.array(mapped.array(t)) for n, t in tensors.items()}


@pytest.mark.parametrize("kind", KINDS)
def test_export_reproduces_the_checkpoint(tmp_path, kind, loaded):
  cfg, params = loaded[kind]
  out = str(tmp_path / "out")
  hf.save(out, cfg, params)
  assert sorted(os.listdir(out)) == ["config.json", "model.safetensors"]
  want, got = _tensors(fixture(kind)), _tensors(out)
  assert sorted(got) == sorted(want)
  for name in want:
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)
  cfg2, params2 = hf.load(out)
  assert cfg2 == cfg
  jax.tree.map(np.testing.assert_array_equal, params2, params)
  written = json.loads(open(os.path.join(out, "config.json")).read())
  source = json.loads(open(os.path.join(fixture(kind), "config.json")).read())
  assert written["architectures"] == source["architectures"]


def test_export_is_readable_by_safetensors(tmp_path, loaded):
  st = pytest.importorskip("safetensors.numpy")
  cfg, params = loaded["qwen3"]
  hf.save(str(tmp_path), cfg, params)
  got = st.load_file(str(tmp_path / "model.safetensors"))
  want = st.load_file(os.path.join(fixture("qwen3"), "model.safetensors"))
  assert sorted(got) == sorted(want)
  for name in want:
    np.testing.assert_array_equal(got[name], want[name])


def test_sharded_then_single_export(tmp_path, loaded):
  cfg, params = loaded["llama"]
  out = str(tmp_path)
  hf.save(out, cfg, params, max_shard_bytes=30_000)
  files = sorted(f for f in os.listdir(out) if f.endswith(".safetensors"))
  assert len(files) >= 3 and files[0] == f"model-00001-of-{len(files):05d}.safetensors"
  index = json.loads(open(os.path.join(out, "model.safetensors.index.json")).read())
  assert set(index["weight_map"].values()) == set(files)
  assert index["metadata"]["total_size"] == cfg.num_params() * 4
  jax.tree.map(np.testing.assert_array_equal, hf.load(out)[1], params)
  hf.save(out, cfg, params)  # stale shards and index are removed
  assert sorted(os.listdir(out)) == ["config.json", "model.safetensors"]


def test_bf16_export(tmp_path, loaded):
  cfg, params = loaded["qwen2"]
  hf.save(str(tmp_path), cfg, params, dtype="bfloat16")
  assert json.loads((tmp_path / "config.json").read_text())["torch_dtype"] == "bfloat16"
  assert os.path.getsize(tmp_path / "model.safetensors") < cfg.num_params() * 2 + 4096
  cfg16, p16 = hf.load(str(tmp_path))
  assert cfg16.param_dtype == "bfloat16"
  cfg32, p32 = hf.load(str(tmp_path), param_dtype="float32")
  assert cfg32.param_dtype == "float32"
  rounded = jax.tree.map(lambda x: np.asarray(x.astype(jnp.bfloat16).astype(jnp.float32)), params)
  jax.tree.map(np.testing.assert_array_equal, p32, rounded)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a, np.float32), b), p16, rounded)


def test_export_carries_tokenizer_files_and_token_ids(tmp_path, loaded):
  src = _copy(tmp_path, "qwen2", eos_token_id=[5, 6], bos_token_id=3)
  for name in ("tokenizer.json", "tokenizer_config.json"):
    open(os.path.join(src, name), "w").write("{}")
  cfg, params = loaded["qwen2"]
  out = tmp_path / "out"
  hf.save(str(out), cfg, params, source=src)
  assert {"tokenizer.json", "tokenizer_config.json", "generation_config.json"} <= set(os.listdir(out))
  written = json.loads((out / "config.json").read_text())
  assert (written["eos_token_id"], written["bos_token_id"]) == ([5, 6], 3)


def test_export_errors(tmp_path, loaded):
  cfg, params = loaded["llama"]
  with pytest.raises(ValueError, match="dtype='int8'; valid: float32, bfloat16, float16"):
    hf.save(str(tmp_path), cfg, params, dtype="int8")
  with pytest.raises(ValueError, match="params lack lm_head/kernel"):
    hf.save(str(tmp_path), cfg, loaded["qwen2"][1])
  both = M.ModelConfig(vocab_size=8, qkv_bias=True, qk_norm=True)
  with pytest.raises(ValueError, match="both q/k norms and q/k/v biases"):
    hf.config_to_hf(both)


# Hub config.json files of real models (as published, abridged to the keys that matter).
LLAMA31_8B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256,
              "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
              "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 131072,
              "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "attention_bias": False, "mlp_bias": False,
              "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                               "original_max_position_embeddings": 8192, "rope_type": "llama3"},
              "tie_word_embeddings": False, "torch_dtype": "bfloat16", "hidden_act": "silu"}
QWEN25_7B = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 152064,
             "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
             "num_attention_heads": 28, "num_key_value_heads": 4, "max_position_embeddings": 131072,
             "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "rope_scaling": None, "sliding_window": 131072,
             "use_sliding_window": False, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
QWEN3_8B = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": 151936,
            "hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36,
            "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
            "max_position_embeddings": 40960, "rms_norm_eps": 1e-6, "rope_theta": 1000000,
            "rope_scaling": None, "attention_bias": False, "use_sliding_window": False,
            "tie_word_embeddings": False, "torch_dtype": "bfloat16"}


@pytest.mark.parametrize("config,n", [(LLAMA31_8B, 8_030_261_248), (QWEN25_7B, 7_615_616_512),
                                      (QWEN3_8B, 8_190_735_360)])
def test_real_model_configs(config, n):
  cfg = hf.config_from_hf(config)
  assert cfg.param_dtype == cfg.dtype == "bfloat16"
  assert cfg.num_params() == n  # the published parameter counts
  assert sum(np.prod(x.shape) for x in jax.tree.leaves(M.abstract_params(cfg))) == n
  back = hf.config_to_hf(cfg)
  for k, v in config.items():
    if k not in ("sliding_window",):
      assert back[k] == v, k


@pytest.mark.parametrize("kind", ("qwen2", "qwen3"))
def test_scan_layers_load_and_export(tmp_path, kind, loaded):
  """load(scan_layers=True) reads straight into the stacked layout (sharded, the same numbers as
  stack_layers of the per-layer load), and saving it writes the same checkpoint tensors back."""
  cfg, params = loaded[kind]
  mesh = parallel.make_mesh(parallel.MeshConfig(data=2, fsdp=2, tensor=2))
  scfg, sparams = hf.load(fixture(kind), mesh, scan_layers=True, remat="full")
  assert scfg.scan_layers and scfg.remat == "full" and not cfg.scan_layers
  q = sparams["layers"]["self_attn"]["q_proj"]["kernel"]  # [L=2, E=32, H=4, D=16]
  assert q.shape[0] == cfg.n_layers and tuple(q.sharding.spec) == (None, "fsdp", "tensor", None)
  jax.tree.map(np.testing.assert_array_equal, sparams, M.stack_layers(params))
  jax.tree.map(np.testing.assert_array_equal, M.unstack_layers(sparams), params)
  ref = np.load(os.path.join(fixture(kind), "reference.npz"))
  np.testing.assert_allclose(forward(scfg, sparams, ref["tokens"], ref["mask"])[ref["mask"]],
                             ref["logits"][ref["mask"]], atol=1e-4)
  out = str(tmp_path / "out")
  hf.save(out, scfg, sparams)
  want, got = _tensors(fixture(kind)), _tensors(out)
  assert sorted(got) == sorted(want)
  for name in want:
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)
