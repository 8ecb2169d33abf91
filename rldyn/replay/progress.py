"""A dependency-free progress bar for long replays (stderr; one redrawn line on a terminal)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
  """Counts units of work (sampling / scoring batches) across every checkpoint of a replay.

      bar = Progress(total=units)
      bar.update(1, "step 200: sampling")
      bar.close()

  On a terminal the line is redrawn in place; elsewhere (logs, CI) a line is printed every 10 %.
  """

  def __init__(self, total: int, enabled: bool = True, stream: TextIO | None = None, width: int = 28):
    self.total, self.done, self.width = max(int(total), 1), 0, width
    self.stream = sys.stderr if stream is None else stream
    self.enabled = enabled
    self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
    self.t0 = time.time()
    self._last_decile = -1
    self.label = ""

  def line(self) -> str:
    frac = min(self.done / self.total, 1.0)
    elapsed = time.time() - self.t0
    eta = elapsed / frac * (1 - frac) if frac > 0 else float("nan")
    filled = int(round(frac * self.width))
    bar = "#" * filled + "." * (self.width - filled)
    eta_s = f"{eta:5.0f}s" if eta == eta else "    ?s"
    return (f"[replay] [{bar}] {100 * frac:5.1f}% {elapsed:6.0f}s elapsed, ETA {eta_s}  "
            f"{self.label}")

  def update(self, units: int = 1, label: str | None = None) -> None:
    self.done += units
    if label is not None:
      self.label = label
    if not self.enabled:
      return
    if self.tty:
      self.stream.write("\r" + self.line().ljust(100)[:160])
      self.stream.flush()
      return
    decile = int(10 * self.done / self.total)
    if decile != self._last_decile:
      self._last_decile = decile
      self.stream.write(self.line() + "\n")
      self.stream.flush()

  def close(self) -> None:
    if self.enabled and self.tty:
      self.stream.write("\n")
      self.stream.flush()
