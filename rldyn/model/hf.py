"""Hugging Face checkpoints in and out: Llama (2, 3.x), Qwen2/Qwen2.5 and Qwen3 from a local directory.

    from rldyn.model import hf
    cfg, params = hf.load("/ckpt/Qwen2.5-0.5B")               # params on the default mesh, or mesh=...
    logits_BTV, _ = rldyn.model.apply(cfg, params, tokens_BT, positions_BT, mask_BTS)
    hf.save("/out/step_200", cfg, params, source="/ckpt/Qwen2.5-0.5B")  # transformers can load it
    tok = hf.load_tokenizer("/ckpt/Qwen2.5-0.5B")             # tokenizer.json + specials + chat template

The model config comes from the checkpoint's config.json (`config_from_hf`): shapes, RMSNorm epsilon,
RoPE θ and scaling ("linear", "llama3"), q/k/v biases (Qwen2), q/k norms (Qwen3), tied or untied
embeddings, and the stored dtype (the default parameter and compute dtype; pass `param_dtype=` /
`dtype=` to change either). Anything the decoder cannot reproduce exactly (another architecture, an
o_proj or MLP bias, sliding-window attention, another RoPE scaling) is refused with the reason.

Weights are read from `model.safetensors` or the shards a `model.safetensors.index.json` names. Each
file is memory-mapped and each tensor placed with `jax.make_array_from_callback`, so every device
copies only its own shard of each tensor out of the page cache: loading never builds a whole host copy
of the model, let alone one per device. Only safetensors are read (never pickle `.bin` files).
`save` writes the same layout back, tensor by tensor, in shards of at most `max_shard_bytes`.

Stacked layers (`ModelConfig.scan_layers`): `load(directory, scan_layers=True)` fills each [L, ...]
parameter shard by shard from the checkpoint's L per-layer tensors (no per-layer tree is built first);
`save` of a scan_layers config writes per-layer tensors (layer i sliced from the stack), so the files
are the same whichever layout the model trained in. `rldyn.model.stack_layers` / `unstack_layers`
convert a loaded tree (use `dataclasses.replace(cfg, scan_layers=...)` with it).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from rldyn import parallel
from rldyn.model import abstract_params, logical_axes
from rldyn.model import hf_tokenizer
from rldyn.model.decoder import ModelConfig

__all__ = ["load", "save", "load_tokenizer", "config_from_hf", "config_to_hf", "ARCHITECTURES"]

ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}
# transformers' class defaults for keys a config.json may leave out.
_DEFAULTS = {
    "llama": {"max_position_embeddings": 2048, "rms_norm_eps": 1e-6},
    "qwen2": {"max_position_embeddings": 32768, "rms_norm_eps": 1e-6},
    "qwen3": {"max_position_embeddings": 32768, "rms_norm_eps": 1e-6},
}
_REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
_TORCH_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}
# Files of a checkpoint directory that `save(..., source=)` carries over: tokenizer and generation.
_SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
               "generation_config.json", "chat_template.jinja", "chat_template.json", "tokenizer.model",
               "vocab.json", "merges.txt")
_TOKEN_ID_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id")

# ---- config.json <-> ModelConfig ---------------------------------------------------------------------


def _refuse(msg: str):
  raise ValueError(f"unsupported Hugging Face checkpoint: {msg}")


def _rope(c: Mapping) -> dict:
  """ModelConfig RoPE fields from the `rope_theta`/`rope_scaling` (hub) or `rope_parameters` (v5) keys."""
  params = c.get("rope_parameters") or {}
  if any(isinstance(v, Mapping) for v in params.values()):
    _refuse(f"per-layer-type rope_parameters {sorted(params)}")
  scaling = {**params, **(c.get("rope_scaling") or {})}
  theta = c.get("rope_theta", params.get("rope_theta", 10000.0))
  kind = scaling.get("rope_type", scaling.get("type", "default"))
  if scaling.get("partial_rotary_factor", c.get("partial_rotary_factor", 1.0)) != 1.0:
    _refuse("partial_rotary_factor != 1 (RoPE on part of each head)")
  out = {"rope_theta": float(theta), "rope_scaling": kind}
  needs = {"default": (), "linear": ("factor",),
           "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")}
  if kind not in needs:
    _refuse(f"RoPE scaling {kind!r}; valid: {', '.join(needs)}")
  missing = [k for k in needs[kind] if k not in scaling]
  if missing:
    _refuse(f"{kind} RoPE scaling without {', '.join(missing)}")
  names = {"factor": "rope_factor", "low_freq_factor": "rope_low_freq_factor",
           "high_freq_factor": "rope_high_freq_factor",
           "original_max_position_embeddings": "rope_original_max_len"}
  for k in needs[kind]:
    out[names[k]] = int(scaling[k]) if k == "original_max_position_embeddings" else float(scaling[k])
  return out


def config_from_hf(c: Mapping, *, param_dtype: str | None = None, dtype: str | None = None,
                   attention: str = "xla") -> ModelConfig:
  """The ModelConfig a Hugging Face config.json describes (see the module docstring).

  param_dtype / dtype default to the checkpoint's stored dtype (`torch_dtype` or `dtype`).
  """
  mt = c.get("model_type")
  if mt not in ARCHITECTURES:
    _refuse(f"model_type={mt!r} (architectures={c.get('architectures')}); valid: "
            f"{', '.join(ARCHITECTURES)}")
  missing = [k for k in _REQUIRED if k not in c]
  if missing:
    _refuse(f"config.json lacks {', '.join(missing)}")
  if c.get("hidden_act", "silu") != "silu":
    _refuse(f"hidden_act={c['hidden_act']!r}; valid: silu")
  if c.get("attention_bias", False):
    _refuse("attention_bias=true (an o_proj bias, which the decoder does not have)")
  if c.get("mlp_bias", False):
    _refuse("mlp_bias=true (MLP biases, which the decoder does not have)")
  if c.get("use_sliding_window", False):
    _refuse("use_sliding_window=true (sliding-window attention)")
  if any(t != "full_attention" for t in c.get("layer_types") or ()):
    _refuse(f"layer_types {sorted(set(c['layer_types']))}; valid: full_attention")
  stored = c.get("torch_dtype") or c.get("dtype") or "float32"
  if stored not in _TORCH_DTYPES:
    _refuse(f"stored dtype {stored!r}; valid: {', '.join(_TORCH_DTYPES)}")
  get = lambda k: c[k] if c.get(k) is not None else _DEFAULTS[mt][k]
  heads = c["num_attention_heads"]
  return ModelConfig(
      vocab_size=c["vocab_size"],
      d_model=c["hidden_size"],
      n_layers=c["num_hidden_layers"],
      n_heads=heads,
      n_kv_heads=c.get("num_key_value_heads") or heads,
      head_dim=c.get("head_dim") or c["hidden_size"] // heads,
      d_ff=c["intermediate_size"],
      max_seq_len=get("max_position_embeddings"),
      norm_eps=float(get("rms_norm_eps")),
      qkv_bias=mt == "qwen2",
      qk_norm=mt == "qwen3",
      tie_embeddings=bool(c.get("tie_word_embeddings", False)),
      param_dtype=param_dtype or _TORCH_DTYPES[stored],
      dtype=dtype or param_dtype or _TORCH_DTYPES[stored],
      attention=attention,
      rope_hf_freqs=True,
      **_rope(c))


def model_type(cfg: ModelConfig) -> str:
  """The Hugging Face architecture of a decoder config: qwen3 (q/k norms), qwen2 (biases) or llama."""
  if cfg.qk_norm and cfg.qkv_bias:
    raise ValueError("no supported Hugging Face architecture has both q/k norms and q/k/v biases "
                     "(qwen3 has norms, qwen2 has biases)")
  return "qwen3" if cfg.qk_norm else "qwen2" if cfg.qkv_bias else "llama"


def config_to_hf(cfg: ModelConfig, dtype: str | None = None) -> dict:
  """The config.json for a decoder config (the inverse of config_from_hf)."""
  mt = model_type(cfg)
  scaling = None
  if cfg.rope_scaling == "linear":
    scaling = {"rope_type": "linear", "factor": cfg.rope_factor}
  elif cfg.rope_scaling == "llama3":
    scaling = {"rope_type": "llama3", "factor": cfg.rope_factor,
               "low_freq_factor": cfg.rope_low_freq_factor,
               "high_freq_factor": cfg.rope_high_freq_factor,
               "original_max_position_embeddings": cfg.rope_original_max_len}
  out = {
      "architectures": [ARCHITECTURES[mt]], "model_type": mt, "vocab_size": cfg.vocab_size,
      "hidden_size": cfg.d_model, "intermediate_size": cfg.d_ff, "num_hidden_layers": cfg.n_layers,
      "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_kv_heads,
      "head_dim": cfg.head_dim, "hidden_act": "silu", "max_position_embeddings": cfg.max_seq_len,
      "rms_norm_eps": cfg.norm_eps, "rope_theta": cfg.rope_theta, "rope_scaling": scaling,
      "tie_word_embeddings": cfg.tie_embeddings, "torch_dtype": dtype or cfg.param_dtype,
      "use_cache": True, "attention_dropout": 0.0,
  }
  if mt in ("llama", "qwen3"):
    out["attention_bias"] = False
  if mt == "llama":
    out["mlp_bias"] = False
  else:
    out["use_sliding_window"] = False
  return out


# ---- the name and layout map -------------------------------------------------------------------------


class _Entry(NamedTuple):
  hf: str  # tensor name in the checkpoint
  path: tuple[str, ...]  # key path in the rldyn params tree
  hf_shape: tuple[int, ...]
  to_rldyn: Callable[[np.ndarray], np.ndarray]  # a view of the HF layout in the rldyn layout
  to_hf: Callable[[np.ndarray], np.ndarray]


def _entries(cfg: ModelConfig) -> list[_Entry]:
  """Every tensor of the checkpoint with its rldyn path and layout change (decoder.py's table)."""
  e, f, h, k, d, v = cfg.d_model, cfg.d_ff, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.vocab_size
  same = lambda w: w
  t = lambda w: w.T

  def heads_in(n):  # HF [n*D, E] <-> rldyn [E, n, D]
    return (n * d, e), lambda w: w.reshape(n, d, e).transpose(2, 0, 1), \
        lambda w: w.transpose(1, 2, 0).reshape(n * d, e)

  def bias(n):  # HF [n*D] <-> rldyn [n, D]
    return (n * d,), lambda w: w.reshape(n, d), lambda w: w.reshape(n * d)

  o_proj = ((e, h * d), lambda w: w.reshape(e, h, d).transpose(1, 2, 0),
            lambda w: w.transpose(2, 0, 1).reshape(e, h * d))
  out = [_Entry("model.embed_tokens.weight", ("embed_tokens", "embedding"), (v, e), same, same)]
  for i in range(cfg.n_layers):
    pre, p = f"model.layers.{i}.", ("layers", str(i))
    attn = p + ("self_attn",)
    rows = [("self_attn.q_proj.weight", attn + ("q_proj", "kernel"), *heads_in(h)),
            ("self_attn.k_proj.weight", attn + ("k_proj", "kernel"), *heads_in(k)),
            ("self_attn.v_proj.weight", attn + ("v_proj", "kernel"), *heads_in(k)),
            ("self_attn.o_proj.weight", attn + ("o_proj", "kernel"), *o_proj)]
    if cfg.qkv_bias:
      rows += [("self_attn.q_proj.bias", attn + ("q_proj", "bias"), *bias(h)),
               ("self_attn.k_proj.bias", attn + ("k_proj", "bias"), *bias(k)),
               ("self_attn.v_proj.bias", attn + ("v_proj", "bias"), *bias(k))]
    if cfg.qk_norm:
      rows += [("self_attn.q_norm.weight", attn + ("q_norm", "scale"), (d,), same, same),
               ("self_attn.k_norm.weight", attn + ("k_norm", "scale"), (d,), same, same)]
    rows += [("mlp.gate_proj.weight", p + ("mlp", "gate_proj", "kernel"), (f, e), t, t),
             ("mlp.up_proj.weight", p + ("mlp", "up_proj", "kernel"), (f, e), t, t),
             ("mlp.down_proj.weight", p + ("mlp", "down_proj", "kernel"), (e, f), t, t),
             ("input_layernorm.weight", p + ("input_layernorm", "scale"), (e,), same, same),
             ("post_attention_layernorm.weight", p + ("post_attention_layernorm", "scale"), (e,), same,
              same)]
    out += [_Entry(pre + name, *rest) for name, *rest in rows]
  out.append(_Entry("model.norm.weight", ("norm", "scale"), (e,), same, same))
  if not cfg.tie_embeddings:
    out.append(_Entry("lm_head.weight", ("lm_head", "kernel"), (v, e), t, t))
  return out


def _ignorable(name: str, cfg: ModelConfig) -> bool:
  """Checkpoint tensors with no parameter behind them: cached RoPE tables, a tied head's copy."""
  return name.endswith("rotary_emb.inv_freq") or (cfg.tie_embeddings and name == "lm_head.weight")


def _get(tree, path):
  for k in path:
    tree = tree[k]
  return tree


def _set(tree: dict, path, value):
  for k in path[:-1]:
    tree = tree.setdefault(k, {})
  tree[path[-1]] = value


# ---- safetensors files ---------------------------------------------------------------------------------

_ST_DTYPES = {"F32": np.dtype(np.float32), "F16": np.dtype(np.float16), "BF16": np.dtype(jnp.bfloat16),
              "F64": np.dtype(np.float64)}
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}
_MAX_HEADER = 100 * 2**20


