"""The checkpoint tokenizer: specials, EOS set, chat templates (sandboxed), plain prompts, text stops.

Tokenizers are built here with the `tokenizers` library: a byte-level BPE with ChatML specials
(Qwen-style) and one with a BOS post-processor (Llama-style).
"""
import json
import os

import numpy as np
import pytest

tokenizers = pytest.importorskip("tokenizers")
jinja2 = pytest.importorskip("jinja2")

from rldyn.model import hf  # noqa: E402
from rldyn.model import hf_tokenizer  # noqa: E402

CHATML = (
    "{%- for message in messages %}"
    "{%- if loop.first and message['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")
LLAMA3 = (
    "{{- bos_token }}{% for m in messages %}"
    "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")
CORPUS = ["Question: what is 12 + 30?\n\nAnswer: <answer>42</answer>",
          "The answer is <answer>7</answer> and then more text.",
          "Think step by step. </answer> </answer>\n\nQuestion: next"] * 20


def _bpe(specials):
  from tokenizers import decoders, models, pre_tokenizers, trainers  # pylint: disable=g-import-not-at-top
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
      vocab_size=300, special_tokens=list(specials), show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  return tok


def _write(d, tok, tok_cfg, gen_cfg=None):
  os.makedirs(d, exist_ok=True)
  tok.save(os.path.join(d, "tokenizer.json"))
  with open(os.path.join(d, "tokenizer_config.json"), "w") as fh:
    json.dump(tok_cfg, fh)
  if gen_cfg is not None:
    with open(os.path.join(d, "generation_config.json"), "w") as fh:
      json.dump(gen_cfg, fh)
  return d


def qwen_dir(root):
  tok = _bpe(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
  return _write(os.path.join(root, "qwen"), tok,
                {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "bos_token": None,
                 "chat_template": CHATML},
                {"eos_token_id": [2, 0]})


def llama_dir(root):
  from tokenizers import processors  # pylint: disable=g-import-not-at-top
  tok = _bpe(["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
              "<|eot_id|>"])
  tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                                     special_tokens=[("<|begin_of_text|>", 0)])
  return _write(os.path.join(root, "llama"), tok,
                {"bos_token": "<|begin_of_text|>",
                 "eos_token": {"__type": "AddedToken", "content": "<|end_of_text|>", "special": True},
                 "chat_template": LLAMA3},
                {"eos_token_id": [1, 4]})


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
  return hf.load_tokenizer(qwen_dir(str(tmp_path_factory.mktemp("tok"))))


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
  return hf.load_tokenizer(llama_dir(str(tmp_path_factory.mktemp("tok"))))


def test_specials_and_eos_set(qwen, llama):
  assert (qwen.eos_id, qwen.eos_ids, qwen.pad_id, qwen.bos_id) == (2, (2, 0), 0, None)
  assert qwen.id_to_token(2) == "<|im_end|>" and qwen.token_to_id("<|im_start|>") == 1
  # Llama 3: eos_token is <|end_of_text|>, a chat turn ends with <|eot_id|>; no pad token -> EOS pads.
  assert (llama.eos_ids, llama.bos_id, llama.pad_id) == ((1, 4), 0, 1)
  assert llama.vocab_size == qwen.vocab_size == 300


def test_encode_decode_offsets(qwen):
  text = "The answer is <answer>42</answer> and then more text."
  ids, offsets = qwen.encode_with_offsets(text)
  assert ids == qwen.encode(text) and qwen.decode(ids) == text
  assert "".join(text[a:b] for a, b in offsets) == text
  assert all(b0 == a1 for (_, b0), (a1, _) in zip(offsets, offsets[1:]))
  with_special = [1] + ids + [2]
  assert qwen.decode(with_special) == text
  assert qwen.decode(with_special, skip_special_tokens=False) == "<|im_start|>" + text + "<|im_end|>"
  with pytest.raises(ValueError, match="unknown token"):
    qwen.token_to_id("<nope>")


