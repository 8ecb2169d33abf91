"""Strategy diversity (HICRA's planning signal): strategy types per response, estimated per prompt.

HICRA's Phase-2 signal is the diversity of *strategy types* across sampled responses: the Shannon
entropy of how often each strategic-gram group is used. `semantic_entropy/planning`
(rldyn/metrics/entropy.py) names a structural planning unit by its token ids, operands included, and
pools every response of the step, so on countdown it mostly counts distinct numbers and grows with the
number of prompts and the response length. The metrics here abstract each planning unit to its
strategy type and estimate per prompt, over its group of G responses, averaged over prompts:

    strategy/entropy                  mean over prompts of the Chao–Shen entropy of the group's
                                      strategy-type uses (below)
    strategy/distinct_per_prompt      mean over prompts of the number of distinct strategies (a
                                      response's strategy = its sequence of strategy types) in the group
    strategy/distinct_correct_per_prompt  mean over prompts of the number of distinct CORRECT solutions
                                      (0 for an unsolved prompt; ≥ 1 exactly where pass@G counts it)
    strategy/first_move_entropy       mean over prompts of the entropy of the group's first moves
    strategy/units_per_response       mean number of strategy-type uses per response (context)

Strategy types (`response_strategies`):
  text recipe (a tagger with a strategic-gram `matcher`: the lexicon tagger): each strategic-gram
      occurrence (leftmost-longest, non-overlapping) is one use of its lexicon group's type: the group
      id, or, for a one-n-gram group containing a number (exact-identity groups mined from synthetic
      traces, e.g. `- 4 =`), the n-gram with every number replaced by `#` (`- # =`), so operands do
      not make types; first move = the first type used; a correct solution is the sequence of types.
  countdown: `try <op>` per move (which operation: + - * /, `?` when the choice is malformed; the
      operands are dropped), `back` per backtrack (a run of `back`s, one per level, is one event),
      `no`, `goal`, `fail`; first move = the first `try`'s move with its operands (`3 * 5`; + and *
      operands sorted), which names a choice since every response of a group starts from the same
      numbers; a correct solution is the answer expression with + and * chains flattened and sorted
      (`(3 + 5) + 7` and `7 + (5 + 3)` are one solution).
  arithmetic: each step's operation (`+ - *` of the subexpression it reduces); first move = the first
      step's `a op b`; a correct solution is the sequence of step operations (the answer is unique).
  text tasks without ground-truth roles (textmath) under another tagger (spans): the text recipe on
      the task's default lexicon.
  other tasks: each maximal run of planning tokens (the task's ground truth) with digits replaced by
      `#`.
  Strategy types describe the responses, not the credit mask: a placebo tagger is measured with the
  types of the tagger it copies (`placebo_of`).

Why this estimator is invariant to batch size and length:
  * batch size: every statistic is a mean over prompts of a per-group quantity, so its expectation does
    not depend on the number of prompts P (only its variance does). Pooling prompts, as
    `semantic_entropy/planning` does, measures the entropy of a mixture over prompts, which grows as
    more prompts add their own operands.
  * length: the plug-in entropy of N uses is biased low by about (K − 1)/(2N) (K types, more when
    types are rare), so a run whose responses get longer would look more diverse with no change in
    strategy. The Chao–Shen estimator (Chao & Shen 2003) corrects for unseen types: with f1 the types
    used once, coverage C = 1 − f1/N (f1 = N − 1 when every use is a singleton), p̂_g = C·n_g/N, and
    H_CS = −Σ_g p̂_g log p̂_g / (1 − (1 − p̂_g)^N). One type gives 0. On the stationary generators of
    the tests its bias stays within 0.03 nats from N = 8 to N = 240 uses, where the plug-in is off by
    0.5 → 0.02 and Miller–Madow (+ (K_obs − 1)/(2N)) by 0.28 → 0.003: it is the estimator whose value
    depends least on N.
  tests/test_strategy.py checks both on the countdown trace generator (4/16/64 prompts × 8; short and
  long responses) and on stationary generators (countdown events and strategic-gram text) with a
  known per-prompt distribution.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
import math
import re
from typing import Any, NamedTuple

import numpy as np

from rldyn.roles.ids import PLANNING
from rldyn.tasks import expr as expr_lib

KEYS = ("strategy/entropy", "strategy/distinct_per_prompt", "strategy/distinct_correct_per_prompt",
        "strategy/first_move_entropy", "strategy/units_per_response")

_OPS = ("+", "-", "*", "/")
_NUMBER = re.compile(r"\d+")
_CHOICE_END = frozenset(("=", "left", "try", "back", "goal", "no", "fail", "answer", "target", ":",
                         ";", "eval", "then", "<pad>", "<bos>", "<eos>"))


class ResponseStrategy(NamedTuple):
  """One response's strategy: its strategy-type uses, first move and solution key."""
  units: tuple[str, ...]  # strategy types in order of use
  first: str | None  # the first move (None: the response makes none)
  solution: Hashable  # what makes two correct responses the same solution


