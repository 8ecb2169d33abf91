"""Fixed held-out evaluation sets, materialised as TFDS datasets.

`load_eval_set(task, size, seed)` builds (offline, on first use) a TFDS
dataset in array_record format and reads it back through
`builder.as_data_source`; TensorFlow is not needed. The builder config's name
hashes the task name, the problem-shaping part of the task config
(`Task.problem_config`), the size, the seed and `GENERATOR_VERSION`, so
different sets never collide in the cache, and studies that differ only in
trace knobs (error rate, budget, strategy mix) share one set.

Problems come from the held-out split (`base.is_heldout`: a uid-hash bucket
that `Task.sample_problem` never returns for training), drawn with a seed
domain of their own, deduplicated by uid and kept in generation order.

Also here: GSM8K-style JSONL from a local path (`load_jsonl`) and a numeric
verifier for natural-text answers (`verify_numeric`).
"""

from __future__ import annotations

import dataclasses
import decimal
import functools
import hashlib
import json
import os
import re
from typing import Any

import numpy as np

from rldyn import tasks as tasks_lib
from rldyn.tasks import base

GENERATOR_VERSION = 1  # Bump when generation changes, to invalidate caches.
DEFAULT_DATA_DIR = "~/.cache/rldyn/tfds"
_EVAL_SEED_DOMAIN = 0x5EED_E7A1  # Keeps eval rng streams apart from others.
_SPLIT = "test"
_NUMBER = re.compile(r"-?[0-9][0-9,]*(?:\.[0-9]+)?")
_MAX_NUMERIC_CHARS = 10_000  # verify_numeric reads at most this much text.


def generate_eval_problems(task: base.Task, size: int,
                           seed: int = 0) -> list[base.Problem]:
  """The `size` distinct held-out problems an eval set holds, generated."""
  rng = np.random.default_rng([_EVAL_SEED_DOMAIN, seed])
  problems, seen = [], set()
  for _ in range(10 * size + 100):
    if len(problems) == size:
      break
    problem = task.sample_problem(rng, heldout=True)
    if problem.uid not in seen:
      seen.add(problem.uid)
      problems.append(problem)
  if len(problems) == size:
    return problems
  raise ValueError(f"found only {len(problems)} distinct held-out "
                   f"{task.name} problems, {size} requested; widen the config")


def _config_name(task: base.Task, size: int, seed: int) -> tuple[str, str]:
  """(builder config name, task config JSON)."""
  config_json = json.dumps(task.problem_config(), sort_keys=True)
  key = json.dumps([task.name, config_json, size, seed, GENERATOR_VERSION])
  digest = hashlib.sha256(key.encode()).hexdigest()[:16]
  return f"{task.name}_{digest}", config_json


@functools.cache
def _builder_cls() -> tuple[type[Any], type[Any]]:
  """(BuilderConfig, Builder) classes; tfds is imported only when needed."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tfds.disable_progress_bar()  # an eval set of a few hundred problems builds in a second

  @dataclasses.dataclass(eq=False)
  class EvalSetConfig(tfds.core.BuilderConfig):
    task_name: str = ""
    task_config: str = "{}"  # JSON of the task's problem_config().
    size: int = 0
    seed: int = 0

  class EvalSetBuilder(tfds.core.GeneratorBasedBuilder,
                       skip_registration=True):
    """A fixed set of held-out problems of one task config."""
    name = "rldyn_eval_set"
    VERSION = tfds.core.Version("1.0.0")

    def _info(self) -> Any:
      text = tfds.features.Text()
      return tfds.core.DatasetInfo(
          builder=self,
          description="rldyn held-out evaluation problems",
          features=tfds.features.FeaturesDict({
              "index": tfds.features.Scalar(dtype=np.int64),
              "uid": text, "prompt": text, "answer": text, "data": text}),
          disable_shuffling=True)

    def _split_generators(self, dl_manager: Any) -> dict[str, Any]:
      del dl_manager  # Nothing to download.
      return {_SPLIT: self._generate_examples()}

    def _generate_examples(self):
      c = self.builder_config
      task = tasks_lib.make_task(c.task_name, **json.loads(c.task_config))
      for k, p in enumerate(generate_eval_problems(task, c.size, c.seed)):
        yield k, {"index": k, **dataclasses.asdict(p)}

  return EvalSetConfig, EvalSetBuilder


def eval_set_builder(task: base.Task, size: int, seed: int = 0,
                     data_dir: str | None = None) -> Any:
  """The (not yet prepared) TFDS builder of an eval set."""
  config_cls, builder_cls = _builder_cls()
  name, config_json = _config_name(task, size, seed)
  config = config_cls(
      name=name, description=f"{size} held-out {task.name} problems",
      task_name=task.name, task_config=config_json, size=size, seed=seed)
  data_dir = os.path.abspath(os.path.expanduser(data_dir or DEFAULT_DATA_DIR))
  return builder_cls(config=config, data_dir=data_dir,
                     file_format="array_record")


def load_eval_set(task: base.Task, size: int, seed: int = 0,
                  data_dir: str | None = None) -> list[base.Problem]:
  """A fixed held-out eval set, built under `data_dir` on first use."""
  builder = eval_set_builder(task, size, seed, data_dir)
  builder.download_and_prepare()
  source = builder.as_data_source(_SPLIT)
  records = sorted((source[k] for k in range(len(source))),
                   key=lambda r: int(r["index"]))
  fields = [f.name for f in dataclasses.fields(base.Problem)]
  return [base.Problem(**{f: _text(r[f]) for f in fields}) for r in records]


def _text(value: Any) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def load_jsonl(path: str, question_key: str = "question",
               answer_key: str = "answer") -> list[base.Problem]:
  """Problems from a GSM8K-style JSONL file (answer after '####' if any)."""
  problems = []
  with open(path, encoding="utf-8") as f:
    for line_no, line in enumerate(f, 1):
      if not line.strip():
        continue
      record = json.loads(line)
      if question_key not in record or answer_key not in record:
        raise ValueError(f"{path}:{line_no}: needs keys {question_key!r} and "
                         f"{answer_key!r}, has {sorted(record)}")
      question, solution = str(record[question_key]), str(record[answer_key])
      answer = solution.rsplit("####", 1)[-1].strip()
      problems.append(base.Problem(
          uid=base.make_uid("jsonl", question), prompt=question,
          answer=answer,
          data=json.dumps({"answer": answer, "solution": solution})))
  return problems


def _final_number(text: str) -> decimal.Decimal | None:
  text = text[-_MAX_NUMERIC_CHARS:]
  if "####" in text:
    m = _NUMBER.search(text.rsplit("####", 1)[-1])
    number = m and m.group()
  else:
    numbers = _NUMBER.findall(text)
    number = numbers[-1] if numbers else None
  if not number:
    return None
  try:
    return decimal.Decimal(number.replace(",", ""))
  except decimal.InvalidOperation:
    return None


def verify_numeric(answer: str, response: str) -> bool:
  """Whether `response`'s final number equals `answer`'s.

  The final number is the first one after the last '####' if there is one,
  else the last one in the text; commas are dropped. Reads at most the last
  10k characters and never evaluates the text.
  """
  expected, got = _final_number(answer), _final_number(response)
  return expected is not None and got is not None and expected == got
