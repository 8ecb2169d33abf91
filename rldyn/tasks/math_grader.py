"""Math answer verification: final-answer extraction and equivalence.

    verify_math(response, reference)  # True iff the final answers agree.

The response's final answer is the last `\\boxed{...}` (or `\\fbox`), else the
rest of the line after the last `####`, else what follows the last "answer
is" / "answer:" (its first `$...$` if it has one), else the whole response
when that is a single short line. The reference may be a bare answer, a
`\\boxed{}` one or a worked GSM8K solution ending in `#### <answer>`.

Equivalence, cheapest first, on normalised LaTeX (spacing commands,
`\\left`/`\\right`, `\\dfrac`, `$`, `%`, degrees, trailing units in `\\text{}`
and a leading `x =` dropped):
  1. equal strings;
  2. exact rationals in pure Python (`Fraction`): integers, `1,000`, decimals,
     `.5`, `1e5`, `a/b`, `\\frac{a}{b}`, `\\frac12`; this covers GSM8K fully
     and decides every pair where both sides are numbers (so `0.333` is not
     `\\frac{1}{3}`);
  3. text answers (`\\text{Friday}`, `(C)`, `CBAD`): case-insensitive text;
  4. tuples, intervals, sets, comma lists, unions and matrices item by item
     (tuples and intervals in order with the same brackets; sets and lists
     in any order);
  5. everything else, symbolically with math-verify (LaTeX through its ANTLR
     grammar, then sympy) in a persistent worker process.

Model output is hostile, so every call is bounded. Responses longer than
`MAX_RESPONSE_CHARS`, answers longer than `MAX_ANSWER_CHARS`, number literals
with more than `MAX_DIGITS` digits and nesting deeper than `MAX_DEPTH` score
False before any parsing; extraction is a linear scan. The symbolic step runs
only on answers without huge or nested exponents or big factorials, and under
a hard wall-clock limit (`timeout_s`, default `TIMEOUT_S`) that works from any
thread: the worker is killed when it is late (and restarted on the next
call), and the pair scores False. No text is ever evaluated as code.

math-verify is needed only for step 5 (`pip install 'math-verify[antlr4_13_2]'`);
without it such a pair raises ImportError naming the package.
"""

from __future__ import annotations

import atexit
import fractions
import importlib.util
import json
import os
import re
import select
import subprocess
import sys
import threading
import time

MAX_RESPONSE_CHARS = 1 << 20  # Longer responses score False unread.
MAX_ANSWER_CHARS = 1_000  # Longer final answers score False (MATH's longest: 159).
MAX_DIGITS = 400  # Longer number literals score False (GSM8K's longest: 9).
MAX_DEPTH = 24  # Deeper bracket nesting scores False.
MAX_ITEMS = 64  # Tuples, sets, lists, matrices with more items score False.
# Sent to sympy only within these (MATH's references reach depth 3, parens 2;
# latex2sympy's parser takes ~0.2 s more per nested parenthesis).
MAX_SYMBOLIC_DEPTH = 8  # Bracket nesting of any kind.
MAX_SYMBOLIC_PARENS = 4  # Parenthesis nesting.
MAX_EXPONENT_DIGITS = 4  # `^{12345}` or longer goes to no symbolic engine.
MAX_FACTORIAL_DIGITS = 3  # `1000!` or larger goes to no symbolic engine.
MAX_SCIENTIFIC_EXPONENT = 400  # |k| in `1e<k>` / `\times10^{k}`.
MAX_SHORT_RESPONSE_CHARS = 64  # An unmarked response this short is the answer.
TIMEOUT_S = 2.0  # Hard wall-clock limit on one call's symbolic work.
STARTUP_TIMEOUT_S = 120.0  # For the worker's imports (not part of a call).
_WORKER_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            "_symbolic_worker.py")


class _TooLarge(Exception):
  """The input exceeds a size cap; the pair scores False."""


# ---------------------------------------------------------------------------
# Extraction.