# Entropies.


def plugin_entropy(counts: Sequence[int]) -> float:
  """−Σ p log p (nats) of the counts; 0.0 for no counts."""
  c = np.asarray([x for x in counts if x > 0], np.float64)
  if c.size == 0:
    return 0.0
  p = c / c.sum()
  return float(-(p * np.log(p)).sum())


def chao_shen_entropy(counts: Sequence[int]) -> float:
  """Coverage-adjusted (Chao–Shen) entropy of the counts, nats (module docstring); 0.0 for none."""
  c = np.asarray([x for x in counts if x > 0], np.float64)
  if c.size == 0:
    return 0.0
  n = c.sum()
  f1 = float((c == 1).sum())
  if f1 == n:
    f1 = n - 1  # every use a singleton: coverage would be 0
  p = (1.0 - f1 / n) * c / n
  return float(-(p * np.log(p) / (1.0 - (1.0 - p) ** n)).sum())


# Strategy types per task.


def _number(tokens: Sequence[str]) -> str:
  return "".join(tokens).lstrip("0") or "0"


def _binary(choice: Sequence[str]) -> tuple[str, str, str] | None:
  """(a, op, b) of a well-formed `a op b` token list, or None."""
  ops = [k for k, t in enumerate(choice) if t in _OPS]
  if len(ops) != 1:
    return None
  k = ops[0]
  a, b = choice[:k], choice[k + 1:]
  if not a or not b or not all(t.isdigit() for t in a + b):
    return None
  return _number(a), choice[k], _number(b)


def _move_key(a: str, op: str, b: str) -> str:
  if op in ("+", "*") and (len(b), b) < (len(a), a):
    a, b = b, a
  return f"{a} {op} {b}"


def _canonical_expr(e: expr_lib.Expr) -> str:
  """Text of `e` with + and * chains flattened and their terms sorted (commutativity, associativity)."""
  if not isinstance(e, expr_lib.BinOp):
    return str(e)
  if e.op in ("+", "*"):
    terms, stack = [], [e]
    while stack:
      x = stack.pop()
      if isinstance(x, expr_lib.BinOp) and x.op == e.op:
        stack += [x.left, x.right]
      else:
        terms.append(_canonical_expr(x))
    return "(" + f" {e.op} ".join(sorted(terms)) + ")"
  return f"({_canonical_expr(e.left)} {e.op} {_canonical_expr(e.right)})"


def countdown_solution(text: str) -> str | None:
  """The answer expression after the last `answer`, canonical (see the module docstring), or None."""
  k = text.rfind("answer")
  if k < 0:
    return None
  try:
    return _canonical_expr(expr_lib.parse(text[k + len("answer"):]))
  except expr_lib.ParseError:
    return None


