"""Compare runs: one report across arms and seeds (Markdown + PNGs).

    python -m rldyn.compare RUN_A_SEED0 RUN_A_SEED1 RUN_B_SEED0 RUN_B_SEED1 --out=/tmp/report
    python -m rldyn.compare --arm=clip=DIR1,DIR2 --arm=noclip=DIR3,DIR4 --out=/tmp/report
    python -m rldyn.compare DIR ... --out=/tmp/report --run_means=clip_frac   # + a whole-run mean column
    python -m rldyn.compare DIR ... --out=/tmp/report --at_step=200    # every run as of step 200

Runs are read through the workdir contract (`rldyn.workdir.Workdir`: config.json, metrics.jsonl,
eval.jsonl, events.jsonl, phases.json, replay/passk.json). Positional runs are grouped into **arms** by
their saved config with the per-seed keys removed (`seed`, `base_workdir`, `resume_anyway`,
`task.data_dir`): runs that differ only in those are seeds of one arm. An arm is named by the keys in
which it differs from the other arms (`reward.name=random, loss.name=vanilla`). `--arm NAME=DIR,DIR`
names arms explicitly instead (configs are then not needed).

Seeds of an arm are aggregated as the mean and a two-sided 95 % **Student-t interval**
`mean ± t_{0.975, n−1} · s / √n` (s the sample std, ddof = 1); with one seed there is no interval.
Differences between arms (each arm minus the first) use Welch's t-interval. Curves are aggregated step by
step over the seeds that logged that step.

The report (`OUT/report.md`, `OUT/compare.json`, `OUT/*.png`) has: a table answering the study's question
(held-out pass@1 and greedy accuracy of the base and the final policy, their change, final training
accuracy, entropy by role, KL, response length, pass@k of the final checkpoint where replay ran, phase
verdicts), the differences against the first arm, and plots of held-out pass@1/accuracy, training
accuracy, entropy by role, KL, strategy diversity and procedure errors, response length and final pass@k
curves (training metrics as each run's trailing mean over PLOT_SMOOTH steps). A missing, empty or partial
run is listed under "Problems" and left out of (or counted as far as it got in) the aggregates; it never
stops the report.

Entropy by role is read on the task's true roles: a run whose role tagger is not the truth (the placebo,
a lexicon on countdown) logs `entropy/*` on its own mask and `truth/entropy/*` on the true roles
(docs/metrics.md); its entropy columns take the latter, as its phase verdict does, so every arm is
compared on the same quantity.

`--at_step=N` compares every run as of step N (runs of different lengths at a common step): metrics,
held-out evaluations and replayed checkpoints after N are ignored, "final" means the last one at or
before N, and each run's phase verdict is re-judged on its metrics up to N (the detector's defaults, as
`rldyn.phases --until_step=N`) instead of read from its phases.json. A run that stopped before N is
listed under "Problems".
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence

import numpy as np

from rldyn import phases as phases_lib
from rldyn import workdir as workdir_lib
from rldyn.workdir import Workdir

# Config keys that differ between seeds of one arm (or between copies of one run), not between arms.
SEED_KEYS = ("seed", "base_workdir", "resume_anyway", "task.data_dir")
FINAL_METRIC_WINDOW = 5  # final training metrics: the mean of each seed's last this-many logged steps


# ---- statistics ----------------------------------------------------------------------------------------

def t_quantile(df: int, q: float = 0.975) -> float:
  from scipy import stats  # pylint: disable=g-import-not-at-top
  return float(stats.t.ppf(q, df))


@dataclasses.dataclass(frozen=True)
class Estimate:
  """Mean of n seed values and its 95 % t-interval (lo = hi = nan when n < 2)."""
  mean: float
  lo: float
  hi: float
  n: int

  def fmt(self, digits: int = 3) -> str:
    """`mean [lo, hi]` with `digits` decimals; a mean too small to show that way (0 < |mean| < 10^-digits,
    e.g. a clip fraction of 4e-4) in `digits` significant figures instead."""
    if self.n == 0:
      return "—"
    spec = f".{digits}g" if 0 < abs(self.mean) < 10.0 ** -digits else f".{digits}f"
    if self.n < 2:
      return f"{self.mean:{spec}} (n=1)"
    return f"{self.mean:{spec}} [{self.lo:{spec}}, {self.hi:{spec}}]"

  def to_json(self) -> dict:
    f = lambda x: None if not math.isfinite(x) else x  # noqa: E731
    return {"mean": f(self.mean), "lo": f(self.lo), "hi": f(self.hi), "n": self.n}


def mean_ci(values: Sequence[float]) -> Estimate:
  """Mean and 95 % Student-t interval of finite values (NaN/None dropped)."""
  x = np.array([v for v in values if v is not None and math.isfinite(v)], float)
  n = len(x)
  if n == 0:
    return Estimate(math.nan, math.nan, math.nan, 0)
  m = float(x.mean())
  if n < 2:
    return Estimate(m, math.nan, math.nan, 1)
  half = t_quantile(n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
  return Estimate(m, m - half, m + half, n)


def welch_diff(a: Sequence[float], b: Sequence[float]) -> Estimate:
  """mean(a) − mean(b) with Welch's 95 % t-interval (Welch–Satterthwaite degrees of freedom)."""
  a = np.array([v for v in a if v is not None and math.isfinite(v)], float)
  b = np.array([v for v in b if v is not None and math.isfinite(v)], float)
  n = min(len(a), len(b))
  if n == 0:
    return Estimate(math.nan, math.nan, math.nan, 0)
  d = float(a.mean() - b.mean())
  if len(a) < 2 or len(b) < 2:
    return Estimate(d, math.nan, math.nan, 1)
  va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
  se = math.sqrt(va + vb)
  if se == 0:
    return Estimate(d, d, d, n)
  df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
  half = t_quantile(df) * se
  return Estimate(d, d - half, d + half, n)


