"""The textmath task on a checkpoint's tokenizer, the checkpoint launch path, and the real-data smoke study.

Fixtures: tests/fixtures/textmath (a tiny random Qwen2-shaped checkpoint with a BPE tokenizer and ChatML
template, GSM8K/MATH samples; make_fixture.py rebuilds them).
"""
import dataclasses
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("tokenizers")
pytest.importorskip("jinja2")

from experiments import gsm8k as gsm8k_study  # noqa: E402
from experiments import math as math_study  # noqa: E402
from rldyn import config as config_lib  # noqa: E402
from rldyn import data as data_lib  # noqa: E402
from rldyn import launch  # noqa: E402
from rldyn.config import ConfigError  # noqa: E402
from rldyn.model import hf_tokenizer  # noqa: E402
from rldyn.tasks import base, evalsets, make_task, mathdata  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures", "textmath")
CKPT = os.path.join(FIX, "ckpt")
GSM_TRAIN, GSM_TEST = os.path.join(FIX, "gsm8k_train.jsonl"), os.path.join(FIX, "gsm8k_test.jsonl")
MATH_TRAIN = os.path.join(FIX, "math_train.jsonl")
STOP = "\n\nQuestion:"


def gsm8k(**kw):
  return make_task("textmath", **{"train_path": GSM_TRAIN, "test_path": GSM_TEST, "tokenizer_dir": CKPT,
                                  "stop_strings": (STOP,), **kw})


@pytest.fixture(scope="module")
def task():
  return gsm8k()


def test_known_correct_responses_score_one(task):
  p = task.heldout[0]
  assert p.answer == "18"  # GSM8K test row 1 (Janet's ducks): 16 - 3 - 4 = 9 eggs at $2
  assert task.verify(p, "She sells 16 - 3 - 4 = 9 eggs for 9 * 2 = 18 dollars.\n#### 18")
  assert task.verify(p, "So the answer is $\\boxed{18}$.")
  assert not task.verify(p, "#### 19")
  # Text after the first stop string is not the response: its answer does not count.
  assert not task.verify(p, f"#### 17{STOP} something else. #### 18")
  assert task.verify(p, f"#### 18{STOP} something else. #### 17")
  assert task.extract_answer(f"#### 18{STOP} #### 17") == "18"
  m = make_task("textmath", train_path=MATH_TRAIN, tokenizer_dir=CKPT)
  for q in m.train[:10]:  # MATH answers, boxed, verify through the task
    assert m.verify(q, f"Thus the answer is $\\boxed{{{q.answer}}}$."), q.answer
    assert m.verify(q, m.reference_trace(q, np.random.default_rng(0)))
  assert task.verify(p, task.reference_trace(p, np.random.default_rng(0)))  # the GSM8K worked solution


def test_splits_are_disjoint_and_the_stream_is_seeded(task):
  train, held = {p.uid for p in task.train}, {p.uid for p in task.heldout}
  assert len(held) == 16 and len(train) == 64 and not train & held
  draws = lambda seed: [task.sample_problem(np.random.default_rng([seed, 1, s])).uid for s in range(200)]
  a = draws(0)
  assert a == draws(0) and a != draws(1)
  assert set(a) <= train and len(set(a)) > 40  # uniform over the 64 training problems
  assert {task.sample_problem(np.random.default_rng(s), heldout=True).uid for s in range(50)} <= held
  # Without a test file, the held-out problems are the uid-hash bucket, never drawn for training.
  m = make_task("textmath", train_path=MATH_TRAIN, tokenizer_dir=CKPT)
  assert m.heldout and all(base.is_heldout(p) for p in m.heldout)
  assert not any(base.is_heldout(p) for p in m.train)
  assert len(m.train) + len(m.heldout) == len(mathdata.load_problems(MATH_TRAIN, skip_invalid=True))


