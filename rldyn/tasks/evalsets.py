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

Without `tensorflow_datasets` (a pre-built JAX image may lack it) the same
problems are generated in memory each time instead: `generate_eval_problems`
is what the builder stores, so no number changes.

A task whose held-out problems come from a file (`Task.fixed_heldout`, e.g.
`textmath`) needs no TFDS set: `load_eval_set` takes `size` of them, chosen
by the seed and kept in file order.

Also here: GSM8K-style JSONL from a local path (`load_jsonl`) and a numeric
verifier for natural-text answers (`verify_numeric`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import decimal
import fcntl
import functools
import hashlib
import importlib
import io
import json
import logging
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
# A number: sign, digits (commas only in groups of three), fraction, exponent;
# not glued to a word or a dot before it.
_NUMBER = re.compile(r"(?<![\w.])(-?)((?:[1-9][0-9]{0,2}(?:,[0-9]{3})+(?![0-9])|"
                     r"[0-9]+)(?:\.[0-9]+)?|\.[0-9]+)([eE][-+]?[0-9]+)?")
_MAX_NUMERIC_CHARS = 1 << 20  # Longer texts score False.
_MAX_DIGITS = 400  # Longer numbers score False.


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


class _QuietTFDS(logging.Filter):
  """Drops TFDS's notices about our locally generated set ("custom data configuration" ...)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return "custom data configuration" not in str(record.msg)


@contextlib.contextmanager
def _quiet():
  """No TFDS chatter for a set generated here: its log notices and its "Downloading and preparing
  dataset Unknown size" prints (nothing is downloaded)."""
  quiet = _QuietTFDS()
  logger = logging.getLogger("absl")
  logger.addFilter(quiet)
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      yield
  finally:
    logger.removeFilter(quiet)


def _data_root(data_dir: str | None) -> str:
  """The absolute folder eval sets are built in (`data_dir`, else DEFAULT_DATA_DIR)."""
  return os.path.abspath(os.path.expanduser(data_dir or DEFAULT_DATA_DIR))


def eval_set_builder(task: base.Task, size: int, seed: int = 0,
                     data_dir: str | None = None) -> Any:
  """The (not yet prepared) TFDS builder of an eval set."""
  config_cls, builder_cls = _builder_cls()
  name, config_json = _config_name(task, size, seed)
  config = config_cls(
      name=name, description=f"{size} held-out {task.name} problems",
      task_name=task.name, task_config=config_json, size=size, seed=seed)
  with _quiet():
    return builder_cls(config=config, data_dir=_data_root(data_dir),
                       file_format="array_record")


@contextlib.contextmanager
def _build_lock(data_dir: str | None):
  """Holds an exclusive lock on `data_dir`'s eval sets while one is built (an flock: released when the
  process dies). Without it, two launches preparing the same set at once (robustness.py --jobs=2 on a
  fresh machine) race on TFDS's final rename and the second dies with FileExistsError."""
  root = _data_root(data_dir)
  os.makedirs(root, exist_ok=True)
  with open(os.path.join(root, ".rldyn_build.lock"), "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


@functools.cache
def tfds_available() -> bool:
  """Whether `tensorflow_datasets` imports here (pip installs it with rldyn; some pre-built JAX images
  lack it). Without it `load_eval_set` generates the set in memory instead (warning once)."""
  try:
    importlib.import_module("tensorflow_datasets")
  except ImportError:
    logging.warning("tensorflow_datasets is not installed: held-out sets are generated in memory "
                    "(the same problems as the TFDS sets; nothing is cached under task.data_dir)")
    return False
  return True


def load_eval_set(task: base.Task, size: int, seed: int = 0,
                  data_dir: str | None = None) -> list[base.Problem]:
  """A fixed held-out eval set, built under `data_dir` on first use.

  Without `tensorflow_datasets` the same problems are generated in memory (`generate_eval_problems`,
  which is what the TFDS builder stores), so a run's numbers do not depend on whether it is installed.
  """
  fixed = task.fixed_heldout()
  if fixed is not None:
    return select_heldout(fixed, size, seed)
  if not tfds_available():
    return generate_eval_problems(task, size, seed)
  with _build_lock(data_dir):  # concurrent launches on a fresh cache: one builds, the others read it
    builder = eval_set_builder(task, size, seed, data_dir)
    with _quiet():
      builder.download_and_prepare()
  source = builder.as_data_source(_SPLIT)
  records = sorted((source[k] for k in range(len(source))),
                   key=lambda r: int(r["index"]))
  fields = [f.name for f in dataclasses.fields(base.Problem)]
  return [base.Problem(**{f: _text(r[f]) for f in fields}) for r in records]


def select_heldout(problems: list[base.Problem], size: int,
                   seed: int = 0) -> list[base.Problem]:
  """`size` of a file's held-out problems, drawn by `seed`, in file order."""
  if size > len(problems):
    raise ValueError(f"task.eval_size={size} but the held-out file has only "
                     f"{len(problems)} problems; lower task.eval_size")
  rng = np.random.default_rng([_EVAL_SEED_DOMAIN, seed])
  keep = np.sort(rng.choice(len(problems), size, replace=False))
  return [problems[k] for k in keep]


def _text(value: Any) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def load_jsonl(path: str, question_key: str = "question",
               answer_key: str = "answer") -> list[base.Problem]:
  """Problems from a GSM8K-style JSONL file (answer after '####' if any).

  A bad line (invalid JSON, not an object, a missing, null or non-text
  field) raises ValueError naming the file and line. `mathdata.load_problems`
  reads the GSM8K, MATH and verl layouts with chat prompts.
  """
  problems = []
  with open(path, encoding="utf-8") as f:
    for line_no, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{line_no}: invalid JSON ({e})") from None
      if not isinstance(record, dict):
        raise ValueError(f"{path}:{line_no}: a line must be a JSON object, "
                         f"got {type(record).__name__}")
      if question_key not in record or answer_key not in record:
        raise ValueError(f"{path}:{line_no}: needs keys {question_key!r} and "
                         f"{answer_key!r}, has {sorted(record)}")
      question, solution = (_field(record, k, path, line_no)
                            for k in (question_key, answer_key))
      answer = solution.rsplit("####", 1)[-1].strip()
      if not answer:
        raise ValueError(f"{path}:{line_no}: no answer after '####'")
      problems.append(base.Problem(
          uid=base.make_uid("jsonl", question), prompt=question,
          answer=answer,
          data=json.dumps({"answer": answer, "solution": solution})))
  return problems


def _field(record: dict[str, Any], key: str, path: str, line_no: int) -> str:
  value = record[key]
  if isinstance(value, bool) or not isinstance(value, (str, int, float)):
    raise ValueError(f"{path}:{line_no}: {key!r} must be text or a number, "
                     f"got {json.dumps(value)[:40]}")
  return str(value)


def _final_number(text: str) -> decimal.Decimal | None:
  """The first number after the last '####', else the last number; None if
  there is none or it is too long. Scans all of `text` (no cut that could
  split a number or drop the marker)."""
  if len(text) > _MAX_NUMERIC_CHARS:
    return None
  marker = text.rfind("####")
  if marker >= 0:
    m = _NUMBER.search(text, marker + 4)
  else:
    m = None
    for m in _NUMBER.finditer(text):
      pass
  if m is None:
    return None
  digits = sum(c.isdigit() for c in m.group(2))
  exponent = m.group(3)
  if digits > _MAX_DIGITS or (exponent and len(exponent) > 8):
    return None  # Far beyond any answer; not worth reading.
  try:
    return decimal.Decimal(m.group(1) + m.group(2).replace(",", "") +
                           (exponent or ""))
  except decimal.InvalidOperation:
    return None


def verify_numeric(answer: str, response: str) -> bool:
  """Whether `response`'s final number equals `answer`'s.

  The final number is the first one after the last '####' if there is one,
  else the last one in the text. Numbers are `-12`, `1,234.5` (commas only
  in groups of three), `.5`, `1e5`; digits glued to a letter or a dot before
  them (`x5`, `v1.5`) are not numbers. Texts over 1 MiB and numbers over 400
  digits score False. Never evaluates the text; `math_grader.verify_math`
  also compares LaTeX.
  """
  expected, got = _final_number(answer), _final_number(response)
  return expected is not None and got is not None and expected == got
