"""Symbolic answer comparison in a separate process (run as a script).

`math_verify.py` starts this file with the interpreter and talks to it over
pipes, one JSON object a line: it writes `{"gold": str, "pred": str,
"budget_s": float}` and reads `{"equal": bool, "status": str}` back, with
status "ok", "timeout" or "error". The first line written is
`{"ready": true}` once the imports are done, or `{"error": "..."}` when
math-verify is missing.

The comparison is math-verify's (LaTeX through latex2sympy2_extended's ANTLR
grammar, then sympy); no text is evaluated as Python (the plain-expression
extractor, which calls sympy's `parse_expr`, is not used). Each request runs
under an interval timer in this process's main thread; the parent kills the
process when a reply is late, so a comparison stuck in C code is bounded too.
Address space is capped so a runaway expression fails with MemoryError
instead of taking the machine's memory.

This file imports nothing from rldyn, so starting it does not load jax.
"""

import json
import os
import resource
import signal
import sys

MEMORY_LIMIT_BYTES = 4 << 30  # Address-space cap of this process.


class _Timeout(BaseException):
  """Raised by the timer; a BaseException so `except Exception` passes it."""


def _on_alarm(signum, frame):
  del signum, frame
  raise _Timeout()


def _numerically_distinct(sympy, gold, pred) -> bool:
  """Whether two numbers differ by more than 1e-9 relative (30 digits).

  math-verify compares numbers by `(a - b).evalf(chop=True) == 0`, which
  calls 2**-98 and 2**-99 equal; this catches that.
  """
  if not all(isinstance(x, sympy.Expr) and x.is_number for x in (gold, pred)):
    return False
  x, y = sympy.N(gold, 30), sympy.N(pred, 30)
  scale = max(abs(x), abs(y))
  return bool(abs(x - y) > sympy.Float("1e-9") * scale)


def _compare(math_verify, sympy, gold: str, pred: str) -> bool:
  config = [math_verify.LatexExtractionConfig()]
  parse = lambda s: math_verify.parse(
      f"$\\boxed{{{s}}}$", extraction_config=config, parsing_timeout=None)
  gold_parsed, pred_parsed = parse(gold), parse(pred)
  if not gold_parsed or not pred_parsed:
    return False
  if not math_verify.verify(gold_parsed, pred_parsed, timeout_seconds=None):
    return False
  return not _numerically_distinct(sympy, gold_parsed[0], pred_parsed[0])


def main() -> None:
  # This file's folder holds rldyn modules (base.py, expr.py, ...) that must
  # not shadow installed ones.
  here = os.path.dirname(os.path.abspath(__file__))
  sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
  # Replies go to the original stdout; anything a library prints goes to
  # stderr so it cannot corrupt the protocol.
  out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
  sys.stdout = sys.stderr
  try:
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard == resource.RLIM_INFINITY or hard > MEMORY_LIMIT_BYTES:
      resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, hard))
    del soft
  except (ValueError, OSError):
    pass  # Not permitted here; the parent's kill still bounds time.
  try:
    import logging  # pylint: disable=g-import-not-at-top
    logging.disable(logging.CRITICAL)  # math-verify warns on every timeout.
    import math_verify  # pylint: disable=g-import-not-at-top
    import sympy  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    out.write(json.dumps({"error": f"{type(e).__name__}: {e}"}) + "\n")
    return
  signal.signal(signal.SIGALRM, _on_alarm)
  out.write(json.dumps({"ready": True}) + "\n")
  for line in sys.stdin:
    request = json.loads(line)
    status, equal = "ok", False
    try:
      signal.setitimer(signal.ITIMER_REAL,
                       max(float(request["budget_s"]), 0.01))
      try:
        equal = _compare(math_verify, sympy, request["gold"], request["pred"])
      finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    except _Timeout:  # Also when the timer fires just as the work ends.
      status, equal = "timeout", False
    except (Exception, RecursionError, MemoryError):  # pylint: disable=broad-except
      status, equal = "error", False
    out.write(json.dumps({"equal": equal, "status": status}) + "\n")


if __name__ == "__main__":
  main()