def test_chat_template_renders_as_written(qwen, llama):
  msgs = [{"role": "user", "content": "What is 6 * 7?"}]
  assert qwen.render_chat(msgs) == (
      "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
      "<|im_start|>user\nWhat is 6 * 7?<|im_end|>\n<|im_start|>assistant\n")
  assert qwen.render_chat(msgs, add_generation_prompt=False).endswith("<|im_end|>\n")
  assert llama.render_chat([{"role": "user", "content": " hi "}]) == (
      "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
      "<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_prompt_ids_chat_and_plain(qwen, llama):
  ids = qwen.prompt_ids("What is 6 * 7?", chat=True)
  assert ids[0] == 1 and ids.count(1) == 3 and ids.count(2) == 2  # three im_start, two im_end
  assert qwen.decode(ids, skip_special_tokens=False) == qwen.render_chat(
      [{"role": "user", "content": "What is 6 * 7?"}])
  assert qwen.prompt_ids("Question: 1 + 1?", chat=False) == qwen.encode("Question: 1 + 1?")
  # Llama: the template writes BOS once; a plain prompt gets it from the post-processor, once.
  chat = llama.prompt_ids("hi", chat=True)
  assert chat[0] == 0 and chat.count(0) == 1
  plain = llama.prompt_ids("Question: 1 + 1?", chat=False)
  assert plain == [0] + llama.encode("Question: 1 + 1?")
  with pytest.raises(TypeError, match="use chat=True"):
    llama.prompt_ids([{"role": "user", "content": "x"}], chat=False)


def test_add_bos_token_without_post_processor(tmp_path):
  d = qwen_dir(str(tmp_path))
  cfg = json.load(open(os.path.join(d, "tokenizer_config.json")))
  cfg.update(bos_token="<|endoftext|>", add_bos_token=True)
  json.dump(cfg, open(os.path.join(d, "tokenizer_config.json"), "w"))
  tok = hf.load_tokenizer(d)
  assert tok.prompt_ids("Question:", chat=False) == [0] + tok.encode("Question:")


def test_template_sources(tmp_path):
  d = qwen_dir(str(tmp_path))
  cfg = json.load(open(os.path.join(d, "tokenizer_config.json")))
  cfg["chat_template"] = [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]
  json.dump(cfg, open(os.path.join(d, "tokenizer_config.json"), "w"))
  assert hf.load_tokenizer(d).render_chat([]) == "D"
  with open(os.path.join(d, "chat_template.jinja"), "w") as fh:  # the file wins, as in transformers
    fh.write("J{{ messages | length }}{% generation %}g{% endgeneration %}")
  assert hf.load_tokenizer(d).render_chat([{"role": "user", "content": "x"}]) == "J1g"
  del cfg["chat_template"]
  json.dump(cfg, open(os.path.join(d, "tokenizer_config.json"), "w"))
  os.remove(os.path.join(d, "chat_template.jinja"))
  with pytest.raises(ValueError, match="no chat template.*chat=False"):
    hf.load_tokenizer(d).prompt_ids("x", chat=True)


def test_template_is_sandboxed(tmp_path):
  tok = hf.load_tokenizer(qwen_dir(str(tmp_path)))
  tok.chat_template = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
  with pytest.raises(jinja2.exceptions.SecurityError):
    tok.render_chat([])
  tok = hf.load_tokenizer(qwen_dir(str(tmp_path)))
  tok.chat_template = "{{ raise_exception('roles must alternate') }}"
  with pytest.raises(jinja2.exceptions.TemplateError, match="roles must alternate"):
    tok.render_chat([])
  tok = hf.load_tokenizer(qwen_dir(str(tmp_path)))
  tok.chat_template = "{{ messages | tojson }}|{{ enable_thinking }}"
  assert tok.render_chat([{"role": "user", "content": "é"}], enable_thinking=False) == (
      '[{"role": "user", "content": "é"}]|False')


def test_stop_string_split_across_tokens(qwen):
  head, mid, tail = (qwen.encode("The answer is 42"), qwen.encode(" </answer>"),
                     qwen.encode(" and then more text."))
  ids = head + mid + tail
  assert len(mid) == 3  # "Ġ</" "answer" ">": the stop string spans three tokens
  # After a space, "</answer>" is tokenized differently from alone: a token-id matcher misses it.
  stop_ids = qwen.encode("</answer>")
  assert not any(ids[i:i + len(stop_ids)] == stop_ids for i in range(len(ids)))
  cut = qwen.stop_cut(ids, ["</answer>"])
  assert cut == len(head) + len(mid)
  assert qwen.decode(ids[:cut]) == "The answer is 42 </answer>"
  assert qwen.stop_cut(ids, ["\n\nQuestion:"]) is None


@pytest.mark.parametrize("text", CORPUS[:3])
def test_stop_cut_is_the_shortest_prefix(qwen, text):
  ids = qwen.encode(text)
  for stop in ("</answer>", "\n\nQuestion:", "answer"):
    cut = qwen.stop_cut(ids, [stop, "never appears"])
    if stop not in text:
      assert cut is None
      continue
    assert stop in qwen.decode(ids[:cut]) and stop not in qwen.decode(ids[:cut - 1])


def test_eos_and_stop_strings_first_wins(qwen):
  a, b = qwen.encode("x = 42"), qwen.encode(" </answer> tail")
  assert qwen.stop_cut(a + [2] + b, ["</answer>"]) == len(a) + 1  # EOS first
  assert qwen.stop_cut(a + [0] + b, ["</answer>"]) == len(a) + 1  # generation_config's other EOS
  assert qwen.stop_cut(a + [2] + b, ["</answer>"], eos=False) == len(a) + 1 + len(
      qwen.encode(" </answer>"))
  assert qwen.stop_cut(b + [2], ["</answer>"]) == len(qwen.encode(" </answer>"))  # string first
  assert qwen.stop_cut(a, []) is None
  assert qwen.stop_cut(a + [2], []) == len(a) + 1
  assert qwen.stop_cut(a, ["<|im_start|>"]) is None
  assert qwen.stop_cut(a + [1, 5], ["<|im_start|>"]) == len(a) + 1  # specials decoded for stops


def test_apply_stops_on_a_sampled_batch(qwen):
  x, stop = qwen.encode("x = 42"), qwen.encode(" </answer> more")
  n = len(x) + len(stop) + 2
  rows = [x + stop, x + [2], x]
  tokens = np.zeros((3, n), np.int32)
  mask = np.zeros((3, n), bool)
  for b, r in enumerate(rows):
    tokens[b, :len(r)] = r
    mask[b, :len(r)] = True
  tokens[2, len(x):] = 2  # EOS-valued padding after the real tokens is not a stop
  new_mask, length, stopped = hf_tokenizer.apply_stops(qwen, tokens, mask, ["</answer>"])
  want = [len(x) + len(qwen.encode(" </answer>")), len(x) + 1, len(x)]
  np.testing.assert_array_equal(length, want)
  np.testing.assert_array_equal(stopped, [True, True, False])
  np.testing.assert_array_equal(new_mask, np.arange(n)[None, :] < np.array(want)[:, None])


def test_tokenizer_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
    hf.load_tokenizer(str(tmp_path))
  d = qwen_dir(str(tmp_path))
  json.dump({"eos_token": "<|not_there|>"}, open(os.path.join(d, "tokenizer_config.json"), "w"))
  with pytest.raises(ValueError, match="eos_token '<|not_there|>' is not in the tokenizer"):
    hf.load_tokenizer(d)
  json.dump({}, open(os.path.join(d, "tokenizer_config.json"), "w"))
  os.remove(os.path.join(d, "generation_config.json"))
  with pytest.raises(ValueError, match="no EOS token"):
    hf.load_tokenizer(d)
  with pytest.raises(ValueError, match="valid: bos, eos, pad, unk"):
    hf_tokenizer.HFTokenizer(tokenizers.Tokenizer.from_file(os.path.join(d, "tokenizer.json")),
                             special_tokens={"sep": "x"})