def extract_answer(text: str) -> str | None:
  """The final answer in `text` (see the module docstring), or None."""
  if len(text) > MAX_RESPONSE_CHARS:
    return None
  for extract in (_last_boxed, _after_hashes, _after_answer_phrase):
    answer = extract(text)
    if answer is not None:
      answer = answer.strip()
      return answer if 0 < len(answer) <= MAX_ANSWER_CHARS else None
  text = text.strip()
  if 0 < len(text) <= MAX_SHORT_RESPONSE_CHARS and "\n" not in text:
    return text
  return None


def _last_boxed(text: str) -> str | None:
  """The argument of the last \\boxed / \\fbox; None if there is none, ""
  if it is malformed (unclosed, too long)."""
  boxed, fbox = text.rfind("\\boxed"), text.rfind("\\fbox")
  start = max(boxed, fbox)
  if start < 0:
    return None
  i = start + (len("\\boxed") if start == boxed else len("\\fbox"))
  if i < len(text) and text[i] == "{":
    return _group(text, i) or ""
  if i < len(text) and text[i] == " ":  # `\boxed 5`: one token.
    token = text[i:i + MAX_ANSWER_CHARS + 2].split(maxsplit=1)
    return token[0].rstrip("$.") if token else ""
  return ""  # `\boxedx` or a box cut off at the end.


def _group(text: str, i: int) -> str | None:
  """The contents of the brace group opening at text[i] (bounded scan)."""
  depth, j, end = 0, i, min(len(text), i + MAX_ANSWER_CHARS + 2)
  while j < end:
    c = text[j]
    if c == "\\":
      j += 2  # An escaped character (`\{`) opens nothing.
      continue
    if c == "{":
      depth += 1
    elif c == "}":
      depth -= 1
      if depth == 0:
        return text[i + 1:j]
    j += 1
  return None  # Unclosed, or longer than an answer may be.


def _line_after(text: str, i: int) -> str | None:
  end = text.find("\n", i, i + MAX_ANSWER_CHARS + 1)
  if end < 0:
    end = len(text)
  return text[i:end] if end - i <= MAX_ANSWER_CHARS else None


def _after_hashes(text: str) -> str | None:
  i = text.rfind("####")
  return None if i < 0 else (_line_after(text, i + 4) or "")


_ANSWER_PHRASES = tuple(p for w in ("answer is", "answer:")
                        for p in (w, w.capitalize(), w.upper()))
_MATH_SPAN = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]")


def _after_answer_phrase(text: str) -> str | None:
  i, phrase = max((text.rfind(p), p) for p in _ANSWER_PHRASES)
  if i < 0:
    return None
  line = _line_after(text, i + len(phrase))
  if line is None:
    return ""
  line = line.strip().lstrip(":").strip().strip("*").strip()
  m = _MATH_SPAN.search(line)
  if m:
    return next(g for g in m.groups() if g is not None)
  line = line.split(". ", 1)[0]
  return line[:-1] if line.endswith(".") else line


# ---------------------------------------------------------------------------
# Normalisation.

# Dropped spacing and decoration; a row break `\\` is matched first and kept.
_DROP = re.compile(
    r"(\\\\)|\\(?:left|right|displaystyle|textstyle)(?![a-zA-Z])|"
    r"\\[!,;: ]|\\q?quad(?![a-zA-Z])|\^\s*\{?\s*\\circ\s*\}?|\\circ(?![a-zA-Z])|"
    r"\\%|%|\\\$|\$|~")
_APPROX = re.compile(r"\\approx(?![a-zA-Z])")
_TEXT_CMD = r"\\(?:text|textbf|textit|textrm|textnormal|mathrm|mathbf|mbox)"
_TEXT_CONJ = re.compile(
    r",?\s*" + _TEXT_CMD + r"\{\s*,?\s*(?:and|or)\s*\}|,?\s+(?:and|or)\s+")
