"""Two-phase arc detection from a metrics log (numpy only; never imports jax).

The claim tested (docs/phases.md, after HICRA, arXiv 2509.03646): RL first
consolidates procedure -- execution-token entropy and relative perplexity fall --
and then strategic planning becomes the bottleneck -- planning semantic entropy
rises while execution entropy stays flat. The phases may overlap: HICRA's Llama
runs show planning diversity dipping and then rising from mid-consolidation. `rldyn.phases` answers, from a log of
`(step, {metric: value})` records, *whether* that arc happened, *where* the
boundary tau is, *how sure* it is, and says "no" when the data do not support it.

    from rldyn import phases
    result = phases.detect(records)             # or phases.fit_phases(series)
    result.detected, result.boundary_step, result.ci, result.confidence
    json.dump(result.to_json(), f)              # the phases.json contract
    python -m rldyn.phases --workdir=DIR        # DIR/phases.json, DIR/phases.png
    python -m rldyn.phases --metrics=LOG --keys=entropy/execution=actor/entropy,...

LOG may be another trainer's log as it comes (`io.FORMATS`): JSONL, CSV/TSV,
verl's console log (`step:N - key:value - ...`), TensorBoard event files (read
without TensorFlow) or TRL's `trainer_state.json`.

The model
---------
Step is rescaled to t in [0, 1]. Each signal j gets its own continuous
two-regime curve with a breakpoint tau *shared by all signals*:

* execution signals (`entropy/execution`, `ppl/execution_rel`): a decay before
  tau -- linear or exponential, curvature kappa_j chosen from a grid -- and a
  free linear slope after it;
* planning (`strategy/entropy`; logs without it: `semantic_entropy/planning`):
  a free linear slope before tau (flat, or dipping) and a rise after it --
  linear, saturating or accelerating;
* optionally `accuracy` (role `accuracy`; by default it is only reported).

Curves are continuous at tau (a kink, not a jump). Noise is Gaussian with a
separate unknown variance per signal, so the joint log-likelihood is
`sum_j -n_j/2 log(RSS_j / n_j)`: scale-free per signal, no standardisation
needed. tau is estimated by **profile likelihood** over a grid (120 candidates,
then 61 around the best), maximising over kappa at each tau.

**Is there a change?** The two-regime model is compared with the best
*one-regime* model per signal: a smooth monotone curve from a dense family
(linear, saturating exponential such as a single exponential decay, or
accelerating) -- so a pure decay, a monotone rise or noise are explained
without a boundary. dBIC = BIC(one) - BIC(two), with one extra parameter per
signal and one for tau, must exceed `bic_threshold` (default 6, "strong"
evidence on the Kass-Raftery scale).

**Is it the arc?** A change is not enough. At tau: every execution signal must
not rise before tau, and at least one must fall significantly (t <= -2) and
then be flat (|slope after| <= 0.5 x |mean slope before|); planning must not
fall after tau, and must rise significantly after (t >= 2) with its slope
before at most 0.5 x its slope after. A role that is absent from the log is
skipped and the `reason` says which half of the arc was not tested. Each
signal's own best tau and interval are reported too (`boundary_alone`,
`ci_alone`), and each half's own boundary from the joint profile of its
signals: the *end of consolidation* (execution) and planning's *turn-up* (its
minimum when it dips). If they disagree with a gap between the phases, the arc
is detected and the reason says the shared boundary is a compromise.

**Overlapping phases.** If planning's turn-up interval lies entirely before
the end of consolidation, one shared tau cannot describe the run; the model
then gives each half its own boundary (one more parameter in dBIC) and checks
each half's pattern at its own boundary. It is the arc -- an execution
consolidation followed by planning diversity rising above its earlier level --
when planning dipped significantly (t <= -2) before its turn-up and gets back
above its earlier level (the level it started from before the dip) no earlier
than the start of the consolidation-end interval. If the range of that
recovery step over planning's interval ends before the consolidation interval
starts, the planning rise comes first: the order is reversed and the answer is
no; in between (no significant dip, or an early recovery) the answer is no with
"the order is unclear". If this two-boundary model says no but the shared-tau
model shows the arc (and the per-signal intervals are not in reversed order),
the shared answer stands. In either model, a planning signal that dipped and is
not back above its earlier level by the end of the log has not shown the arc's
second half (yet): no, outcome `wrong_shape`. When the overlap is detected, `boundary_step` is the
end of consolidation and the overlap is reported: per planning signal,
`consolidation_end_step`, `overlap_steps` (end of consolidation minus the
signal's own turn-up; > 0 overlap, < 0 gap), `recovery_step` and
`recovery_ci`; and in the verdict.

**How sure?** `ci` is the profile-likelihood interval for tau at 95 %
(log-likelihood within chi2_1(0.95)/2 of its maximum; the hull of that set, so a
bimodal profile gives a wide interval). For short runs a small-sample
correction widens it: each signal's log-likelihood is scaled by its residual
degrees of freedom (n - 4) / n and the critical value is a Student-t quantile. `confidence` =
sigmoid((dBIC - bic_threshold) / 2): the BIC approximation to the posterior
probability of the two-regime model under a sceptical prior that gives it odds
exp(-threshold/2); 0.5 at the threshold; 0 when the fitted shape is not the
arc. The detector is deterministic (no resampling, no random state).

Robustness
----------
* NaN, None, inf, missing keys, torn lines, non-UTF-8 bytes, absurd nesting,
  400-digit numbers, oversized CSV fields: dropped per value or line and
  counted; signals may be logged at different cadences; a step logged twice
  keeps its last value. The reader and detector never raise on content.
* Scale: each signal is standardised (exact power-of-two prescale, median,
  standard deviation) before fitting, so values near 1e300, at 1e-20 or on an
  offset of 1e9 give the same answer as at unit scale; reported levels and
  slopes are in the log's units.
* Uneven spacing: the regression is in step units, never in record index.
* Heavy tails: values are winsorised at running median +- 3 robust sigma (MAD).
  Smoothing is used only for that and for display; fits use the raw values, so
  smoothing cannot shift tau.
* Autocorrelated noise: each signal's log-likelihood is divided by
  phi = (1+rho)/(1-rho), rho = lag-1 autocorrelation of its two-regime residuals
  (an effective-sample-size correction); this widens the interval and shrinks
  dBIC. Misfit of the curve families shows up as autocorrelation too.
* Short runs: below `min_points` values (15), or when no tau leaves 5 points
  (and 5 %) of every signal in each phase, the answer is `detected: false`
  with the reason. Long runs are averaged into <= 1000 equal-count bins for the
  grid search (likelihoods still count raw points), so a fit costs ~0.1 s at
  10,000 steps.

What it cannot tell
-------------------
* Causation or mechanism: it reports the shape of logged curves, not why.
* More than one boundary: one tau only; a run with several transitions gets the
  strongest one or a wide interval.
* Arcs shorter than 5 % of the run on either side, or a Phase 1 that ended
  before logging began (strong models): reported as not detected, which is a
  valid answer, not an error.
* Quantitative calibration outside the synthetic bank: the interval assumes
  the curve families fit; under strong misspecification (a sigmoid, a jump)
  coverage falls below nominal at low noise. Heavy autocorrelation (rho > 0.9)
  is clipped. The thresholds are calibrated on synthetic logs
  (benchmarks/bench_phases.py), not on real runs.
* Signals are treated as independent given the curves; correlated noise across
  signals (same rollouts) makes dBIC optimistic.
"""
from rldyn.phases.detect import DEFAULT_SIGNALS
from rldyn.phases.detect import PhaseConfig
from rldyn.phases.detect import PhaseResult
from rldyn.phases.detect import SignalFit
from rldyn.phases.detect import SignalSpec
from rldyn.phases.detect import detect
from rldyn.phases.detect import fit_phases
from rldyn.phases.detect import records_to_series
from rldyn.phases.io import FORMATS
from rldyn.phases.io import MetricsLog
from rldyn.phases.io import parse_keys
from rldyn.phases.io import read_metrics
from rldyn.phases.online import OnlinePhaseDetector
from rldyn.phases.report import analyse

__all__ = [
    "DEFAULT_SIGNALS", "PhaseConfig", "PhaseResult", "SignalFit", "SignalSpec", "detect",
    "fit_phases", "records_to_series", "FORMATS", "MetricsLog", "parse_keys", "read_metrics",
    "OnlinePhaseDetector", "analyse",
]
