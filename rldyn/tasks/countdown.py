"""Countdown with Stream-of-Search traces: the planning-heavy flagship task.

Problem: reach the target from the given numbers with + - * /, using EVERY
number EXACTLY ONCE. Search moves combine two numbers into one; a move's
result must be a positive integer (a - b only when a > b, a / b only when
exact). Problems are built from a random expression over all the numbers, so
every problem is solvable. Prompt: the numbers sorted ascending, then the
target: "3 , 5 , 7 target 22 :".

Response language (one search trace, then an answer or `fail`):

    try A op B = R left R , C ...   combine A and B (not the last move)
    try A op B = R goal | no        the last move: R is the target or not
    try A op B = R target T goal | no
                                    the same with `echo_target`: the last move
                                    restates the target T before judging it
    back                            return one level up (one `back` per level)
    answer EXPR                     after `goal`: the solution, every compound
                                    operand in parentheses
    fail                            the move budget ran out, or no move is left

A `left` list puts the new result first, then the untouched numbers in their
order. The trace searches depth first; the order of moves at a state comes
from a strategy drawn per trace (`strategy_mix`): `dfs` (pairs in list order,
operators + - * /), `random` (shuffled) or `greedy` (result closest to the
target first; at the last move it stops after the first miss, as the later
moves land farther). At `error_rate`, a written result is off by
1..max_error; the search continues from the wrong value (so `goal` can be
claimed falsely and a true solution can be missed). `budget` caps the number
of `try`s. Default config: ~72% of reference traces end in a correct answer,
~81 tokens on average (99th percentile ~155).

Verifier: the text after the last `answer` must parse (bounded
recursive-descent parser, Fractions, never eval) as an expression whose
numbers are exactly the given multiset and whose value is the target. It
checks the arithmetic, not the search rules (non-integer intermediates pass).

Token roles (`token_roles`, a state machine over ids; any sequence works):
  planning   the control words `try back goal no fail`, and the CHOICE tokens:
             everything after `try` up to `=` (the operands and operator).
  execution  `=`, `left`, and every other content token (digits, operators,
             parentheses, commas): results, copied lists, the answer expression.
  other      `answer`, prompt/format tokens (`target : ; eval then`), pad, bos,
             eos and out-of-vocabulary ids.
A choice ends at `=`, `left`, or any control/format word.

A real example (default config; `rng = np.random.default_rng(11)`, then
`problem = task.sample_problem(rng)`, `task.reference_trace(problem, rng)`).
Under each token its role: P planning, E execution, O other. The strategy is
`greedy`; `16 - 3 = 11` is an injected error, survived by trying the other 3:

    3 , 3 , 16 target 10 :
    try 3 * 3 = 9 left 9 , 16 try 16 - 9 = 7 no back try 16 - 3 = 11 left 11
    P   P P P E E E    E E EE P   PP P P E E P  P    P   PP P P E EE E    EE
    , 3 try 11 - 3 = 8 no back try 16 - 3 = 13 left 13 , 3 try 13 - 3 = 10
    E E P   PP P P E E P  P    P   PP P P E EE E    EE E E P   PP P P E EE
    goal answer ( 16 - 3 ) - 3
    P    O      E EE E E E E E
"""
# tests/test_tasks.py::test_countdown_docstring_example regenerates the example.

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import json
from typing import Any, NamedTuple

import numpy as np

from rldyn.tasks import base
from rldyn.tasks import expr as expr_lib

STRATEGIES = ("dfs", "random", "greedy")
_CONTROL = ("try", "back", "goal", "no", "fail")
_FORMAT = ("answer", "target", ":", ";", "eval", "then")