_TRAILING_UNIT = re.compile(
    r"(?<=\S)\s*" + _TEXT_CMD + r"\{\s*[a-zA-Z][a-zA-Z .]*\}(?:\^\{?[23]\}?)?$")
_TEXT = re.compile(_TEXT_CMD + r"\{([^{}]*)\}")
_SHORT_ARG = r"(\\[a-zA-Z]+(?![a-zA-Z])|[0-9a-zA-Z])"
_FRAC_SHORT = re.compile(r"\\frac\s*" + _SHORT_ARG + r"\s*" + _SHORT_ARG)
_SQRT_SHORT = re.compile(r"\\sqrt\s*" + _SHORT_ARG)
_CMD_SPACE = re.compile(r"(\\[a-zA-Z]+)\s+(?=\{)")
_SPACE = re.compile(r"(\\[a-zA-Z]+)\s+(?=[a-zA-Z])|\s+")
_LHS = re.compile(r"^(?:[a-zA-Z]|\\[a-zA-Z]+)(?:_\{\w+\}|_\w)?=(?=[^=]+$)")
_WORD = re.compile(r"\(?[a-zA-Z]+\)?")
_BASE = re.compile(r"(-?[0-9A-Za-z]+)_\{?([0-9]+)\}?")  # `1011_2`, `A5_{12}`.


def normalize(answer: str) -> str:
  """A canonical spelling of a LaTeX answer (equal strings are equal answers)."""
  s = answer.strip()
  s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
  s = s.replace("{,}", ",")
  s = _CMD_SPACE.sub(r"\1", s)  # `\text {x}` is `\text{x}`.
  s = _FRAC_SHORT.sub(r"\\frac{\1}{\2}", s)  # `\frac\pi2` is `\frac{\pi}{2}`.
  s = _SQRT_SHORT.sub(r"\\sqrt{\1}", s)
  s = _TEXT_CONJ.sub(",", s)
  s = _TRAILING_UNIT.sub("", s)
  s = _DROP.sub(r"\1", s)
  s = _APPROX.sub("=", s.strip()).lstrip("=")  # `\frac23 \approx 0.67`.
  s = _TEXT.sub(r"\1", s)
  # No spaces, except one that ends a command name before a letter (`\pi r`).
  s = _SPACE.sub(lambda m: m.group(1) + " " if m.group(1) else "", s)
  s = s.rstrip(".").lstrip(",").rstrip(",")
  s = _LHS.sub("", s)
  parts = s.split("=")
  if len(parts) > 1 and rational(parts[0]) is not None:
    s = parts[-1]  # `0.56 = 56` is the value 56.
  return s


def _check_size(s: str) -> None:
  """Raises _TooLarge for a long number literal or deep nesting."""
  run = depth = 0
  for c in s:
    if "0" <= c <= "9":
      run += 1
      if run > MAX_DIGITS:
        raise _TooLarge(f"a number literal over {MAX_DIGITS} digits")
      continue
    run = 0
    if c in "([{":
      depth += 1
      if depth > MAX_DEPTH:
        raise _TooLarge(f"nesting deeper than {MAX_DEPTH}")
    elif c in ")]}":
      depth -= 1


# ---------------------------------------------------------------------------
# Exact rationals.

_NUMBER = re.compile(
    r"([1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d*)?|\.\d+)"
    r"(?:(?:[eE]|\\times10\^|\\cdot10\^)\{?([-+]?\d{1,6})\}?)?")


def _unsigned_number(s: str) -> fractions.Fraction | None:
  m = _NUMBER.fullmatch(s)
  if m is None:
    return None
  value = fractions.Fraction(m.group(1).replace(",", ""))
  if m.group(2) is not None:
    exponent = int(m.group(2))
    if abs(exponent) > MAX_SCIENTIFIC_EXPONENT:
      raise _TooLarge(f"an exponent over {MAX_SCIENTIFIC_EXPONENT}")
    value *= fractions.Fraction(10) ** exponent
  return value


