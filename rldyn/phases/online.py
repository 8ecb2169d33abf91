"""Online detector: the offline model, refitted as steps arrive, with hysteresis.

Usage in an RL loop (the loop owns events.jsonl):

    detector = OnlinePhaseDetector(PhaseConfig())
    for step in ...:
      metrics = ...
      event = detector.update(step, metrics)
      if event is not None:
        events_writer.write(event)

The model is refitted every `refit_every` updates (a refit costs tens of
milliseconds whatever the run length, because long signals are binned), so the
amortised cost per RL step is around a millisecond. An event is emitted when the
arc has been detected on `patience` consecutive refits, and not again until the
confidence has stayed below `release_confidence` for `patience` refits (the
crossing is released) and the arc is then detected anew.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np

from rldyn.phases.detect import PhaseConfig, PhaseResult, finite_float, fit_phases


class OnlinePhaseDetector:
  """Streaming two-phase detector; `update` returns an event dict at most once per crossing."""

  def __init__(self, config: PhaseConfig | None = None, *, refit_every: int = 25,
               patience: int = 2, release_confidence: float = 0.2):
    """Builds the detector.

    Args:
      config: the offline detector's settings (signals, thresholds).
      refit_every: refit after this many updates (each update is O(1) otherwise).
      patience: consecutive refits that must agree before the state flips.
      release_confidence: below this confidence a latched crossing counts as gone.
    """
    if refit_every < 1 or patience < 1:
      raise ValueError("refit_every and patience must be >= 1")
    self.config = config or PhaseConfig()
    self.refit_every = refit_every
    self.patience = patience
    self.release_confidence = release_confidence
    self._names = self.config.read_names()
    self._steps: dict[str, list[float]] = {n: [] for n in self._names}
    self._values: dict[str, list[float]] = {n: [] for n in self._names}
    self._since_fit = 0
    self._on_streak = 0
    self._off_streak = 0
    self.latched = False
    self.last_result: PhaseResult | None = None
    self.n_fits = 0

  def _ingest(self, step: int, metrics: Mapping[str, Any]) -> None:
    for n in self._names:
      v = finite_float(metrics.get(n))
      if v is not None:
        self._steps[n].append(float(step))
        self._values[n].append(v)

  def _series(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {n: (np.asarray(self._steps[n]), np.asarray(self._values[n])) for n in self._names}

  def result(self) -> PhaseResult:
    """Fits all data seen so far now (the offline answer on the prefix)."""
    self.last_result = fit_phases(self._series(), self.config)
    self.n_fits += 1
    self._since_fit = 0
    return self.last_result

  def update(self, step: int, metrics: Mapping[str, Any]) -> dict[str, Any] | None:
    """Adds one step's metrics; returns a `phase_boundary` event or None."""
    self._ingest(step, metrics)
    self._since_fit += 1
    if self._since_fit < self.refit_every:
      return None
    res = self.result()
    if not self.latched:
      self._on_streak = self._on_streak + 1 if res.detected else 0
      if self._on_streak >= self.patience:
        self.latched, self._on_streak, self._off_streak = True, 0, 0
        return {
            "event": "phase_boundary",
            "step": int(step),
            "boundary_step": res.boundary_step,
            "ci": list(res.ci) if res.ci else None,
            "confidence": float(res.confidence),
            "delta_bic": float(res.delta_bic) if res.delta_bic is not None else None,
            "reason": res.reason,
        }
    else:
      self._off_streak = self._off_streak + 1 if res.confidence < self.release_confidence else 0
      if self._off_streak >= self.patience:
        self.latched, self._off_streak, self._on_streak = False, 0, 0
    return None

  def warm_start(self, records: Iterable[tuple[int, Mapping[str, Any]]]) -> None:
    """Ingests past records (e.g. metrics.jsonl on resume) without emitting events.

    The state is set from one fit on everything: a crossing already present in
    the history is latched, so a resumed run does not announce it again.
    """
    for step, metrics in records:
      self._ingest(step, metrics)
    res = self.result()
    self.latched = res.detected
    self._on_streak = self._off_streak = 0
