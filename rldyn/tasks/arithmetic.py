"""Multi-step arithmetic with a scratchpad: the procedure-heavy task.

Problem: evaluate an expression of `num_ops` operations (+ - * by default)
over integers 1..max_operand, printed with only the parentheses it needs:
"eval ( 3 + 4 ) * 5 - 6 :". Every subexpression's value is a non-negative
integer no larger than `max_value`, so no negative number is ever written.

Response: one step per operation, reducing an operation whose operands are
both numbers, then restating what is left; then the answer:

    3 + 4 = 7 then 7 * 5 - 6 ; 7 * 5 = 35 then 35 - 6 ; 35 - 6 = 29 answer 29

When several operations are ready ("3 * 4 + 5 * 6"), the strategy drawn per
trace (`strategy_mix`) picks one: `leftmost`, `rightmost` or `random`. At
`error_rate` a written result is off by 1..max_error and the error propagates
to the answer (errors that would make a later value negative are not
injected, so the realised rate is slightly below the configured one).

Verifier: the text after the last `answer` must be a number equal to the
expression's value.

Token roles (`token_roles`, a state machine over ids; any sequence works):
  planning   the digits of the first number of each step (at the response
             start or after `;`): where the step commits to a subexpression.
             Planning stays small (~10% of tokens); it is forced when only one
             operation is ready.
  execution  every other content token: the rest of the step, `=`, results,
             restated expressions, the answer number.
  other      `then ; answer`, other keywords and separators, pad, bos, eos,
             out-of-vocabulary ids.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import json
import re
from typing import Any

import numpy as np

from rldyn.tasks import base
from rldyn.tasks import expr as expr_lib

STRATEGIES = ("leftmost", "rightmost", "random")
_ANSWER = re.compile(r"\s*([0-9]{1,12})\s*")


@dataclasses.dataclass(frozen=True)
class ArithmeticConfig:
  """Arithmetic problem and trace knobs."""
  num_ops: int = 3  # Operations per expression (1-8).
  max_operand: int = 12  # Operands are drawn from 1..max_operand.
  max_value: int = 999  # Bound on every subexpression's value.
  ops: str = "+-*"  # Operators to draw from (a subset of "+-*").
  error_rate: float = 0.1  # P(a written result is wrong); the error propagates.
  max_error: int = 3  # A wrong result is off by 1..max_error.
  # (strategy, weight) pairs, or a mapping; a strategy is drawn per trace.
  strategy_mix: Any = (("leftmost", 0.5), ("rightmost", 0.25),
                       ("random", 0.25))

  def __post_init__(self):
    if not 1 <= self.num_ops <= 8:
      raise ValueError(f"num_ops must be in 1..8, got {self.num_ops}")
    if self.max_operand < 1 or self.max_value < self.max_operand:
      raise ValueError("need 1 <= max_operand <= max_value")
    if not self.ops or not set(self.ops) <= set("+-*"):
      raise ValueError(f"ops must be a non-empty subset of '+-*', got "
                       f"{self.ops!r}")
    if not 0.0 <= self.error_rate <= 1.0:
      raise ValueError(f"error_rate must be in [0, 1], got {self.error_rate}")
    if self.max_error < 1:
      raise ValueError(f"max_error must be >= 1, got {self.max_error}")
    object.__setattr__(self, "strategy_mix", base.normalize_mix(
        self.strategy_mix, STRATEGIES, "arithmetic strategy"))


def _values_ok(e: expr_lib.Expr, max_value: int) -> bool:
  """Every subexpression of `e` is an integer in [0, max_value]."""
  if not isinstance(e, expr_lib.BinOp):
    return 0 <= e <= max_value
  if not (_values_ok(e.left, max_value) and _values_ok(e.right, max_value)):
    return False
  v = expr_lib.evaluate(e)
  return v.denominator == 1 and 0 <= v <= max_value


class ArithmeticTask(base.Task):
  """Step-by-step expression evaluation; see the module docstring."""

  name = "arithmetic"
  config_cls = ArithmeticConfig
  problem_keys = ("num_ops", "max_operand", "max_value", "ops")
  answer_marker = "answer"

  def __init__(self, config: ArithmeticConfig | None = None, **kwargs):
    super().__init__(config, **kwargs)
    tok = self.tokenizer
    self._step_sep_id = tok.token_to_id(";")
    self._other_ids = frozenset(
        [tok.pad_id, tok.bos_id, tok.eos_id] +
        [tok.token_to_id(t) for t in tok.vocab[3:]
         if t.isalpha() or t in (":", ";", ",")])

  # Problems.

  def _random_expr(self, rng: np.random.Generator,
                   num_ops: int) -> expr_lib.Expr:
    if num_ops == 0:
      return int(rng.integers(1, self.config.max_operand + 1))
    left_ops = int(rng.integers(num_ops))
    op = self.config.ops[rng.integers(len(self.config.ops))]
    return expr_lib.BinOp(op, self._random_expr(rng, left_ops),
                          self._random_expr(rng, num_ops - 1 - left_ops))

  def _generate_problem(self, rng: np.random.Generator) -> base.Problem:
    for _ in range(base.MAX_REJECTIONS):
      e = self._random_expr(rng, self.config.num_ops)
      if _values_ok(e, self.config.max_value):
        return self.make_problem(expr_lib.to_text(e))
    raise ValueError(f"{self.config} admits (almost) no valid expression")

  def make_problem(self, expression: str) -> base.Problem:
    """The problem of evaluating `expression` (canonicalised)."""
    e = expr_lib.parse(expression, max_tokens=256)
    text = expr_lib.to_text(e)
    value = expr_lib.evaluate(e)
    prompt = f"eval {text} :"
    return base.Problem(
        uid=base.make_uid(self.name, prompt), prompt=prompt,
        answer=str(value), data=json.dumps({"expression": text,
                                            "value": str(value)}))

  # Traces.

  def reference_trace(self, problem: base.Problem,
                      rng: np.random.Generator) -> str:
    c = self.config
    strategy = base.choose(rng, c.strategy_mix)
    e = expr_lib.parse(json.loads(problem.data)["expression"], max_tokens=256)
    steps = []
    while isinstance(e, expr_lib.BinOp):
      paths = expr_lib.ready_paths(e)
      if strategy == "leftmost":
        path = paths[0]
      elif strategy == "rightmost":
        path = paths[-1]
      else:
        path = paths[rng.integers(len(paths))]
      node = expr_lib.subexpr(e, path)
      written = self._written(e, path, int(expr_lib.evaluate(node)), rng)
      e = expr_lib.replace(e, path, written)
      step = f"{node.left} {node.op} {node.right} = {written}"
      if isinstance(e, expr_lib.BinOp):
        step += f" then {expr_lib.to_text(e)}"
      steps.append(step)
    return " ; ".join(steps) + f" answer {e}"

  def _written(self, e: expr_lib.Expr, path: expr_lib.Path, result: int,
               rng: np.random.Generator) -> int:
    """The result as written: wrong at error_rate if that stays valid."""
    c = self.config
    if rng.random() >= c.error_rate:
      return result
    deltas = [d for d in range(-c.max_error, c.max_error + 1) if d]
    for k in rng.permutation(len(deltas)):
      wrong = result + deltas[k]
      if wrong >= 0 and _values_ok(expr_lib.replace(e, path, wrong),
                                   c.max_value + c.max_error * c.num_ops):
        return wrong
    return result

  # Verification.

  def extract_answer(self, response: str) -> str | None:
    k = response.rfind("answer")
    if k < 0:
      return None
    m = _ANSWER.fullmatch(response, k + len("answer"))
    return None if m is None else str(int(m.group(1)))

  def verify(self, problem: base.Problem, response: str) -> bool:
    return self.extract_answer(response) == json.loads(problem.data)["value"]

  # Roles.

  def token_roles(self, ids: Sequence[int]) -> np.ndarray:
    roles = np.empty(len(ids), np.int8)
    in_first = True  # Inside the first number of a step (or before it).
    for k, t in enumerate(ids):
      t = int(t)
      if t in self._other_ids or not 0 <= t < self.tokenizer.vocab_size:
        roles[k] = base.OTHER
        in_first = t == self._step_sep_id
      elif self.tokenizer.is_digit(t):
        roles[k] = base.PLANNING if in_first else base.EXECUTION
      else:
        roles[k] = base.EXECUTION
        in_first = False
    return roles