class _Tensor(NamedTuple):
  file: str
  dtype: np.dtype
  shape: tuple[int, ...]
  start: int  # absolute byte offsets in the file
  end: int


def _read_header(path: str) -> dict[str, _Tensor]:
  """The tensors of one .safetensors file (8-byte header length, JSON header, one flat byte buffer)."""
  size = os.path.getsize(path)
  with open(path, "rb") as fh:
    n = int.from_bytes(fh.read(8), "little")
    if n > min(_MAX_HEADER, size - 8):
      raise ValueError(f"{path}: not a safetensors file (header length {n}, file size {size})")
    header = json.loads(fh.read(n))
  out = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    if info["dtype"] not in _ST_DTYPES:
      raise ValueError(f"{path}: tensor {name} has dtype {info['dtype']}; valid: "
                       f"{', '.join(_ST_DTYPES)}")
    dt, shape = _ST_DTYPES[info["dtype"]], tuple(info["shape"])
    begin, end = info["data_offsets"]
    if end - begin != math.prod(shape) * dt.itemsize or not 0 <= begin <= end <= size - 8 - n:
      raise ValueError(f"{path}: tensor {name} has byte range {begin}..{end} that does not hold "
                       f"{shape} {info['dtype']} inside the file")
    out[name] = _Tensor(path, dt, shape, 8 + n + begin, 8 + n + end)
  return out