# ---- reading runs --------------------------------------------------------------------------------------

@dataclasses.dataclass
class Run:
  """What one workdir holds (each part None/empty when absent); `problems` says what was missing."""
  path: str
  config: dict | None
  metrics: list[dict]
  evals: list[dict]
  events: list[dict]
  phases: dict | None
  passk: dict | None
  problems: list[str]

  @property
  def finished(self) -> bool:
    return any(e.get("event") == "run_end" for e in self.events)


def _read_json_or_none(path: str, what: str, problems: list[str]) -> dict | None:
  if not os.path.exists(path):
    return None
  try:
    return workdir_lib.read_json(path)
  except (OSError, ValueError) as e:
    problems.append(f"unreadable {what} ({type(e).__name__}: {e})")
    return None


def read_run(path: str) -> Run:
  """Reads a workdir; never raises for missing or damaged files (they are listed in `problems`)."""
  wd = Workdir(path)
  problems: list[str] = []
  if not os.path.isdir(wd.root):
    return Run(wd.root, None, [], [], [], None, None, ["not a directory"])
  config = _read_json_or_none(wd.config_path, workdir_lib.CONFIG, problems)
  if config is None and not problems:
    problems.append(f"no {workdir_lib.CONFIG}")
  metrics, evals, events = wd.read_metrics(), wd.read_evals(), wd.read_events()
  if not metrics:
    problems.append(f"no {workdir_lib.METRICS} lines")
  if not evals:
    problems.append(f"no {workdir_lib.EVAL} lines")
  run = Run(wd.root, config, metrics, evals, events,
            _read_json_or_none(wd.phases_path, workdir_lib.PHASES, problems),
            _read_json_or_none(os.path.join(wd.replay_dir, workdir_lib.REPLAY_PASSK), "replay/passk.json",
                               problems), problems)
  if metrics and not run.finished:
    steps = (config or {}).get("rl", {}).get("steps")
    problems.append(f"partial: no run_end event (last logged step {metrics[-1].get('step')}"
                    + (f" of {steps})" if steps else ")"))
  return run


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(_flatten(v, key + "."))
    else:
      out[key] = json.dumps(v, sort_keys=True)
  return out


def arm_key(config: dict) -> str:
  """The config minus the per-seed keys (SEED_KEYS), as canonical JSON."""
  flat = {k: v for k, v in _flatten(config).items() if k not in SEED_KEYS}
  return json.dumps(flat, sort_keys=True)