def test_verl_parquet_gives_the_same_task(task, tmp_path):
  pa = pytest.importorskip("pyarrow")
  pq = pytest.importorskip("pyarrow.parquet")
  paths = {}
  for split, src in (("train", GSM_TRAIN), ("test", GSM_TEST)):
    rows = []
    for line in open(src, encoding="utf-8"):  # what verl's examples/data_preprocess/gsm8k.py writes
      r = json.loads(line)
      rows.append({"data_source": "openai/gsm8k", "ability": "math",
                   "prompt": [{"role": "user", "content": f"{r['question']} {mathdata.GSM8K_INSTRUCTION}"}],
                   "reward_model": {"style": "rule",
                                    "ground_truth": r["answer"].rsplit("#### ", 1)[1].replace(",", "")}})
    paths[split] = str(tmp_path / f"{split}.parquet")
    pq.write_table(pa.Table.from_pylist(rows), paths[split])
  verl = gsm8k(train_path=paths["train"], test_path=paths["test"])
  key = lambda ps: [(p.uid, p.answer) for p in ps]
  assert key(verl.train) == key(task.train) and key(verl.heldout) == key(task.heldout)
  assert verl.prompt_ids(verl.train[3]) == task.prompt_ids(task.train[3])
  bare = gsm8k(instruction="")  # no instruction: the question alone
  assert mathdata.chat_messages(bare.train[0])[0]["content"] == json.loads(open(GSM_TRAIN).readline())["question"]


def test_prompt_ids_chat_and_plain(task):
  p = task.train[0]
  tok = task.tokenizer
  text = tok.decode(task.prompt_ids(p), skip_special_tokens=False)
  assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                  f"{mathdata.chat_messages(p)[0]['content']}<|im_end|>\n<|im_start|>assistant\n")
  assert mathdata.chat_messages(p)[0]["content"].endswith(mathdata.GSM8K_INSTRUCTION)
  plain = gsm8k(prompt="plain")
  assert plain.prompt_ids(p) == tok.encode(p.prompt)  # no BOS: this tokenizer has none
  assert p.prompt.startswith("Question: ") and p.prompt.endswith("\nAnswer:")
  batch = data_lib.prompt_batch(task, [p, task.train[1]], repeat=2)  # left-padded to a bucket
  assert batch["tokens"].shape[1] % data_lib.PROMPT_BUCKET == 0
  assert batch["tokens"][0, batch["mask"][0]].tolist() == task.prompt_ids(p)
  assert (batch["tokens"][~batch["mask"]] == tok.pad_id).all()


def test_bucket_widths():
  # multiples of 16 up to 128 tokens (synthetic prompts unchanged), then a quarter of the octave
  got = [data_lib.bucket_width(n) for n in (1, 16, 17, 100, 128, 129, 160, 161, 256, 257, 400, 513)]
  assert got == [16, 16, 32, 112, 128, 160, 160, 192, 256, 320, 448, 640]
  assert all(n <= data_lib.bucket_width(n) <= max(1.25 * n, n + 15) for n in range(1, 5000))


def test_truncate_responses_cuts_after_the_stop_string(task):
  tok = task.tokenizer
  rows = ["#### 18" + STOP + " Natalia sold", "no stop here at all", "x" + STOP]
  width = 48
  tokens = np.full((len(rows), width), tok.pad_id, np.int32)
  mask = np.zeros((len(rows), width), bool)
  for i, r in enumerate(rows):
    ids = tok.encode(r)
    tokens[i, :len(ids)], mask[i, :len(ids)] = ids, True
  out = task.truncate_responses(tokens, mask)
  for i, r in enumerate(rows):
    n, kept = int(mask[i].sum()), int(out[i].sum())
    assert out[i, :kept].all() and not out[i, kept:].any()
    text = tok.decode(tokens[i, :kept], skip_special_tokens=False)
    if STOP in r:  # the shortest prefix that contains the stop string: kept through its last token
      assert STOP in text and STOP not in tok.decode(tokens[i, :kept - 1], skip_special_tokens=False)
      assert text == r[:r.index(STOP) + len(STOP)] or text.startswith(r[:r.index(STOP) + len(STOP)])
    else:
      assert kept == n
  countdown = make_task("countdown")  # the base class: the mask unchanged
  assert (countdown.truncate_responses(tokens, mask) == mask).all()