def countdown_strategy(tokens: Sequence[str], text: str, solve: bool = True) -> ResponseStrategy:
  """Strategy types of a countdown response given as token strings (see the module docstring); the
  solution is parsed only when `solve` (it matters only for correct responses)."""
  units: list[str] = []
  first = None
  i, n = 0, len(tokens)
  while i < n:
    t = tokens[i]
    i += 1
    if t == "try":
      j = i
      while j < n and tokens[j] not in _CHOICE_END:
        j += 1
      move = _binary(tokens[i:j])
      units.append("try " + (move[1] if move else "?"))
      if first is None:
        first = _move_key(*move) if move else "try ?"
      i = j
    elif t == "back":
      if not units or units[-1] != "back":
        units.append("back")
    elif t in ("no", "goal", "fail"):
      units.append(t)
      if first is None and t == "fail":
        first = t
  return ResponseStrategy(tuple(units), first, countdown_solution(text) if solve else None)


def arithmetic_strategy(tokens: Sequence[str]) -> ResponseStrategy:
  """Strategy types of an arithmetic scratchpad: the operation each step reduces."""
  units: list[str] = []
  first = None
  steps, cur = [], []
  for t in tokens:
    if t in (";", "answer", "<eos>"):
      steps.append(cur)
      cur = []
      if t != ";":
        break
    else:
      cur.append(t)
  else:
    steps.append(cur)
  for step in steps:
    if "=" not in step:
      continue
    move = _binary(step[:step.index("=")])
    units.append(move[1] if move else "?")
    if first is None:
      first = _move_key(*move) if move else "?"
  return ResponseStrategy(tuple(units), first, tuple(units))


def generic_strategy(tokens: Sequence[str], roles: Sequence[int]) -> ResponseStrategy:
  """Maximal runs of planning tokens, digits replaced by `#` (tasks without their own abstraction)."""
  units, cur = [], []
  for t, r in zip(tokens, roles):
    if r == PLANNING:
      cur.append("#" if t.isdigit() else t)
    elif cur:
      units.append(" ".join(cur))
      cur = []
  if cur:
    units.append(" ".join(cur))
  return ResponseStrategy(tuple(units), units[0] if units else None, tuple(units))


def group_types(lexicon: Any) -> dict[str, str]:
  """Lexicon group id -> strategy type: the id, or for a group of one n-gram that contains a number
  (exact-identity grouping), that n-gram with each number replaced by `#` (operands are not
  strategies). Groups by meaning keep their ids."""
  return {g.id: _NUMBER.sub("#", g.ngrams[0]) if len(g.ngrams) == 1 and _NUMBER.search(g.ngrams[0])
          else g.id for g in lexicon.groups}


def response_strategies(task: Any, tagger: Any, ids: Sequence[Sequence[int]], texts: Sequence[str],
                        roles_BN: np.ndarray | None = None,
                        correct_B: Sequence[bool] | None = None) -> list[ResponseStrategy]:
  """Each response's strategy (module docstring): the text recipe for a tagger with a `matcher` (a
  placebo counts as the tagger it copies) or a task without ground-truth roles, else the task's own
  abstraction (countdown, arithmetic) or its planning runs without digits. With `correct_B`, countdown
  solutions are parsed for the correct responses only."""
  if len(texts) != len(ids) or (correct_B is not None and len(correct_B) != len(ids)):
    raise ValueError(f"{len(ids)} responses, {len(texts)} texts and "
                     f"{'-' if correct_B is None else len(correct_B)} correctness flags: need one each")
  # Ground-truth roles are given when the tagger is None (replay) or the structural tagger.
  truth_given = roles_BN is not None and (tagger is None or getattr(tagger, "task", None) is task)
  while hasattr(tagger, "reference"):  # a placebo: the types of the tagger it copies
    tagger = tagger.reference
  matcher = getattr(tagger, "matcher", None)
  if matcher is None and not getattr(task, "has_role_truth", True):
    matcher = _default_matcher(task)
  if matcher is not None:  # strategic-gram groups
    types = _cached_group_types(matcher)
    out = []
    for u in matcher.uses_batch(list(texts)):
      u = tuple(types[g] for g in u)
      out.append(ResponseStrategy(u, u[0] if u else None, u))
    return out
  tok = task.tokenizer
  size = tok.vocab_size

  def strings(x):
    return [tok.id_to_token(t) if 0 <= t < size else "<oov>" for t in map(int, x)]

  if task.name == "countdown":
    solve = [True] * len(ids) if correct_B is None else [bool(c) for c in correct_B]
    return [countdown_strategy(strings(x), text, ok) for x, text, ok in zip(ids, texts, solve)]
  if task.name == "arithmetic":
    return [arithmetic_strategy(strings(x)) for x in ids]
  return [generic_strategy(strings(x), roles_BN[i, :len(x)] if truth_given else task.token_roles(x))
          for i, x in enumerate(ids)]