def group_runs(runs: Sequence[Run]) -> tuple[dict[str, list[Run]], list[Run]]:
  """({arm name: runs}, runs without a config) grouped by `arm_key`, in first-seen order."""
  groups: dict[str, list[Run]] = {}
  orphans = []
  for r in runs:
    if r.config is None:
      orphans.append(r)
    else:
      groups.setdefault(arm_key(r.config), []).append(r)
  flats = {k: json.loads(k) for k in groups}
  differing = sorted({key for f in flats.values() for key in f
                      if len({g.get(key) for g in flats.values()}) > 1})
  named: dict[str, list[Run]] = {}
  for i, (k, rs) in enumerate(groups.items()):
    name = ", ".join(f"{key}={_short(flats[k].get(key))}" for key in differing) or "all"
    if name in named:
      name = f"{name} #{i}"
    named[name] = rs
  return named, orphans


def _short(v: str | None) -> str:
  if v is None:
    return "(absent)"
  s = json.loads(v)
  s = s if isinstance(s, str) else json.dumps(s)
  return s if len(s) <= 40 else s[:37] + "..."


def parse_arm(spec: str) -> tuple[str, list[str]]:
  """'NAME=DIR,DIR' -> (NAME, [DIR, DIR])."""
  name, sep, dirs = spec.partition("=")
  paths = [d for d in dirs.split(",") if d]
  if not sep or not name or not paths:
    raise ValueError(f"--arm={spec!r}: expected NAME=DIR[,DIR...]")
  return name, paths


def at_step(run: Run, n: int) -> Run:
  """The run as of step n: later metrics, evaluations and replayed checkpoints dropped, the phase verdict
  re-judged on the metrics up to n (not read from phases.json)."""
  upto = lambda lines: [x for x in lines if isinstance(x.get("step"), (int, float)) and x["step"] <= n]  # noqa: E731
  metrics = upto(run.metrics)
  problems = [p for p in run.problems if not p.startswith("partial:")]
  evals = upto(run.evals)
  # A run of n steps logs metrics for steps 0 .. n-1 and evaluates θ_n at step n: it reached step n.
  reached = max([int(m["step"]) + 1 for m in metrics] + [int(e["step"]) for e in evals], default=0)
  if reached < n:
    problems.append(f"stops before --at_step={n} (reached step {reached})")
  passk = run.passk
  if passk and passk.get("checkpoints"):
    passk = {**passk, "checkpoints": upto(passk["checkpoints"])}
  phases = None
  if metrics:
    phases = phases_lib.detect([(int(m["step"]), m) for m in metrics], phases_lib.PhaseConfig()).to_json()
  return dataclasses.replace(run, metrics=metrics, evals=evals, passk=passk, phases=phases,
                             problems=problems)


# ---- per-run quantities --------------------------------------------------------------------------------

def _value(line: dict, key: str) -> float:
  v = line.get(key)
  return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


def base_and_final(run: Run, key: str) -> tuple[float, float]:
  """(value at the first eval line = the base, value at the last eval line) of an eval key."""
  vals = [(e.get("step", -1), _value(e, key)) for e in run.evals]
  vals = [(s, v) for s, v in vals if math.isfinite(v)]
  if not vals:
    return math.nan, math.nan
  vals.sort(key=lambda sv: sv[0])
  return vals[0][1], vals[-1][1]


# Where a run logged the true-role signal (its tagger is not the truth), the role columns read it.
TRUE_ROLE_KEYS = {"entropy/execution": "truth/entropy/execution", "entropy/planning": "truth/entropy/planning"}


def _true_role_key(lines: Sequence[dict], key: str) -> str:
  """`key`, or its true-role signal (TRUE_ROLE_KEYS) where the run's lines have one."""
  truth = TRUE_ROLE_KEYS.get(key)
  return truth if truth and any(truth in m for m in lines) else key


def final_metric(run: Run, key: str, window: int | None = FINAL_METRIC_WINDOW) -> float:
  """The mean of `key` over the run's last `window` logged values (None: over all of them); for an
  entropy-by-role key, the true-role signal where the run logged one (TRUE_ROLE_KEYS)."""
  key = _true_role_key(run.metrics, key)
  vals = [_value(m, key) for m in run.metrics]
  vals = [v for v in vals if math.isfinite(v)]
  vals = vals[-window:] if window else vals
  return float(np.mean(vals)) if vals else math.nan