def _checkpoint_tensors(directory: str) -> dict[str, _Tensor]:
  """Every tensor of model.safetensors, or of the shards model.safetensors.index.json names."""
  index = os.path.join(directory, "model.safetensors.index.json")
  if os.path.exists(index):
    with open(index) as fh:
      weight_map = json.load(fh)["weight_map"]
    files = sorted(set(weight_map.values()))
    for name in files:
      if os.path.basename(name) != name or name.startswith("."):
        raise ValueError(f"{index}: shard {name!r} is not a file name inside the checkpoint directory")
  elif os.path.exists(os.path.join(directory, "model.safetensors")):
    weight_map, files = None, ["model.safetensors"]
  else:
    present = sorted(os.listdir(directory)) if os.path.isdir(directory) else "no such directory"
    raise FileNotFoundError(f"{directory}: no model.safetensors or model.safetensors.index.json "
                            f"(found: {present}); only safetensors checkpoints are loaded")
  tensors = {}
  for name in files:
    tensors.update(_read_header(os.path.join(directory, name)))
  if weight_map is not None:
    absent = [k for k, f in weight_map.items() if k not in tensors]
    if absent:
      raise ValueError(f"{index} lists tensors its shards lack: {absent[:5]}")
  return tensors


class _Mapped:
  """Read-only memory maps of the checkpoint files, opened on first use."""

  def __init__(self):
    self._maps = {}

  def array(self, t: _Tensor) -> np.ndarray:
    if t.file not in self._maps:
      self._maps[t.file] = np.memmap(t.file, dtype=np.uint8, mode="r")
    return self._maps[t.file][t.start:t.end].view(t.dtype).reshape(t.shape)