def _frac_argument(s: str) -> tuple[str, str] | None:
  """(argument, rest) of a \\frac argument: `{...}` or one character."""
  if not s:
    return None
  if s[0] == "{":
    inner = _group(s, 0)
    return None if inner is None else (inner, s[len(inner) + 2:])
  return (s[0], s[1:]) if s[0] != "\\" else None


def rational(s: str) -> fractions.Fraction | None:
  """The exact value of a normalised numeric answer, or None if not numeric."""
  sign = 1
  while s[:1] in ("-", "+"):
    sign, s = (-sign if s[0] == "-" else sign), s[1:]
  if not s:
    return None
  if s.startswith("\\frac"):
    num = _frac_argument(s[len("\\frac"):])
    den = num and _frac_argument(num[1])
    if not den or den[1]:
      return None
    a, b = rational(num[0]), rational(den[0])
  elif "/" in s:
    a, b = (_unsigned_number(part) for part in s.split("/", 1))
  else:
    value = _unsigned_number(s)
    return None if value is None else sign * value
  if a is None or b is None or b == 0:
    return None
  return sign * a / b


# ---------------------------------------------------------------------------
# Structures: tuples, intervals, sets, lists, unions, matrices.

_MATRIX = re.compile(r"\\begin\{([pbvB]?matrix)\}(.*)\\end\{\1\}")


def _split_top(s: str, sep: str) -> list[str]:
  """`s` split at `sep` outside brackets (`\\{ \\}` count as brackets)."""
  parts, depth, start, i = [], 0, 0, 0
  while i < len(s):
    c = s[i]
    if depth == 0 and s.startswith(sep, i):
      parts.append(s[start:i])
      i = start = i + len(sep)
      continue
    if c == "\\":
      nxt = s[i + 1:i + 2]
      depth += (nxt == "{") - (nxt == "}")
      i += 2 if nxt in ("{", "}", "\\") else 1
      continue
    depth += (c in "([{") - (c in ")]}")
    i += 1
  parts.append(s[start:])
  if len(parts) > MAX_ITEMS:
    raise _TooLarge(f"more than {MAX_ITEMS} items")
  return parts


def _wraps(s: str) -> bool:
  """Whether the bracket opening at s[0] closes at the end of `s`."""
  depth, i = 0, 0
  while i < len(s):
    width = 2 if s[i] == "\\" and s[i + 1:i + 2] in ("{", "}") else 1
    c = s[i + width - 1]
    if c in "([{":
      depth += 1
    elif c in ")]}":
      depth -= 1
      if depth == 0:
        return i + width == len(s)
    i += width
  return False


def _structure(s: str) -> tuple[str, list[str]] | None:
  """(kind, items) of a compound answer, or None for a single value."""
  m = _MATRIX.fullmatch(s)
  if m:
    rows = [_split_top(row, "&") for row in _split_top(m.group(2), "\\\\")]
    return f"matrix{[len(r) for r in rows]}", [x for r in rows for x in r]
  union = _split_top(s, "\\cup")
  if len(union) > 1:
    return "union", union
  if s.startswith("\\{") and s.endswith("\\}") and _wraps(s):
    return "set", _split_top(s[2:-2], ",")
  if len(s) > 2 and s[0] in "([" and s[-1] in ")]" and _wraps(s):
    items = _split_top(s[1:-1], ",")
    if len(items) > 1:
      return s[0] + s[-1], items
  items = _split_top(s, ",")
  return ("list", items) if len(items) > 1 else None


_UNORDERED = ("set", "list", "union")