def final_passk(run: Run) -> tuple[dict[int, float], dict[int, float]]:
  """({k: pass@k} of the base, of the last replayed checkpoint) from replay/passk.json ({} if absent)."""
  if not run.passk or not run.passk.get("checkpoints"):
    return {}, {}
  cks = sorted(run.passk["checkpoints"], key=lambda c: c.get("step", 0))
  curve = lambda c: {int(k): float(v) for k, v in zip(c.get("k", []), c.get("pass_at_k", []))}  # noqa: E731
  base = next((curve(c) for c in cks if c.get("step") == 0), {})
  last = curve(cks[-1]) if cks[-1].get("step", 0) > 0 else {}
  return base, last


def phase_verdict(run: Run) -> str:
  """One cell of the verdict table: arc or not, the boundary or best split with its interval and ΔBIC,
  and, when there is no arc, which check failed (the signals' patterns in the detector's words); for a
  log whose task changes (a curriculum), each stage's own verdict after it."""
  ph = run.phases
  if ph is None:
    return "not run"
  cell = _whole_log_verdict(ph)
  if ph.get("stages"):
    cell += " — each stage alone: " + "; ".join(
        f"{st.get('first_step', 0):.0f}-{st.get('last_step', 0):.0f}: {st.get('summary', st.get('outcome'))}"
        for st in ph["stages"])
  return cell


def _whole_log_verdict(ph: dict) -> str:
  dbic = ph.get("delta_bic")
  evid = "" if dbic is None else f", ΔBIC {dbic:.1f}"
  if ph.get("detected"):
    ci = ph.get("ci") or [None, None]
    overlap = ph.get("overlap_steps")
    lap = ("" if not overlap else f", phases overlap by {overlap:.0f} steps" if overlap > 0
           else f", a gap of {-overlap:.0f} steps between the phases")
    return f"arc: boundary {ph.get('boundary_step')} [{ci[0]}, {ci[1]}]{evid}{lap}"
  cand, cci = ph.get("candidate_step"), ph.get("candidate_ci")
  split = "" if cand is None else f"{cand:.0f}" + ("" if not cci else f" [{cci[0]:.0f}, {cci[1]:.0f}]")
  outcome = ph.get("outcome")  # the detector's decision (phases.json written before it: the reason only)
  if outcome == "no_change":
    return f"no arc: one smooth regime (best split {split}{evid}, unsupported)"
  if outcome == "wrong_shape":
    return f"no arc: change at {split}{evid}, not the arc's shape ({'; '.join(ph.get('failed_checks', []))})"
  if outcome == "reversed":
    return f"no arc: change at {split}{evid}, planning rises first"
  if outcome == "unclear":
    return f"no arc: change at {split}{evid}, order unclear"
  if outcome == "task_change":
    at = ", ".join(f"{x:.0f}" for x in ph.get("task_changes", []))
    return f"no verdict: the arc's shape at {split}{evid}, but the task changes at step {at} (curriculum)"
  return "no arc: " + str(ph.get("reason", "")).split(". ")[0].rstrip(".")


def curve(runs: Sequence[Run], key: str, evals: bool = False, smooth: int = 1) -> dict[int, Estimate]:
  """Step -> the seeds' mean and interval of `key` at that step (seeds that logged it); an entropy-by-role
  key reads each run's true-role signal where it logged one (TRUE_ROLE_KEYS). smooth > 1: each run's
  values are first averaged over its last `smooth` logged values (a trailing mean, for display)."""
  by_step: dict[int, list[float]] = {}
  for r in runs:
    lines = r.evals if evals else r.metrics
    k = key if evals else _true_role_key(lines, key)
    pts = [(int(line["step"]), _value(line, k)) for line in lines if "step" in line]
    pts = [(s, v) for s, v in pts if math.isfinite(v)]
    for i, (s, _) in enumerate(pts):
      window = [v for _, v in pts[max(0, i - smooth + 1):i + 1]]
      by_step.setdefault(s, []).append(float(np.mean(window)))
  return {s: mean_ci(v) for s, v in sorted(by_step.items())}


PLOT_SMOOTH = 10  # training-metric curves: each run's trailing mean over this many logged steps


# ---- the report ----------------------------------------------------------------------------------------