def test_hostile_ids_and_text(task):
  """test_tasks.py's invariants for synthetic tasks, on the checkpoint's tokenizer."""
  rng = np.random.default_rng(0)
  p = task.train[0]
  assert task.problem_from_dict(task.problem_to_dict(p)) == p
  for _ in range(100):
    ids = rng.integers(0, task.tokenizer.vocab_size + 5, rng.integers(0, 60))  # past the vocabulary too
    roles = task.token_roles(ids)
    assert roles.shape == ids.shape and roles.dtype == np.int8 and set(roles.tolist()) <= {0, 1, 2}
    text = task.tokenizer.decode(ids[ids < task.tokenizer.vocab_size])
    assert isinstance(task.verify(p, text), bool)
    task.extract_answer(text)
  tok = task.tokenizer
  assert task.token_roles([tok.eos_id, tok.pad_id]).tolist() == [base.OTHER] * 2
  assert p.answer == "72" and task.verify(p, "\x00#### 72")
  for text in ["\x00#### 71", "#### \u0661", "#### " + "9" * 100_000, "\\boxed{" * 10_000, "x" * (1 << 21)]:
    assert not task.verify(p, text)


def test_eval_set_comes_from_the_test_file(task):
  a = evalsets.load_eval_set(task, 6, seed=0)
  assert a == evalsets.load_eval_set(task, 6, seed=0) and a != evalsets.load_eval_set(task, 6, seed=1)
  order = {p.uid: k for k, p in enumerate(task.heldout)}
  assert len({p.uid for p in a}) == 6 and all(p.uid in order for p in a)
  assert [order[p.uid] for p in a] == sorted(order[p.uid] for p in a)  # file order
  assert evalsets.load_eval_set(task, 16) == task.heldout
  with pytest.raises(ValueError, match="has only 16 problems"):
    evalsets.load_eval_set(task, 17)


def test_token_roles_and_taggers_on_the_checkpoint_tokenizer(task):
  from rldyn import roles  # pylint: disable=g-import-not-at-top
  text = "First, we need to find the total. Then 9 * 2 = 18.\n#### 18"
  ids = task.tokenizer.encode(text)
  lex = roles.make_tagger("lexicon", task)
  got = lex([ids], [text], 0)[0]
  assert got.dtype == np.int8 and len(got) == len(ids)
  assert (got == task.token_roles(ids)).all()
  assert (got == base.PLANNING).any() and (got == base.EXECUTION).any()
  spans = roles.make_tagger("spans", task)([task.tokenizer.encode("<think>plan it</think> 18")], [""], 0)[0]
  assert (spans == base.PLANNING).sum() >= 2


def test_vocab_is_the_checkpoints(tmp_path):
  tok = hf_tokenizer.HFTokenizer.from_directory(CKPT)
  assert tok.vocab_size == json.load(open(os.path.join(CKPT, "config.json")))["vocab_size"] == 512
  assert len(tok.vocab) == 512 and tok.vocab[tok.eos_id] == "<|im_end|>"
  for name in os.listdir(CKPT):
    if not name.endswith(".safetensors"):
      (tmp_path / name).write_bytes(open(os.path.join(CKPT, name), "rb").read())
  cfg = json.load(open(os.path.join(CKPT, "config.json")))
  (tmp_path / "config.json").write_text(json.dumps({**cfg, "vocab_size": 640}))  # a padded embedding
  padded = hf_tokenizer.HFTokenizer.from_directory(str(tmp_path))
  assert (padded.vocab_size, padded.tokenizer_size) == (640, 512)
  assert padded.decode([5, 600, 6]) == padded.decode([5, 6])  # ids past the tokenizer decode to nothing
  (tmp_path / "config.json").write_text(json.dumps({**cfg, "vocab_size": 100}))
  with pytest.raises(ValueError, match="smaller than the tokenizer"):
    hf_tokenizer.HFTokenizer.from_directory(str(tmp_path))