def _write_safetensors(path: str, tensors: list[tuple[str, tuple[int, ...]]], dtype: np.dtype,
                       fetch: Callable[[str], np.ndarray]) -> None:
  """Writes tensors (names and shapes; fetched one at a time) to `path` atomically."""
  header, offset = {"__metadata__": {"format": "pt"}}, 0
  for name, shape in tensors:
    nbytes = math.prod(shape) * dtype.itemsize
    header[name] = {"dtype": _ST_NAMES[dtype], "shape": list(shape),
                    "data_offsets": [offset, offset + nbytes]}
    offset += nbytes
  raw = json.dumps(header, separators=(",", ":")).encode()
  raw += b" " * (-len(raw) % 8)
  tmp = path + ".tmp"
  with open(tmp, "wb") as fh:
    fh.write(len(raw).to_bytes(8, "little"))
    fh.write(raw)
    for name, shape in tensors:
      arr = np.ascontiguousarray(fetch(name), dtype=dtype)
      if arr.shape != tuple(shape):
        raise ValueError(f"tensor {name}: shape {arr.shape}, expected {tuple(shape)}")
      fh.write(arr.reshape(-1).view(np.uint8).data)
  os.replace(tmp, path)


# ---- load / save ---------------------------------------------------------------------------------------


def read_config(directory: str) -> dict:
  path = os.path.join(directory, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{directory}: no config.json (not a Hugging Face checkpoint directory)")
  with open(path) as fh:
    return json.load(fh)


def _stacked_path(path: tuple[str, ...]) -> tuple[tuple[str, ...], int | None]:
  """A per-layer path (layers, i, ...) -> (the scan_layers path (layers, ...), i); others -> (path, None)."""
  if path[0] == "layers":
    return ("layers",) + path[2:], int(path[1])
  return path, None


def _param_get(cfg: ModelConfig, params, path):
  """The array at a per-layer path, in either layout (a scan_layers tree is indexed at the layer)."""
  if cfg.scan_layers:
    path, layer = _stacked_path(path)
    return _get(params, path) if layer is None else _get(params, path)[layer]
  return _get(params, path)


def load(directory: str, mesh: Mesh | None = None, *, param_dtype: str | None = None,
         dtype: str | None = None, attention: str = "xla", scan_layers: bool = False,
         remat: str = "none") -> tuple[ModelConfig, dict]:
  """(ModelConfig, params) of a local Hugging Face checkpoint, params sharded onto `mesh`.

  mesh: defaults to `parallel.make_mesh(MeshConfig())` over all devices. Parameters take the
  logical-axis shardings of `rldyn.parallel` and are read shard by shard (module docstring).
  scan_layers=True reads the layers straight into the stacked layout (`ModelConfig.scan_layers`): each
  device fills its shard of a [L, ...] array from the L tensors of the checkpoint. remat sets
  `ModelConfig.remat` (no effect on the parameters).
  """
  cfg = config_from_hf(read_config(directory), param_dtype=param_dtype, dtype=dtype, attention=attention)
  cfg = dataclasses.replace(cfg, scan_layers=scan_layers, remat=remat)
  mesh = parallel.make_mesh(parallel.MeshConfig()) if mesh is None else mesh
  shardings = parallel.tree_shardings(mesh, abstract_params(cfg), logical_axes(cfg))
  tensors = _checkpoint_tensors(directory)
  entries = _entries(cfg)
  arch = model_type(cfg)
  missing = [x.hf for x in entries if x.hf not in tensors]
  if missing:
    raise ValueError(f"{directory}: the {arch} checkpoint lacks {len(missing)} tensor(s) its config.json "
                     f"calls for: {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}")
  known = {x.hf for x in entries}
  extra = sorted(n for n in tensors if n not in known and not _ignorable(n, cfg))
  if extra:
    raise ValueError(f"{directory}: tensors with no place in the {arch} decoder its config.json "
                     f"describes: {', '.join(extra[:6])}{' ...' if len(extra) > 6 else ''}")
  pd = np.dtype(cfg.jnp_param_dtype)
  mapped, params = _Mapped(), {}
  for x in entries:
    t = tensors[x.hf]
    if t.shape != x.hf_shape:
      raise ValueError(f"{directory}: tensor {x.hf} has shape {t.shape}; config.json implies "
                       f"{x.hf_shape}")
  views: dict[tuple[str, ...], list] = {}  # param path -> the views that fill it (L of them if stacked)
  for x in entries:
    view = x.to_rldyn(mapped.array(tensors[x.hf]))  # a strided view of the mapped file; nothing copied yet
    path, layer = _stacked_path(x.path) if cfg.scan_layers else (x.path, None)
    views.setdefault(path, []).append(view)
  for path, vs in views.items():
    if len(vs) == 1 and not (cfg.scan_layers and path[0] == "layers"):
      view = vs[0]
      arr = jax.make_array_from_callback(view.shape, _get(shardings, path),
                                         lambda idx, view=view: np.array(view[idx], dtype=pd))
    else:  # stacked [L, ...]: index 0 picks layers, the rest slices each layer's view
      arr = jax.make_array_from_callback(
          (len(vs), *vs[0].shape), _get(shardings, path),
          lambda idx, vs=vs: np.stack([np.array(v[idx[1:]], dtype=pd) for v in vs[idx[0]]]))
    _set(params, path, arr)
  return cfg, params


def _host(x: jax.Array) -> np.ndarray:
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))