def _compare_structures(a: tuple[str, list[str]],
                        b: tuple[str, list[str]]) -> bool | None:
  (kind_a, items_a), (kind_b, items_b) = a, b
  unordered = kind_a in _UNORDERED and kind_b in _UNORDERED
  ordered = kind_a == kind_b or {kind_a, kind_b} == {"list", "()"}
  if not (unordered or ordered) or len(items_a) != len(items_b):
    return False
  undecided = False
  if not unordered:
    for x, y in zip(items_a, items_b):
      same = _compare(x, y)
      if same is False:
        return False
      undecided |= same is None
    return None if undecided else True
  # Equivalence is transitive, so greedy matching finds a perfect one if any.
  remaining = list(items_b)
  for x in items_a:
    for k, y in enumerate(remaining):
      same = _compare(x, y)
      undecided |= same is None
      if same:
        del remaining[k]
        break
    else:
      return None if undecided else False
  return True


# ---------------------------------------------------------------------------
# Comparison.


def _text_key(s: str) -> str:
  return s.replace("(", "").replace(")", "").lower()


def _compare(a: str, b: str) -> bool | None:
  """Whether normalised answers agree; None where only sympy could tell."""
  if a == b:
    return True
  if _WORD.fullmatch(a) or _WORD.fullmatch(b):
    return _text_key(a) == _text_key(b)
  base_a, base_b = _BASE.fullmatch(a), _BASE.fullmatch(b)
  if base_a or base_b:  # Digits in a base: the digits must agree, and the
    # bases where both give one (sympy would drop the subscript).
    digits = lambda m, s: (m.group(1) if m else s).upper()
    return (digits(base_a, a) == digits(base_b, b) and
            (not (base_a and base_b) or
             int(base_a.group(2)) == int(base_b.group(2))))
  ra, rb = rational(a), rational(b)
  if ra is not None and rb is not None:
    return ra == rb
  sa, sb = _structure(a), _structure(b)
  if sa is not None and sb is not None:
    return _compare_structures(sa, sb)
  return None


def answers_equal(pred: str, gold: str, timeout_s: float = TIMEOUT_S) -> bool:
  """Whether two extracted answers are equivalent (bounded; see the module)."""
  try:
    a, b = normalize(pred), normalize(gold)
    if not a or not b:
      return False
    _check_size(a)
    _check_size(b)
    same = _compare(a, b)
  except _TooLarge:
    return False
  if same is None and _symbolic_allowed(a) and _symbolic_allowed(b):
    same = _WORKER.equal(gold=b, pred=a, timeout_s=timeout_s)
  return bool(same)


def verify_math(response: str, reference: str, *,
                timeout_s: float = TIMEOUT_S) -> bool:
  """Whether `response`'s final answer is equivalent to `reference`'s.

  Never evaluates the text. Symbolic work is cut off after `timeout_s`
  seconds (the pair then scores False); concurrent callers queue for the one
  worker, and the worker's start (once, and after a cut-off) is not counted.
  """
  if not isinstance(response, str) or not isinstance(reference, str):
    raise TypeError(f"verify_math takes two str, got "
                    f"{type(response).__name__}, {type(reference).__name__}")
  pred = extract_answer(response)
  gold = extract_answer(reference)
  if gold is None and len(reference) <= MAX_ANSWER_CHARS:
    gold = reference
  if pred is None or gold is None:
    return False
  return answers_equal(pred, gold, timeout_s)


# ---------------------------------------------------------------------------
# The symbolic step: caps, then math-verify in a worker process.

_EXPONENT = re.compile(r"\^\s*(\{|\\?[a-zA-Z]+|\d)")
_FACTORIAL = re.compile(r"(\d+)\s*!")