@dataclasses.dataclass(frozen=True)
class CountdownConfig:
  """Countdown problem and trace knobs."""
  num_count: int = 3  # Numbers per problem (2-5).
  max_number: int = 20  # Numbers are drawn uniformly from 1..max_number.
  max_target: int = 100  # Targets lie in 1..max_target.
  budget: int = 12  # Most `try`s in a reference trace before it says `fail`.
  # A share `long_budget_rate` of reference traces (drawn per trace) search up to `long_budget` tries
  # instead (0 / 0.0 = off; the trace's random stream is then what it was without these knobs).
  long_budget: int = 0
  long_budget_rate: float = 0.0
  error_rate: float = 0.1  # P(a written result is wrong); the error propagates.
  max_error: int = 3  # A wrong result is off by 1..max_error (stays positive).
  # (strategy, weight) pairs, or a mapping; a strategy is drawn per trace.
  strategy_mix: Any = (("greedy", 0.5), ("dfs", 0.25), ("random", 0.25))
  # The last move restates the target before judging: `try 13 - 3 = 10 target 10 goal`.
  echo_target: bool = False

  def __post_init__(self):
    if not 2 <= self.num_count <= 5:
      raise ValueError(f"num_count must be in 2..5, got {self.num_count}")
    if self.max_number < 1 or self.max_target < 1:
      raise ValueError("max_number and max_target must be >= 1")
    if self.budget < 1:
      raise ValueError(f"budget must be >= 1, got {self.budget}")
    if not 0.0 <= self.long_budget_rate <= 1.0:
      raise ValueError(f"long_budget_rate must be in [0, 1], got {self.long_budget_rate}")
    if self.long_budget_rate > 0 and self.long_budget <= self.budget:
      raise ValueError(f"long_budget must exceed budget ({self.budget}) when long_budget_rate > 0, "
                       f"got {self.long_budget} (long_budget_rate=0 gives every trace one budget)")
    if not 0.0 <= self.error_rate <= 1.0:
      raise ValueError(f"error_rate must be in [0, 1], got {self.error_rate}")
    if self.max_error < 1:
      raise ValueError(f"max_error must be >= 1, got {self.max_error}")
    object.__setattr__(self, "strategy_mix", base.normalize_mix(
        self.strategy_mix, STRATEGIES, "countdown strategy"))


class _Move(NamedTuple):
  i: int  # Index of the first operand in the state.
  j: int  # Index of the second operand.
  op: str
  result: int