def arm_summary(runs: Sequence[Run], run_means: Sequence[str] = ()) -> dict[str, Estimate]:
  """The question table's row of an arm: each entry aggregated over its seeds. `run_means`: metrics keys
  also reported as each seed's mean over all its logged steps (e.g. `clip_frac`, how often the clip acted)."""
  out = {}
  for key, label in (("eval/pass@1", "pass@1"), ("eval/accuracy", "greedy")):
    pairs = [base_and_final(r, key) for r in runs]
    out[f"base {label}"] = mean_ci([b for b, _ in pairs])
    out[f"final {label}"] = mean_ci([f for _, f in pairs])
    out[f"Δ {label}"] = mean_ci([f - b for b, f in pairs])
  for key in ("accuracy", "entropy/execution", "entropy/planning", "strategy/entropy",
              "procedure/move_error_rate", "kl/k3", "response_len/mean"):
    out[f"final {key}"] = mean_ci([final_metric(r, key) for r in runs])
  for key in run_means:
    out[f"run mean {key}"] = mean_ci([final_metric(r, key, window=None) for r in runs])
  finals = [final_passk(r)[1] for r in runs]
  ks = sorted(set.intersection(*[set(f) for f in finals])) if finals and all(finals) else []
  if ks:
    out[f"final pass@{ks[-1]} (replay)"] = mean_ci([f[ks[-1]] for f in finals])
  return out


def per_seed(runs: Sequence[Run], what: str) -> list[float]:
  key = {"Δ pass@1": "eval/pass@1", "Δ greedy": "eval/accuracy"}[what]
  return [f - b for b, f in (base_and_final(r, key) for r in runs)]


def build(arms: dict[str, list[Run]], out_dir: str, problems: Sequence[tuple[str, str]] = (),
          plots: bool = True, run_means: Sequence[str] = (), at: int | None = None) -> dict:
  """Writes OUT/report.md, compare.json and (plots=True) PNGs; returns the compare.json dict."""
  os.makedirs(out_dir, exist_ok=True)
  problems = list(problems) + [(r.path, p) for rs in arms.values() for r in rs for p in r.problems]
  summaries = {name: arm_summary(rs, run_means) for name, rs in arms.items()}
  names = list(arms)
  diffs = {}
  if len(names) > 1:
    ref = names[0]
    for name in names[1:]:
      diffs[name] = {w: welch_diff(per_seed(arms[name], w), per_seed(arms[ref], w))
                     for w in ("Δ pass@1", "Δ greedy")}
  result = {
      "interval": "two-sided 95% Student-t interval over seeds (ddof=1); Welch for differences",
      "arms": {n: {"runs": [r.path for r in arms[n]], "summary": {k: e.to_json() for k, e in summaries[n].items()},
                   "phases": [phase_verdict(r) for r in arms[n]]} for n in names},
      "differences_vs": names[0] if len(names) > 1 else None,
      "differences": {n: {k: e.to_json() for k, e in d.items()} for n, d in diffs.items()},
      "problems": [{"run": p, "problem": m} for p, m in problems],
      "at_step": at,
  }
  workdir_lib.write_json_atomic(os.path.join(out_dir, "compare.json"), result)
  images = _plots(arms, out_dir) if plots else []
  with open(os.path.join(out_dir, "report.md"), "w") as f:
    f.write(_markdown(arms, summaries, diffs, problems, images, at))
  return result