def _symbolic_allowed(s: str) -> bool:
  """False for what could make sympy or its parser run away, or unbalanced
  braces (which would let an answer escape the `\\boxed{}` it is sent in)."""
  braces = depth = parens = max_depth = max_parens = 0
  i = 0
  while i < len(s):
    c = s[i]
    if c == "\\":
      i += 2  # `\{` is a set brace, not a group; `\\` a row break.
      continue
    if c in "([{":
      depth += 1
      parens += c == "("
      braces += c == "{"
      max_depth, max_parens = max(max_depth, depth), max(max_parens, parens)
    elif c in ")]}":
      depth -= 1
      parens -= c == ")"
      braces -= c == "}"
      if braces < 0:
        return False
    i += 1
  if braces or max_depth > MAX_SYMBOLIC_DEPTH or max_parens > MAX_SYMBOLIC_PARENS:
    return False
  for m in _EXPONENT.finditer(s):
    if m.group(1) != "{":
      continue
    exponent = _group(s, m.start(1))
    if exponent is None or "^" in exponent or "!" in exponent:
      return False
    if any(len(d) > MAX_EXPONENT_DIGITS for d in re.findall(r"\d+", exponent)):
      return False
  if any(len(m.group(1)) > MAX_FACTORIAL_DIGITS
         for m in _FACTORIAL.finditer(s)):
    return False
  return "**" not in s


class _SymbolicWorker:
  """A persistent `_symbolic_worker.py` process; killed when a reply is late.

  One request at a time (a lock); safe to call from any thread. Counters:
  `calls`, `timeouts` (cut off here or in the worker), `restarts`.
  """

  def __init__(self, argv: list[str] | None = None):
    self._argv = argv or [sys.executable, "-u", _WORKER_PATH]
    self._lock = threading.Lock()
    self._proc: subprocess.Popen[bytes] | None = None
    self._buffer = b""
    self.calls = self.timeouts = self.restarts = 0

  def _start(self) -> None:
    if self._argv[-1] == _WORKER_PATH and (
        importlib.util.find_spec("math_verify") is None):
      raise ImportError(
          "verify_math needs math-verify to compare symbolic answers: "
          "pip install 'math-verify[antlr4_13_2]'")
    self._proc = subprocess.Popen(
        self._argv, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True)
    self._buffer = b""
    self.restarts += 1
    reply = self._read(time.monotonic() + STARTUP_TIMEOUT_S)
    if reply is None or not reply.get("ready"):
      self.stop()
      raise RuntimeError(f"the math verifier's worker did not start: {reply}")

  def _read(self, deadline: float) -> dict[str, object] | None:
    """The next reply line, or None when it does not come by `deadline`."""
    fd = self._proc.stdout.fileno()
    while b"\n" not in self._buffer:
      left = deadline - time.monotonic()
      if left <= 0 or not select.select([fd], [], [], left)[0]:
        return None
      chunk = os.read(fd, 65536)
      if not chunk:
        return None  # The worker died (e.g. out of memory).
      self._buffer += chunk
    line, self._buffer = self._buffer.split(b"\n", 1)
    return json.loads(line)

  def equal(self, gold: str, pred: str, timeout_s: float) -> bool:
    """math-verify's verdict, or False when it takes over `timeout_s`."""
    with self._lock:
      if self._proc is None or self._proc.poll() is not None:
        self._start()
      deadline = time.monotonic() + timeout_s
      self.calls += 1
      request = {"gold": gold, "pred": pred, "budget_s": 0.9 * timeout_s}
      try:
        self._proc.stdin.write(json.dumps(request).encode() + b"\n")
        self._proc.stdin.flush()
      except OSError:
        self.stop()
        return False
      reply = self._read(deadline)
      if reply is None:
        self.timeouts += 1
        self.stop()
        return False
      self.timeouts += reply["status"] == "timeout"
      return reply["status"] == "ok" and bool(reply["equal"])

  def stop(self) -> None:
    proc, self._proc = self._proc, None
    if proc is not None and proc.poll() is None:
      proc.kill()
      proc.wait()
    if proc is not None:
      proc.stdin.close()
      proc.stdout.close()

  def _forget(self) -> None:
    """In a forked child: the parent's worker is not ours to use."""
    self._lock = threading.Lock()
    self._proc, self._buffer = None, b""


_WORKER = _SymbolicWorker()
atexit.register(_WORKER.stop)
os.register_at_fork(after_in_child=_WORKER._forget)  # pylint: disable=protected-access
