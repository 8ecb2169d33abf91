"""Tiny arithmetic expressions: a tree, a printer and a bounded parser.

Expressions are binary trees over non-negative integer leaves with the
operators + - * / (usual precedence, left associative; no unary minus).
`parse` reads untrusted text with a recursive-descent parser that bounds its
work (token count, digits per number, parenthesis depth) and never calls
eval; `evaluate` is exact (Fractions).
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction
import re
from typing import Union

PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}
_LEX = re.compile(r"\s*([0-9]+|[-+*/()])")


class ParseError(ValueError):
  """The text is not a well-formed expression within the parser's bounds."""


@dataclasses.dataclass(frozen=True)
class BinOp:
  op: str
  left: Expr
  right: Expr


Expr = Union[int, BinOp]
Path = tuple[int, ...]  # 0 = left child, 1 = right child.


def apply(op: str, a: Fraction | int, b: Fraction | int) -> Fraction:
  """`a op b` exactly; raises ZeroDivisionError for division by zero."""
  a, b = Fraction(a), Fraction(b)
  if op == "+":
    return a + b
  if op == "-":
    return a - b
  if op == "*":
    return a * b
  if op == "/":
    return a / b
  raise ValueError(f"unknown operator {op!r}")


def evaluate(e: Expr) -> Fraction:
  """Exact value of `e`; raises ZeroDivisionError."""
  if isinstance(e, BinOp):
    return apply(e.op, evaluate(e.left), evaluate(e.right))
  return Fraction(e)


def leaves(e: Expr) -> list[int]:
  """The integer leaves of `e`, left to right."""
  if isinstance(e, BinOp):
    return leaves(e.left) + leaves(e.right)
  return [e]


def to_text(e: Expr, full_parens: bool = False) -> str:
  """Canonical text of `e`.

  Args:
    e: the expression.
    full_parens: parenthesise every compound operand ("( 5 * 3 ) + 7");
      otherwise only where precedence/associativity needs it ("5 * 3 + 7").

  Returns:
    Space-separated text that `parse` maps back to `e`.
  """
  if not isinstance(e, BinOp):
    return str(e)

  def side(child: Expr, is_right: bool) -> str:
    text = to_text(child, full_parens)
    if not isinstance(child, BinOp):
      return text
    p_child, p_parent = PRECEDENCE[child.op], PRECEDENCE[e.op]
    if full_parens or p_child < p_parent or (is_right and p_child == p_parent):
      return f"( {text} )"
    return text

  return f"{side(e.left, False)} {e.op} {side(e.right, True)}"


def parse(text: str, max_tokens: int = 64, max_digits: int = 6,
          max_depth: int = 16) -> Expr:
  """Parses `text` into an expression tree; raises ParseError."""
  tokens = []
  pos = 0
  text = text.rstrip()
  while pos < len(text):
    m = _LEX.match(text, pos)
    if m is None:
      raise ParseError(f"unexpected character at offset {pos}")
    tokens.append(m.group(1))
    pos = m.end()
    if len(tokens) > max_tokens:
      raise ParseError(f"more than {max_tokens} tokens")
  parser = _Parser(tokens, max_digits, max_depth)
  e = parser.expression(0)
  if parser.i != len(tokens):
    raise ParseError(f"trailing tokens from {tokens[parser.i]!r}")
  return e


class _Parser:
  """Recursive descent over a token list (recursion only at parentheses)."""

  def __init__(self, tokens: list[str], max_digits: int, max_depth: int):
    self.tokens = tokens
    self.i = 0
    self.max_digits = max_digits
    self.max_depth = max_depth

  def _peek(self) -> str | None:
    return self.tokens[self.i] if self.i < len(self.tokens) else None

  def expression(self, depth: int) -> Expr:
    e = self.term(depth)
    while self._peek() in ("+", "-"):
      op = self.tokens[self.i]
      self.i += 1
      e = BinOp(op, e, self.term(depth))
    return e

  def term(self, depth: int) -> Expr:
    e = self.factor(depth)
    while self._peek() in ("*", "/"):
      op = self.tokens[self.i]
      self.i += 1
      e = BinOp(op, e, self.factor(depth))
    return e

  def factor(self, depth: int) -> Expr:
    tok = self._peek()
    if tok is None:
      raise ParseError("unexpected end of expression")
    self.i += 1
    if tok == "(":
      if depth >= self.max_depth:
        raise ParseError(f"parentheses nested deeper than {self.max_depth}")
      e = self.expression(depth + 1)
      if self._peek() != ")":
        raise ParseError("missing ')'")
      self.i += 1
      return e
    if tok[0] in "0123456789":
      if len(tok) > self.max_digits:
        raise ParseError(f"number with more than {self.max_digits} digits")
      return int(tok)
    raise ParseError(f"unexpected token {tok!r}")


def ready_paths(e: Expr) -> list[Path]:
  """Paths of the operations whose operands are both numbers, left to right."""
  if not isinstance(e, BinOp):
    return []
  if not isinstance(e.left, BinOp) and not isinstance(e.right, BinOp):
    return [()]
  return ([(0,) + p for p in ready_paths(e.left)] +
          [(1,) + p for p in ready_paths(e.right)])


def subexpr(e: Expr, path: Path) -> Expr:
  for step in path:
    assert isinstance(e, BinOp)
    e = e.right if step else e.left
  return e


def replace(e: Expr, path: Path, new: Expr) -> Expr:
  """`e` with the subexpression at `path` replaced by `new`."""
  if not path:
    return new
  assert isinstance(e, BinOp)
  if path[0]:
    return BinOp(e.op, e.left, replace(e.right, path[1:], new))
  return BinOp(e.op, replace(e.left, path[1:], new), e.right)