def _default_matcher(task: Any) -> Any:
  """The Matcher of the task's default lexicon, built once per task."""
  matcher = getattr(task, "_strategy_matcher", None)
  if matcher is None:
    from rldyn.roles import lexicon as lexicon_lib  # pylint: disable=g-import-not-at-top
    from rldyn.roles import matcher as matcher_lib  # pylint: disable=g-import-not-at-top
    matcher = matcher_lib.Matcher(lexicon_lib.load_lexicon(lexicon_lib.default_lexicon_name(task)))
    task._strategy_matcher = matcher  # pylint: disable=protected-access
  return matcher


def _cached_group_types(matcher: Any) -> dict[str, str]:
  types = getattr(matcher, "_strategy_types", None)
  if types is None:
    types = group_types(matcher.lexicon)
    matcher._strategy_types = types  # pylint: disable=protected-access
  return types


# The metrics.


def strategy_metrics(strategies: Sequence[ResponseStrategy], correct_B: Sequence[bool],
                     group_size: int) -> dict[str, float]:
  """The `strategy/*` metrics (module docstring) of B = P·G responses, rows grouped by prompt.

  A prompt whose group uses no strategy type is left out of `strategy/entropy`, one whose group has
  no first move out of `strategy/first_move_entropy`; a mean over no prompts is NaN (JSON null).
  """
  b = len(strategies)
  if group_size < 1 or b % group_size:
    raise ValueError(f"{b} responses do not split into groups of {group_size}")
  if len(correct_B) != b:
    raise ValueError(f"{len(correct_B)} correctness flags for {b} responses")
  ent, distinct, distinct_ok, first_ent = [], [], [], []
  for p in range(0, b, group_size):
    group = strategies[p:p + group_size]
    ok = correct_B[p:p + group_size]
    counts = Counter(u for s in group for u in s.units)
    if counts:
      ent.append(chao_shen_entropy(list(counts.values())))
    distinct.append(len({s.units for s in group}))
    distinct_ok.append(len({s.solution for s, c in zip(group, ok) if c}))
    firsts = Counter(s.first for s in group if s.first is not None)
    if firsts:
      first_ent.append(plugin_entropy(list(firsts.values())))

  def mean(x):
    return float(np.mean(x)) if x else math.nan

  return {
      "strategy/entropy": mean(ent),
      "strategy/distinct_per_prompt": mean(distinct),
      "strategy/distinct_correct_per_prompt": mean(distinct_ok),
      "strategy/first_move_entropy": mean(first_ent),
      "strategy/units_per_response": mean([len(s.units) for s in strategies]),
  }


def step_strategy_metrics(task: Any, tagger: Any, ids: Sequence[Sequence[int]], texts: Sequence[str],
                          roles_BN: np.ndarray | None, correct_B: Sequence[bool],
                          group_size: int) -> dict[str, float]:
  """The `strategy/*` metrics of one step's (or one replay probe's) responses.

  Args:
    task: the task (its name picks the strategy abstraction; its tokenizer decodes ids).
    tagger: the role tagger; one with a `matcher` (lexicon) switches to strategic-gram groups.
    ids: each response's token ids (length-trimmed), rows grouped by prompt (row i: prompt i // G).
    texts: the decoded responses.
    roles_BN: the tagger's token roles; read only when they are the ground truth (tagger None or
      structural) by tasks without their own abstraction, which otherwise recompute the truth.
    correct_B: the verifier's verdict per response.
    group_size: G, responses per prompt.
  """
  correct_B = np.asarray(correct_B, bool)
  return strategy_metrics(response_strategies(task, tagger, ids, texts, roles_BN, correct_B), correct_B,
                          group_size)
