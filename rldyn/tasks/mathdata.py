"""Real math problems (GSM8K, MATH) from local files, and their reward hook.

    problems = mathdata.load_problems("gsm8k/train.jsonl")  # or a verl .parquet
    train, heldout = mathdata.split_heldout(problems)  # the uid-hash split
    train, heldout = mathdata.load_splits("train.parquet", "test.parquet")
    problem.prompt  # plain-prompt mode: "Question: ...\\nAnswer:"
    mathdata.chat_messages(problem)  # [{"role": "user", "content": ...}]
    mathdata.verify(problem, response_text)  # the reward: math_grader.verify_math

Row layouts, detected per row (JSONL lines or parquet rows):
  verl   `prompt` (chat messages), `reward_model.ground_truth`, optional
         `data_source` and `extra_info` (what verl's examples/data_preprocess
         gsm8k.py and math_dataset.py write; their prompts already end in the
         instruction);
  gsm8k  `question`, `answer` (a worked solution ending in `#### <answer>`);
  math   `problem` and `answer` (the final answer) or `solution` (with a
         `\\boxed{}` answer), optional `level`, `type`.
GSM8K and MATH rows get verl's instruction appended to the question, and a
GSM8K answer loses its thousands commas as verl's does, so a JSONL file and
the parquet verl makes from the same data give the same Problems (uid, prompt,
answer). A Problem's uid hashes the user message alone, so the held-out
split (`base.is_heldout`, 1/16 of problems) is stable across runs, files and
formats. A bad row raises ValueError naming the file and line (or
parquet row); a question repeated with another answer is an error too.

Parquet needs pyarrow (imported only for parquet files).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
import json
import os
from typing import Any

from absl import logging

from rldyn.tasks import base
from rldyn.tasks import math_grader

GSM8K_INSTRUCTION = ("Let's think step by step and output the final answer "
                     "after \"####\".")
MATH_INSTRUCTION = ("Let's think step by step and output the final answer "
                    "within \\boxed{}.")
UID_NAMESPACE = "math"  # Uids are "math/<hash of the user message>".
FORMATS = {".jsonl": "jsonl", ".parquet": "parquet"}


def plain_prompt(question: str) -> str:
  """The plain-prompt-mode text a base model continues with its response."""
  return f"Question: {question}\nAnswer:"


def chat_messages(problem: base.Problem) -> list[dict[str, str]]:
  """The chat messages (for a chat template) of a loaded problem."""
  return json.loads(problem.data)["messages"]


def verify(problem: base.Problem, response: str) -> bool:
  """The reward hook: whether `response`'s final answer is the problem's."""
  return math_grader.verify_math(response, problem.answer)


def extract_answer(response: str) -> str | None:
  """The final answer a response gives (None when it gives none)."""
  return math_grader.extract_answer(response)


def load_problems(path: str, source: str | None = None,
                  instruction: str | None = None,
                  skip_invalid: bool = False) -> list[base.Problem]:
  """Problems from a JSONL or verl parquet file, in file order, deduplicated.

  Args:
    path: a `.jsonl` or `.parquet` file.
    source: the data source recorded in `data`; default: the row's
      `data_source` (verl), else its layout name ("gsm8k" or "math").
    instruction: appended to gsm8k/math questions (default: verl's
      instruction for the layout; "" for none). verl prompts are used as they
      are.
    skip_invalid: skip rows that cannot be a problem (MATH's train file has
      two with an empty answer), logging their count and the first reason,
      instead of raising.
  """
  ext = os.path.splitext(path)[1].lower()
  if ext not in FORMATS:
    raise ValueError(f"{path}: unknown file type {ext!r}; valid: "
                     f"{sorted(FORMATS)}")
  rows = _jsonl_rows(path) if FORMATS[ext] == "jsonl" else _parquet_rows(path)
  problems, first_line, skipped = {}, {}, []
  for where, row in rows:
    try:
      if isinstance(row, ValueError):
        raise row
      problem = _problem(row, source, instruction, where)
    except ValueError as e:
      if not skip_invalid:
        raise ValueError(f"{path}:{where}: {e}") from None
      skipped.append(f"{path}:{where}: {e}")
      continue
    if problem.uid in problems:
      if problems[problem.uid].answer != problem.answer:
        raise ValueError(
            f"{path}:{where}: the question of {first_line[problem.uid]} "
            f"again, with answer {problem.answer!r} instead of "
            f"{problems[problem.uid].answer!r}")
      continue
    problems[problem.uid], first_line[problem.uid] = problem, where
  if skipped:
    logging.warning("skipped %d invalid rows, the first: %s", len(skipped),
                    skipped[0])
  return list(problems.values())


def split_heldout(
    problems: Sequence[base.Problem]
) -> tuple[list[base.Problem], list[base.Problem]]:
  """(train, heldout) by the uid hash (`base.is_heldout`)."""
  heldout = [p for p in problems if base.is_heldout(p)]
  return [p for p in problems if not base.is_heldout(p)], heldout


def load_splits(
    train_path: str, heldout_path: str | None = None, **kwargs: Any
) -> tuple[list[base.Problem], list[base.Problem]]:
  """(train, heldout): the heldout file's problems, or the uid-hash split.

  With `heldout_path` (a file's own test split), training problems whose
  question is also in the held-out file are dropped. `kwargs` go to
  `load_problems`.
  """
  train = load_problems(train_path, **kwargs)
  if heldout_path is None:
    return split_heldout(train)
  heldout = load_problems(heldout_path, **kwargs)
  held = {p.uid for p in heldout}
  return [p for p in train if p.uid not in held], heldout


def _jsonl_rows(path: str) -> Iterator[tuple[str, Any]]:
  with open(path, encoding="utf-8") as f:
    for line_no, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        row = ValueError(f"invalid JSON ({e})")  # Raised (or skipped) later.
      yield f"{line_no}", row


def _parquet_rows(path: str) -> Iterator[tuple[str, Any]]:
  try:
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ImportError(f"reading {path} needs pyarrow: pip install pyarrow"
                      ) from None
  k = 0
  for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
    for row in batch.to_pylist():
      k += 1
      yield f"row {k}", row


def _text(row: dict[str, Any], key: str) -> str:
  """row[key] as a non-empty string (numbers allowed; null is not)."""
  value = row.get(key)
  if isinstance(value, bool) or not isinstance(value, (str, int, float)):
    raise ValueError(f"{key!r} must be a string, got {json.dumps(value)[:40]}")
  value = str(value).strip()
  if not value:
    raise ValueError(f"{key!r} is empty")
  return value


def _layout(row: Any) -> str:
  if isinstance(row, dict):
    if "reward_model" in row:
      return "verl"
    if "question" in row and "answer" in row:
      return "gsm8k"
    if "problem" in row and ("answer" in row or "solution" in row):
      return "math"
  keys = sorted(row) if isinstance(row, dict) else type(row).__name__
  raise ValueError(
      f"a row of unknown layout ({keys}); valid: verl (prompt, "
      f"reward_model.ground_truth), gsm8k (question, answer), math (problem, "
      f"answer or solution)")


def _problem(row: Any, source: str | None, instruction: str | None,
             where: str) -> base.Problem:
  layout = _layout(row)
  data: dict[str, Any] = {"layout": layout, "where": where}
  if layout == "verl":
    messages = row.get("prompt")
    if (not isinstance(messages, list) or not messages or
        not all(isinstance(m, dict) and isinstance(m.get("content"), str) and
                isinstance(m.get("role"), str) for m in messages)):
      raise ValueError("'prompt' must be a list of {role, content} messages")
    messages = [{"role": m["role"], "content": m["content"]}
                for m in messages]
    users = [m["content"] for m in messages if m["role"] == "user"]
    if not users:
      raise ValueError("'prompt' has no user message")
    reward = row["reward_model"]
    if not isinstance(reward, dict):
      raise ValueError("'reward_model' must be an object")
    answer = _text(reward, "ground_truth")
    question = users[-1]
    source = source or row.get("data_source") or "verl"
    extra = row.get("extra_info")
    if isinstance(extra, dict) and extra.get("split") is not None:
      data["split"] = str(extra["split"])
  else:
    if layout == "gsm8k":
      question, solution = _text(row, "question"), _text(row, "answer")
      if "####" not in solution:
        raise ValueError("a gsm8k 'answer' must end in '#### <answer>'")
      answer = solution.rsplit("####", 1)[1].strip().replace(",", "")
      default_instruction = GSM8K_INSTRUCTION
    else:
      question = _text(row, "problem")
      if row.get("answer") is not None:
        answer, solution = _text(row, "answer"), row.get("solution")
      else:
        solution = _text(row, "solution")
        answer = math_grader.extract_answer(solution)
        if answer is None or "\\boxed" not in solution:
          raise ValueError("a math 'solution' needs a \\boxed{} answer")
      for key in ("level", "type"):
        if row.get(key) is not None:
          data[key] = str(row[key])
      default_instruction = MATH_INSTRUCTION
    if not answer:
      raise ValueError("the answer is empty")
    if solution is not None:
      data["solution"] = str(solution)
    suffix = default_instruction if instruction is None else instruction
    question = f"{question} {suffix}" if suffix else question
    messages = [{"role": "user", "content": question}]
    source = source or layout
  data.update(source=str(source), messages=messages)
  return base.Problem(uid=base.make_uid(UID_NAMESPACE, question),
                      prompt=plain_prompt(question), answer=answer,
                      data=json.dumps(data, ensure_ascii=False))