def test_task_option_errors(tmp_path):
  with pytest.raises(ValueError, match="train_path"):
    make_task("textmath", tokenizer_dir=CKPT)
  with pytest.raises(ValueError, match="valid: chat, plain"):
    gsm8k(prompt="instruct")
  with pytest.raises(ValueError, match="not a file"):
    gsm8k(test_path=str(tmp_path / "nope.jsonl"))
  (tmp_path / "tokenizer_config.json").write_text("{}")
  with pytest.raises(ValueError, match="no tokenizer.json"):
    gsm8k(tokenizer_dir=str(tmp_path))
  no_chat = tmp_path / "nochat"
  no_chat.mkdir()
  (no_chat / "tokenizer.json").write_bytes(open(os.path.join(CKPT, "tokenizer.json"), "rb").read())
  (no_chat / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>"}))
  with pytest.raises(ValueError, match="prompt=plain"):
    gsm8k(tokenizer_dir=str(no_chat))
  assert gsm8k(tokenizer_dir=str(no_chat), prompt="plain").prompt_ids(gsm8k().train[0])


# ---- launch ---------------------------------------------------------------------------------------------

def smoke(**over):
  c = gsm8k_study.get_config("smoke")
  for k, v in over.items():
    node = c
    *path, last = k.split("__")
    for p in path:
      node = node[p]
    node[last] = v
  return c


def test_launch_takes_the_model_and_tokenizer_from_the_checkpoint(tmp_path):
  cfg, task = launch.make_config(smoke())
  ck = json.load(open(os.path.join(CKPT, "config.json")))
  m = cfg.model
  assert (m.vocab_size, m.d_model, m.n_layers, m.n_heads, m.n_kv_heads, m.d_ff, m.max_seq_len, m.qkv_bias,
          m.tie_embeddings, m.rope_hf_freqs) == (ck["vocab_size"], ck["hidden_size"], ck["num_hidden_layers"],
                                                 ck["num_attention_heads"], ck["num_key_value_heads"],
                                                 ck["intermediate_size"], ck["max_position_embeddings"], True,
                                                 True, True)
  tok = task.tokenizer
  assert cfg.sampling.stop_tokens == tok.eos_ids == (tok.token_to_id("<|im_end|>"),
                                                     tok.token_to_id("<|endoftext|>"))
  assert cfg.sampling.pad_id == tok.pad_id == tok.token_to_id("<|endoftext|>")
  assert dict(cfg.task.options)["tokenizer_dir"] == CKPT
  # dtypes stay the config's; a shape field set by hand to the checkpoint's own value is fine
  cfg2, _ = launch.make_config(smoke(model__dtype="bfloat16", model__d_model=32))
  assert (cfg2.model.dtype, cfg2.model.param_dtype, cfg2.model.d_model) == ("bfloat16", "float32", 32)


@pytest.mark.parametrize("over, match", [
    ({"checkpoint_dir": "/nonexistent/ckpt"}, "is not a directory"),
    ({"model__d_model": 64}, r"set by hand .*'d_model': \(64, 32\)"),
    ({"roles__tagger": "structural"}, "no ground-truth token roles"),
    ({"roles__tagger": "placebo", "roles__placebo_of": "structural"}, "no ground-truth token roles"),
    ({"stage": "pretrain"}, "checkpoint_dir gives one"),
    ({"base_workdir": "/tmp/other"}, "both name a base model"),
    ({"task__eval_size": 17}, "has 16 held-out problems"),
    ({"task__options__tokenizer_dir": "/elsewhere"}, "differs from checkpoint_dir"),
    ({"checkpoint_dir": ""}, "set checkpoint_dir"),
])
def test_launch_refuses(tmp_path, over, match):
  with pytest.raises(ConfigError, match=match):
    launch.prepare(smoke(**over), str(tmp_path / "wd"))
  assert not os.path.exists(tmp_path / "wd" / "config.json")


def test_launch_refuses_bad_checkpoint_dirs(tmp_path):
  d = tmp_path / "ckpt"
  d.mkdir()
  with pytest.raises(ConfigError, match="no config.json"):
    launch.prepare(smoke(checkpoint_dir=str(d)), str(tmp_path / "wd"))
  (d / "config.json").write_bytes(open(os.path.join(CKPT, "config.json"), "rb").read())
  with pytest.raises(ConfigError, match="no tokenizer.json"):
    launch.prepare(smoke(checkpoint_dir=str(d)), str(tmp_path / "wd"))
  cfg = json.load(open(os.path.join(CKPT, "config.json")))
  (d / "tokenizer.json").write_bytes(open(os.path.join(CKPT, "tokenizer.json"), "rb").read())
  (d / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt2"}))
  with pytest.raises(ConfigError, match="unsupported Hugging Face checkpoint: model_type='gpt2'"):
    launch.prepare(smoke(checkpoint_dir=str(d)), str(tmp_path / "wd"))
  c = config_lib.default()  # countdown has its own vocabulary
  c.checkpoint_dir = CKPT
  with pytest.raises(ConfigError, match="Valid tasks: textmath"):
    launch.prepare(c, str(tmp_path / "wd"))


# ---- the smoke study, end to end --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("gsm8k_smoke"))
  launch.run(gsm8k_study.get_config("smoke"), d)
  return d


def _jsonl(path):
  return [json.loads(x) for x in open(path)]


def test_smoke_study_runs_end_to_end(run_dir):
  info = json.load(open(os.path.join(run_dir, "base", "info.json")))
  assert info["checkpoint_dir"] == CKPT and info["task"] == "textmath"
  events = [e["event"] for e in _jsonl(os.path.join(run_dir, "events.jsonl"))]
  assert events[0] == "base_imported" and "run_end" in events and "pretrain_start" not in events
  lines = _jsonl(os.path.join(run_dir, "metrics.jsonl"))
  assert [x["step"] for x in lines] == [0, 1, 2]
  for x in lines:
    for k in ("reward/mean", "accuracy", "loss/total", "entropy/all", "entropy/planning", "kl/k3",
              "semantic_entropy/planning", "grad_norm", "response_len/mean"):
      assert math.isfinite(x[k]), (k, x[k])
    assert x["reward/mean"] == x["accuracy"]  # ground_truth reward = verify_math correctness
  samples = _jsonl(os.path.join(run_dir, "samples", "samples.jsonl"))
  cfg, task = launch.make_config(gsm8k_study.get_config("smoke"))
  by_uid = {p.uid: p for p in task.train}
  for s in samples:  # the logged reward is the verifier's verdict on the logged response
    assert s["correct"] == task.verify(by_uid[s["problem"]], s["response"])
  evals = _jsonl(os.path.join(run_dir, "eval.jsonl"))
  assert [e["step"] for e in evals] == [0, 2, 3] and all(0 <= e["eval/pass@1"] <= 1 for e in evals)


def test_smoke_study_resumes_on_its_imported_base(run_dir):
  cfg, _, _, wd = launch.prepare(gsm8k_study.get_config("smoke"), run_dir)  # base, config, checkpoints agree
  assert wd.checkpoint_steps() == [2, 3] and wd.has_base()
  saved, task = wd.load_config()  # what replay reads: the same model and tokenizer, from the workdir alone
  assert saved.model == cfg.model and task.tokenizer.vocab_size == cfg.model.vocab_size
  with pytest.raises(ConfigError, match="different config"):
    launch.prepare(smoke(task__options__prompt="plain"), run_dir)


def test_smoke_study_replay_and_phases(run_dir):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  for cmd in (["rldyn.replay", f"--workdir={run_dir}", "--n=2", "--probe=4", "--batch_size=8",
               "--noplots", "--noprogress"],
              ["rldyn.phases", f"--workdir={run_dir}"]):
    out = subprocess.run([sys.executable, "-m", *cmd], capture_output=True, text=True, cwd=ROOT, env=env,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
  assert os.path.exists(os.path.join(run_dir, "replay", "report.md"))
  assert os.path.exists(os.path.join(run_dir, "phases.json"))


def test_math_study_config():
  cfg, task = launch.make_config(math_study.get_config("smoke"))
  assert task.config.test_path == "" and cfg.task.eval_size <= len(task.heldout)
  for variant in ("qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-7b"):
    for study in (gsm8k_study, math_study):
      c = study.get_config(variant)
      assert c.checkpoint_dir == "" and c.roles.tagger == "lexicon"
      with pytest.raises(ConfigError, match="set checkpoint_dir"):  # the variants need a local checkpoint
        c.task.options.train_path = GSM_TRAIN
        c.task.options.tokenizer_dir = CKPT
        launch.validate(launch.make_config(c)[0], 8)
  with pytest.raises(ValueError, match="valid: qwen2.5-0.5b"):
    gsm8k_study.get_config("qwen2.5-3b")
  assert dataclasses.is_dataclass(cfg.model)
