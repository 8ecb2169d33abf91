"""Cost of role tagging per RL step (host side, numpy + Python), against a 2-second step.

    python benchmarks/bench_roles.py               # 256 countdown responses (~80 tokens each)
    python benchmarks/bench_roles.py --responses=1024 --repeat=3

Times one call of each tagger on one step's responses (best of --repeat), plus the semantic-entropy
group count (`group_uses`), and prints milliseconds and the step-time ratio (2 s + t) / 2 s
(target <= 1.05). The `lexicon` tagger re-derives text and character offsets from the ids, matches
the shipped countdown lexicon (5k n-grams) and maps spans to tokens; `lexicon+bpe` does the same
through a byte-level BPE `tokenizers.Tokenizer` trained in memory on the traces (decode + re-encode
with offsets), the path a real model takes.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import best_of  # noqa: E402
from rldyn import roles  # noqa: E402
from rldyn.tasks import make_task  # noqa: E402

STEP_S = 2.0


def best_ms(fn, repeat: int) -> float:
  return best_of(fn, repeat) * 1e3


def train_bpe(texts):
  # pylint: disable-next=g-import-not-at-top
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.train_from_iterator(texts, trainers.BpeTrainer(
      vocab_size=512, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  return tok


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--responses", type=int, default=256)
  parser.add_argument("--repeat", type=int, default=5)
  args = parser.parse_args()
  task = make_task("countdown")
  texts = [t for _, t in roles.reference_traces(task, args.responses, seed=0, correct_only=False)]
  ids_list = [[*task.tokenizer.encode(t), task.tokenizer.eos_id] for t in texts]
  lengths = [len(x) for x in ids_list]
  print(f"== rldyn.roles: {len(ids_list)} responses, mean {np.mean(lengths):.1f} tokens "
        f"(max {max(lengths)}), {os.cpu_count()} CPUs ==")
  cases = {name: roles.make_tagger(name, task) for name in ("structural", "lexicon")}
  cases["lexicon(math_en)"] = roles.make_tagger("lexicon", task, lexicon_path="math_en")
  cases["placebo(lexicon)"] = roles.make_tagger("placebo", task, placebo_of="lexicon")
  rows = []
  for name, tagger in cases.items():
    rows.append((name, best_ms(lambda t=tagger: t(ids_list, texts, 1), args.repeat)))
  lex = cases["lexicon"].lexicon
  matcher = roles.Matcher(lex)
  rows.append(("group_uses (sem. entropy)", best_ms(lambda: roles.group_uses(texts, matcher),
                                                    args.repeat)))
  try:
    bpe = train_bpe(texts)
  except ImportError:
    bpe = None
  if bpe is not None:
    bpe_ids = [bpe.encode(t).ids for t in texts]
    tagger = roles.make_tagger("lexicon", task, tokenizer=bpe)
    rows.append((f"lexicon+bpe ({np.mean([len(x) for x in bpe_ids]):.0f} tok)",
                 best_ms(lambda: tagger(bpe_ids, texts, 1), args.repeat)))
  print(f"{'tagger':<28}{'ms/step':>10}{'ratio vs 2 s step':>20}")
  for name, ms in rows:
    print(f"{name:<28}{ms:>10.1f}{(STEP_S + ms / 1e3) / STEP_S:>20.4f}")
  lex_total = dict(rows)["lexicon"] + dict(rows)["group_uses (sem. entropy)"]
  ratio = (STEP_S + lex_total / 1e3) / STEP_S
  print(f"lexicon tagging + semantic entropy: {lex_total:.1f} ms/step, ratio {ratio:.4f} "
        f"({'meets' if ratio <= 1.05 else 'MISSES'} the 1.05 target)")


if __name__ == "__main__":
  main()
