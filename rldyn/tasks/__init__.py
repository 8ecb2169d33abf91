"""Verifiable synthetic tasks with ground-truth token roles.

    task = make_task("countdown", num_count=3, error_rate=0.1)
    rng = np.random.default_rng(0)
    problem = task.sample_problem(rng)
    response = task.reference_trace(problem, rng)
    task.verify(problem, response)  # True or False.
    roles = task.token_roles(task.tokenizer.encode(response))  # int8 [T].

The model sees `[bos] + encode(prompt) + encode(response) + [eos]`.
`evalsets.load_eval_set(task, size, seed)` gives fixed held-out problems.

Real math data: `mathdata.load_problems(path)` reads GSM8K/MATH JSONL and
verl parquet into Problems, and `verify_math(response, reference)` decides
whether a response's final answer is the reference's (`math_grader`).
`textmath` runs them as a task on a Hugging Face checkpoint's tokenizer
(prompts through its chat template, text stop strings; `textmath.py`).
"""

from typing import Any

from rldyn.tasks.arithmetic import ArithmeticConfig
from rldyn.tasks.arithmetic import ArithmeticTask
from rldyn.tasks.base import EXECUTION
from rldyn.tasks.base import is_heldout
from rldyn.tasks.base import OTHER
from rldyn.tasks.base import PLANNING
from rldyn.tasks.base import Problem
from rldyn.tasks.base import ROLE_NAMES
from rldyn.tasks.base import Task
from rldyn.tasks.countdown import CountdownConfig
from rldyn.tasks.countdown import CountdownTask
from rldyn.tasks.math_grader import verify_math
from rldyn.tasks.textmath import TextMathConfig
from rldyn.tasks.textmath import TextMathTask
from rldyn.tasks.tokenizer import TOKENIZER
from rldyn.tasks.tokenizer import Tokenizer

TASKS: dict[str, type[Task]] = {
    CountdownTask.name: CountdownTask,
    ArithmeticTask.name: ArithmeticTask,
    TextMathTask.name: TextMathTask,
}


def make_task(name: str, **kwargs: Any) -> Task:
  """The task `name` with its config built from `kwargs`."""
  if name not in TASKS:
    raise ValueError(f"unknown task {name!r}; valid: {sorted(TASKS)}")
  task_cls = TASKS[name]
  valid = [f.name for f in task_cls.config_cls.__dataclass_fields__.values()]
  unknown = sorted(set(kwargs) - set(valid))
  if unknown:
    raise ValueError(f"unknown {name} config keys {unknown}; valid: {valid}")
  return task_cls(task_cls.config_cls(**kwargs))