def save(directory: str, cfg: ModelConfig, params: dict, *, dtype: str | None = None,
         source: str | None = None, max_shard_bytes: int = 5 * 2**30) -> None:
  """Writes `params` as a Hugging Face checkpoint directory that `transformers` (and `load`) read.

  dtype: the stored dtype (default cfg.param_dtype). source: a checkpoint directory whose tokenizer
  and generation files, and bos/eos/pad token ids, are carried over. Tensors are gathered to the host
  one at a time; with several processes every process must call this, and process 0 writes.
  """
  dtype = dtype or cfg.param_dtype
  if dtype not in _TORCH_DTYPES:
    raise ValueError(f"dtype={dtype!r}; valid: {', '.join(_TORCH_DTYPES)}")
  if max_shard_bytes <= 0:
    raise ValueError(f"max_shard_bytes must be positive, got {max_shard_bytes}")
  np_dtype = np.dtype(jnp.dtype(dtype))
  entries = _entries(cfg)
  for x in entries:
    try:
      _param_get(cfg, params, x.path)
    except (KeyError, TypeError, IndexError):
      raise ValueError(f"params lack {'/'.join(x.path)} (for {x.hf}); is cfg the params' config?") from None
  shards, size = [[]], 0
  for x in entries:
    nbytes = math.prod(x.hf_shape) * np_dtype.itemsize
    if shards[-1] and size + nbytes > max_shard_bytes:
      shards.append([])
      size = 0
    shards[-1].append(x)
    size += nbytes
  writer = jax.process_index() == 0
  if writer:
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):  # stale weights from an earlier save with other sharding
      if re.fullmatch(r"model(-\d{5}-of-\d{5})?\.safetensors(\.index\.json)?", name):
        os.remove(os.path.join(directory, name))
  by_name = {x.hf: x for x in entries}
  fetch = lambda name: by_name[name].to_hf(_host(_param_get(cfg, params, by_name[name].path)))
  names = (["model.safetensors"] if len(shards) == 1 else
           [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
  for fname, shard in zip(names, shards):
    if writer:
      _write_safetensors(os.path.join(directory, fname), [(x.hf, x.hf_shape) for x in shard], np_dtype,
                         fetch)
    else:
      for x in shard:  # take part in the gathers
        fetch(x.hf)
  if not writer:
    return
  if len(shards) > 1:
    total = sum(math.prod(x.hf_shape) for x in entries) * np_dtype.itemsize
    index = {"metadata": {"total_size": total},
             "weight_map": {x.hf: f for f, shard in zip(names, shards) for x in shard}}
    with open(os.path.join(directory, "model.safetensors.index.json"), "w") as fh:
      json.dump(index, fh, indent=2)
  config = config_to_hf(cfg, dtype)
  if source is not None:
    src = read_config(source)
    config.update({k: src[k] for k in _TOKEN_ID_KEYS if k in src})
    for name in _SIDE_FILES:
      src_file, dst_file = os.path.join(source, name), os.path.join(directory, name)
      if os.path.exists(src_file) and not (os.path.exists(dst_file) and os.path.samefile(src_file, dst_file)):
        shutil.copyfile(src_file, dst_file)
  with open(os.path.join(directory, "config.json"), "w") as fh:
    json.dump(config, fh, indent=2)


def load_tokenizer(directory: str) -> hf_tokenizer.HFTokenizer:
  """The checkpoint's tokenizer: tokenizer.json, special tokens, EOS set and chat template."""
  return hf_tokenizer.HFTokenizer.from_directory(directory)
