"""phases.png: each signal with its fits, tau and its interval, and the tau profile.

matplotlib is imported here, lazily, with the Agg backend (no display needed).
"""
from __future__ import annotations

import numpy as np

from rldyn.phases import model
from rldyn.phases.detect import PhaseResult


def plot_phases(result: PhaseResult, path: str) -> None:
  """Writes the figure to `path` (PNG)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  shown = [f for f in result.signals.values() if f._prep is not None]
  rows = len(shown) + (1 if result.profile_ll is not None else 0)
  fig, axes = plt.subplots(max(rows, 1), 1, figsize=(9, 2.2 * max(rows, 1) + 0.6),
                           sharex=True, squeeze=False)
  axes = axes[:, 0]
  tau, ci = result.tau_candidate, result.ci_candidate
  color = "tab:green" if result.detected else "tab:gray"

  def mark(ax):
    for i, x in enumerate(result.task_changes):  # curriculum stage changes: the task, not the policy
      ax.axvline(x, color="tab:brown", lw=1.0, ls="-.", label="task change (curriculum)" if i == 0 else None)
    if tau is None:
      return
    ax.axvline(tau, color=color, lw=1.5, ls="-" if result.detected else ":")
    if ci is not None:
      ax.axvspan(ci[0], ci[1], color=color, alpha=0.15, lw=0)

  for ax, fit in zip(axes, shown):
    p = fit._prep  # fits are in standardised units; p.in_units maps them back
    ax.plot(p.steps_N, p.in_units(p.y_N), ".", ms=2, color="0.6", label="values (winsorised)")
    window = int(np.clip(p.n // 25, 3, 101))
    ax.plot(p.steps_N, p.in_units(model.running_median(p.y_N, window)), color="0.3", lw=0.8,
            label=f"running median ({window}, display only)")
    dense_t = np.linspace(p.t_N[0], p.t_N[-1], 400)
    dense_s = np.linspace(p.steps_N[0], p.steps_N[-1], 400)
    if fit._one is not None:
      ax.plot(dense_s, p.in_units(fit._one.predict(dense_t)), "--", color="tab:blue", lw=1,
              label=f"one regime ({fit._one.shape})")
    if fit._two is not None:
      role = model.ACCURACY if fit.role == model.CONTEXT else fit.role
      ax.plot(dense_s, p.in_units(fit._two.predict(role, dense_t)), color="tab:red", lw=1.5,
              label="two regimes")
    mark(ax)
    if fit.role == model.PLANNING and result.overlap and fit.boundary_alone is not None:
      ax.axvline(fit.boundary_alone, color="tab:purple", lw=1, ls="--",
                 label="planning's own turn-up (phases overlap)")
    ok = "" if fit.pattern_ok is None else ("  [ok]" if fit.pattern_ok else "  [no]")
    ax.set_title(f"{fit.name} ({fit.role}): {fit.pattern}{ok}", fontsize=9, loc="left")
    ax.legend(fontsize=6, loc="best")
  if result.profile_ll is not None:
    ax = axes[-1]
    ll = result.profile_ll - np.max(result.profile_ll)
    ax.plot(result.profile_steps, ll, color="k", lw=1)
    ax.axhline(result.ll_threshold - np.max(result.profile_ll), color="tab:orange", lw=0.8,
               ls="--", label="interval threshold")
    ax.set_ylim(max(np.min(ll), -30.0), 1.0)
    ax.set_ylabel("profile log-lik" + (" (execution)" if result.overlap else ""), fontsize=8)
    ax.legend(fontsize=6)
    mark(ax)
  axes[-1].set_xlabel("step")
  head = "two-phase arc detected" if result.detected else (
      "no verdict: the arc's shape across a task change" if result.outcome == "task_change" else
      "no two-phase arc")
  extra = ""
  if result.task_changes:
    extra = " (task changes at step " + ", ".join(f"{x:.0f}" for x in result.task_changes) + ")"
  if result.detected:
    extra += (f": boundary {result.boundary_step}, CI {list(result.ci)}, "
             f"confidence {result.confidence:.2f}")
  fig.suptitle(head + extra, fontsize=11)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