def _moves(values: Sequence[int]) -> list[_Move]:
  """Legal moves in canonical order: pairs in list order, then + - * /."""
  out = []
  for i in range(len(values)):
    for j in range(i + 1, len(values)):
      a, b = values[i], values[j]
      big, small = (i, j) if a >= b else (j, i)
      out.append(_Move(i, j, "+", a + b))
      if a != b:
        out.append(_Move(big, small, "-", abs(a - b)))
      out.append(_Move(i, j, "*", a * b))
      if values[big] % values[small] == 0:
        out.append(_Move(big, small, "/", values[big] // values[small]))
  return out


def _numbers_text(values: Sequence[int]) -> str:
  return " , ".join(str(v) for v in values)


class CountdownTask(base.Task):
  """Countdown with search traces; see the module docstring."""

  name = "countdown"
  config_cls = CountdownConfig
  problem_keys = ("num_count", "max_number", "max_target")
  decision_words = ("goal", "no")  # after a final move: did it reach the target?
  answer_marker = "answer"

  def __init__(self, config: CountdownConfig | None = None, **kwargs):
    super().__init__(config, **kwargs)
    tok = self.tokenizer
    self._try_id = tok.token_to_id("try")
    self._eq_id = tok.token_to_id("=")
    self._left_id = tok.token_to_id("left")
    self._control_ids = frozenset(tok.token_to_id(t) for t in _CONTROL)
    self._other_ids = frozenset(
        [tok.token_to_id(t) for t in _FORMAT] + [tok.pad_id, tok.bos_id,
                                                 tok.eos_id])

  # Problems.

  def _generate_problem(self, rng: np.random.Generator) -> base.Problem:
    c = self.config
    for _ in range(base.MAX_REJECTIONS):
      numbers = [int(n) for n in rng.integers(1, c.max_number + 1,
                                              c.num_count)]
      pool: list[tuple[int, expr_lib.Expr]] = [(n, n) for n in numbers]
      while len(pool) > 1:
        moves = _moves([v for v, _ in pool])
        m = moves[rng.integers(len(moves))]
        new = (m.result, expr_lib.BinOp(m.op, pool[m.i][1], pool[m.j][1]))
        pool = [new] + [p for k, p in enumerate(pool) if k not in (m.i, m.j)]
      target, solution = pool[0]
      if target <= c.max_target:
        return self.make_problem(numbers, target,
                                 expr_lib.to_text(solution, full_parens=True))
    raise ValueError(f"{c} admits (almost) no target <= max_target")

  def make_problem(self, numbers: Sequence[int], target: int,
                   answer: str = "") -> base.Problem:
    """The problem for `numbers` and `target` (a known solution optional)."""
    numbers = sorted(int(n) for n in numbers)
    prompt = f"{_numbers_text(numbers)} target {int(target)} :"
    return base.Problem(
        uid=base.make_uid(self.name, prompt), prompt=prompt, answer=answer,
        data=json.dumps({"numbers": numbers, "target": int(target)}))

  # Traces.

  def reference_trace(self, problem: base.Problem,
                      rng: np.random.Generator) -> str:
    c = self.config
    data = json.loads(problem.data)
    strategy = base.choose(rng, c.strategy_mix)
    budget = c.budget
    if c.long_budget_rate > 0 and rng.random() < c.long_budget_rate:
      budget = c.long_budget
    search = _Search(c, data["target"], strategy, rng, budget)
    numbers = data["numbers"]
    solution = search.run([(n, n) for n in numbers])
    if solution is None:
      search.out.append("fail")
    else:
      search.out.append(
          "answer " + expr_lib.to_text(solution, full_parens=True))
    return " ".join(search.out)

  # Verification.

  def _parse_answer(self, response: str) -> expr_lib.Expr | None:
    k = response.rfind("answer")
    if k < 0:
      return None
    try:
      return expr_lib.parse(response[k + len("answer"):])
    except expr_lib.ParseError:
      return None

  def extract_answer(self, response: str) -> str | None:
    e = self._parse_answer(response)
    return None if e is None else expr_lib.to_text(e, full_parens=True)

  def verify(self, problem: base.Problem, response: str) -> bool:
    e = self._parse_answer(response)
    if e is None:
      return False
    data = json.loads(problem.data)
    if sorted(expr_lib.leaves(e)) != sorted(data["numbers"]):
      return False
    try:
      return expr_lib.evaluate(e) == data["target"]
    except ZeroDivisionError:
      return False

  # Roles.

  def token_roles(self, ids: Sequence[int]) -> np.ndarray:
    roles = np.empty(len(ids), np.int8)
    in_choice = False
    for k, t in enumerate(ids):
      t = int(t)
      if t in self._control_ids:
        roles[k] = base.PLANNING
        in_choice = t == self._try_id
      elif t in self._other_ids or not 0 <= t < self.tokenizer.vocab_size:
        roles[k] = base.OTHER
        in_choice = False
      elif t in (self._eq_id, self._left_id):
        roles[k] = base.EXECUTION
        in_choice = False
      else:
        roles[k] = base.PLANNING if in_choice else base.EXECUTION
    return roles


class _Search:
  """One depth-first search writing a trace; `out` collects the lines."""

  def __init__(self, config: CountdownConfig, target: int, strategy: str,
               rng: np.random.Generator, budget: int):
    self.config = config
    self.target = target
    self.strategy = strategy
    self.budget = budget
    self.rng = rng
    self.tries = 0
    self.pending_backs = 0  # Levels popped since the last `try`.
    self.out: list[str] = []

  def _order(self, moves: list[_Move]) -> list[_Move]:
    if self.strategy == "random":
      return [moves[k] for k in self.rng.permutation(len(moves))]
    if self.strategy == "greedy":
      return sorted(moves, key=lambda m: abs(m.result - self.target))
    return moves

  def _written(self, result: int) -> int:
    """The result as written: wrong (off by 1..max_error) at error_rate."""
    c = self.config
    if self.rng.random() >= c.error_rate:
      return result
    delta = int(self.rng.integers(1, c.max_error + 1))
    if self.rng.random() < 0.5 and result - delta >= 1:
      return result - delta
    return result + delta

  def run(self, state: list[tuple[int, expr_lib.Expr]]) -> expr_lib.Expr | None:
    """Searches below `state`; the solution expression, or None."""
    moves = self._order(_moves([v for v, _ in state]))
    for m in moves:
      if self.tries >= self.budget:
        return None
      self.tries += 1
      self.out.extend(["back"] * self.pending_backs)
      self.pending_backs = 0
      a, b = state[m.i], state[m.j]
      written = self._written(m.result)
      self.out.append(f"try {a[0]} {m.op} {b[0]} = {written}")
      child = [(written, expr_lib.BinOp(m.op, a[1], b[1]))] + [
          s for n, s in enumerate(state) if n not in (m.i, m.j)]
      if len(child) == 1:
        if self.config.echo_target:
          self.out.append(f"target {self.target}")
        if written == self.target:
          self.out.append("goal")
          return child[0][1]
        self.out.append("no")
        if self.strategy == "greedy":
          return None  # Later moves land farther from the target.
        continue
      self.out.append(f"left {_numbers_text([v for v, _ in child])}")
      solution = self.run(child)
      if solution is not None:
        return solution
      self.pending_backs += 1
    return None