def _markdown(arms, summaries, diffs, problems, images, at=None) -> str:
  names = list(arms)
  lines = ["# rldyn.compare" + ("" if at is None else f" as of step {at}"), "",
           f"{len(names)} arm(s), {sum(len(r) for r in arms.values())} run(s). Values are the mean over seeds "
           "with a two-sided 95 % Student-t interval `[lo, hi]` (ddof = 1; none with one seed). Base = the "
           "first held-out evaluation (step 0), final = the last; Δ = final − base per seed, then aggregated. "
           f"Final training metrics are each seed's mean over its last {FINAL_METRIC_WINDOW} logged steps; "
           "entropy by role is on the true roles (`truth/entropy/*` where a run's tagger is not the truth)."
           + ("" if at is None else f" Every run is read as of step {at}: later lines are ignored and the "
              "phase verdicts are re-judged on the metrics up to it."), ""]
  lines += ["## Arms", ""] + [f"- **{n}**: {len(rs)} seed(s): " + ", ".join(f"`{r.path}`" for r in rs)
                               for n, rs in arms.items()] + [""]
  cols = list(dict.fromkeys(k for s in summaries.values() for k in s))
  lines += ["## The question: did the arm improve held-out performance, and by how much?", "",
            "| arm | n | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
  for n in names:
    s = summaries[n]
    lines.append(f"| {n} | {len(arms[n])} | " + " | ".join(s[c].fmt() if c in s else "—" for c in cols) + " |")
  lines.append("")
  if diffs:
    lines += [f"## Differences against `{names[0]}` (Welch 95 % interval)", "",
              "| arm | Δ pass@1 − ref | Δ greedy − ref | interval excludes 0 |", "|---|---|---|---|"]
    for n, d in diffs.items():
      sig = ", ".join(w for w, e in d.items() if e.n >= 2 and (e.lo > 0 or e.hi < 0)) or "neither"
      lines.append(f"| {n} | {d['Δ pass@1'].fmt()} | {d['Δ greedy'].fmt()} | {sig} |")
    lines.append("")
  lines += ["## Phase verdicts (" + ("phases.json" if at is None else f"re-judged at step {at}") + "), run by run", "",
            "| arm | run | steps | Δ pass@1 | Δ greedy | verdict |", "|---|---|---|---|---|---|"]
  for n, rs in arms.items():
    for r in rs:
      deltas = [f - b for b, f in (base_and_final(r, k) for k in ("eval/pass@1", "eval/accuracy"))]
      shown = " | ".join(f"{d:+.3f}" if math.isfinite(d) else "—" for d in deltas)
      steps = max((int(m["step"]) + 1 for m in r.metrics if "step" in m), default=0)
      lines.append(f"| {n} | `{os.path.basename(r.path)}` | {steps} | {shown} | {phase_verdict(r)} |")
  lines.append("")
  if images:
    lines += ["## Plots", ""] + [f"![{t}]({os.path.basename(p)})" for t, p in images] + [""]
  lines += ["## Problems", ""]
  lines += [f"- `{p}`: {m}" for p, m in problems] if problems else ["none"]
  return "\n".join(lines) + "\n"


def _plots(arms: dict[str, list[Run]], out_dir: str) -> list[tuple[str, str]]:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  written = []

  def panel(ax, key, evals=False):
    for name, rs in arms.items():
      c = curve(rs, key, evals, smooth=1 if evals else PLOT_SMOOTH)
      if not c:
        continue
      s = np.array(list(c))
      m = np.array([e.mean for e in c.values()])
      lo = np.array([e.lo if e.n > 1 else e.mean for e in c.values()])
      hi = np.array([e.hi if e.n > 1 else e.mean for e in c.values()])
      line, = ax.plot(s, m, label=name, marker="o" if evals else None, ms=3)
      ax.fill_between(s, lo, hi, color=line.get_color(), alpha=0.2)
    ax.set_title(key)
    ax.set_xlabel("step")

  figures = (("heldout", "held-out evaluation", (("eval/pass@1", True), ("eval/accuracy", True))),
             ("train", "training accuracy and reward", (("accuracy", False), ("reward/mean", False))),
             ("entropy", "entropy by role", (("entropy/execution", False), ("entropy/planning", False))),
             ("kl", "KL to the reference", (("kl/k3", False), ("kl/k3/planning", False),
                                             ("kl/k3/execution", False), ("kl/k1", False))),
             ("strategy", "strategy diversity and procedure errors",
              (("strategy/entropy", False), ("strategy/first_move_entropy", False),
               ("strategy/distinct_correct_per_prompt", False), ("procedure/move_error_rate", False))),
             ("length", "response length", (("response_len/mean", False),)))
  for fname, title, keys in figures:
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.6), squeeze=False)
    for ax, (key, ev) in zip(axes[0], keys):
      panel(ax, key, ev)
    labelled = [ax for ax in axes[0] if ax.get_legend_handles_labels()[0]]
    if labelled:
      labelled[0].legend(fontsize=7)
    fig.suptitle(f"{title} (mean over seeds, 95 % t-interval" + ("" if keys[0][1] else
                 f"; each run's trailing mean over {PLOT_SMOOTH} steps") + ")")
    fig.tight_layout()
    path = os.path.join(out_dir, f"{fname}.png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    written.append((title, path))
  fig, ax = plt.subplots(figsize=(5, 3.6))
  drawn = False
  for name, rs in arms.items():
    curves = [final_passk(r) for r in rs]
    for which, idx, style in (("final", 1, "-"), ("base", 0, ":")):
      cs = [c[idx] for c in curves if c[idx]]
      ks = sorted(set.intersection(*[set(c) for c in cs])) if cs else []
      if ks:
        ax.plot(ks, [np.mean([c[k] for c in cs]) for k in ks], style, marker="o", ms=3, label=f"{name} ({which})")
        drawn = True
  if drawn:
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k")
    ax.set_ylabel("pass@k")
    ax.legend(fontsize=7)
    ax.set_title("pass@k (replay), mean over seeds")
    fig.tight_layout()
    path = os.path.join(out_dir, "passk.png")
    fig.savefig(path, dpi=90)
    written.append(("pass@k", path))
  plt.close(fig)
  return written


def compare(dirs: Sequence[str], out_dir: str, arm_specs: Sequence[str] = (), plots: bool = True,
            run_means: Sequence[str] = (), at: int | None = None) -> dict:
  """Reads the runs, groups them (by config, or by `--arm NAME=DIR,DIR` specs) and writes the report;
  `at`: every run as of that step (`at_step`)."""
  if at is not None and at < 0:
    raise ValueError(f"--at_step must be >= 0, got {at}")
  problems: list[tuple[str, str]] = []
  read = read_run if at is None else (lambda p: at_step(read_run(p), at))  # noqa: E731
  if arm_specs:
    arms = {}
    for spec in arm_specs:
      name, paths = parse_arm(spec)
      arms[name] = [read(p) for p in paths]
    runs = [read(d) for d in dirs]
    if runs:
      grouped, orphans = group_runs(runs)
      arms.update(grouped)
      problems += [(r.path, "no config.json: cannot assign an arm (use --arm)") for r in orphans]
  else:
    grouped, orphans = group_runs([read(d) for d in dirs])
    arms = grouped
    problems += [(r.path, p) for r in orphans for p in r.problems]
    problems += [(r.path, "left out: no config.json, so no arm (use --arm NAME=DIR)") for r in orphans]
  if not arms:
    raise ValueError("no readable run to compare: " + "; ".join(f"{p}: {m}" for p, m in problems))
  return build(arms, out_dir, problems, plots, run_means, at)


# ---- command line --------------------------------------------------------------------------------------

def _define_flags():
  from absl import flags  # pylint: disable=g-import-not-at-top
  out = flags.DEFINE_string("out", None, "Report directory (report.md, compare.json, *.png).", required=True)
  arm = flags.DEFINE_multi_string("arm", [], "An explicit arm, NAME=DIR,DIR (repeatable).")
  plot = flags.DEFINE_bool("plots", True, "Write PNG plots (matplotlib, Agg).")
  means = flags.DEFINE_list("run_means", [], "Metrics keys also reported as each seed's mean over the whole "
                            "run (e.g. clip_frac), aggregated like the rest.")
  at = flags.DEFINE_integer("at_step", None, "Compare every run as of this step (later lines ignored, phase "
                            "verdicts re-judged up to it): runs of different lengths at a common step.")
  return out, arm, plot, means, at


def entry() -> None:
  """`python -m rldyn.compare DIR [DIR ...] --out=REPORT_DIR` (console script `rldyn-compare`)."""
  import sys  # pylint: disable=g-import-not-at-top
  from absl import app  # pylint: disable=g-import-not-at-top
  from rldyn import cli  # pylint: disable=g-import-not-at-top
  out, arm, plot, means, at = _define_flags()

  def main(argv):
    dirs = argv[1:]
    if not dirs and not arm.value:
      raise app.UsageError("give run directories (DIR ...) or --arm NAME=DIR,DIR")
    try:
      result = compare(dirs, out.value, arm.value, plot.value, means.value, at.value)
    except ValueError as e:
      print(f"rldyn: error: {e}", file=sys.stderr, flush=True)
      sys.exit(2)
    for name, a in result["arms"].items():
      s = a["summary"]
      d = s["Δ pass@1"]
      ci = f" [{d['lo']:.3f}, {d['hi']:.3f}]" if d["lo"] is not None else ""
      mean = f"{d['mean']:+.3f}" if d["mean"] is not None else "n/a"
      print(f"  {name}: {len(a['runs'])} run(s), Δ held-out pass@1 {mean}{ci}")
    for p in result["problems"]:
      print(f"  problem: {p['run']}: {p['problem']}")
    print(f"Wrote {os.path.join(out.value, 'report.md')} (and compare.json, plots).")

  cli.run(main, __name__, guard=False)


if __name__ == "__main__":
  entry()
