"""From cached replay records to passk.json, sparsity.json, report.md and the PNG plots.

Everything here is a pure function of the records in replay.jsonl (plus the options' k grid), so the
files are rebuilt on every replay, cached or not, and always agree with each other.
"""

from __future__ import annotations

import math
import os

import numpy as np

from rldyn import workdir as workdir_lib
from rldyn.metrics import passk as passk_lib
from rldyn.metrics import writers
from rldyn.metrics import sparsity as sparsity_lib
from rldyn.replay import cache as cache_lib

BASE = 0
PASSK_DEFINITION = ("pass@k per problem = 1 - C(n-c,k)/C(n,k) = 1 - prod_{m=n-c+1}^{n} (1 - k/m) "
                    "(1 when n-c < k), averaged over problems; c = per_problem_correct")
RANK_DEFINITION = ("numerical rank of the fp32 update: singular values > rtol * sigma_max with "
                   "rtol = max(rows, cols) * eps_fp32 unless given; 3-D kernels viewed as "
                   "[E, H*D] / [H*D, E]; fraction of min(rows, cols)")


def write_json_atomic(path: str, obj) -> None:
  """Strict JSON, whole or not at all, by the workdir's single writer (local or gs:// paths)."""
  workdir_lib.write_json_atomic(path, cache_lib.canonical(obj), indent=1, strict=True)


def _label(step: int) -> str:
  return "base" if step == BASE else f"step {step}"


# ---- derived tables -----------------------------------------------------------------------------


def passk_table(records: dict[int, dict], ks: list[int]) -> dict:
  """The passk.json content: per model n, k, pass_at_k, per_problem_correct, and vs-base comparisons."""
  ks = [k for k in ks if all(k <= r["n"] for r in records.values())]
  base = records.get(BASE)
  out = []
  for step in sorted(records):
    r = records[step]
    c = r["per_problem_correct"]
    curve = passk_lib.pass_at_k_curve(r["n"], c, ks)
    entry = {"step": step, "model": _label(step), "n": r["n"], "k": ks,
             "pass_at_k": [curve[k] for k in ks], "per_problem_correct": c}
    if base is not None and step != BASE:
      entry["vs_base"] = {
          **passk_lib.compare_to_base(r["n"], base["per_problem_correct"], c, ks),
          "ppl_base_on_this": r["probe"]["ppl/base_on_this"],
          "ppl_this_on_base": r["probe"]["ppl/this_on_base"],
      }
    out.append(entry)
  n = records[min(records)]["n"] if records else None
  problems = records[min(records)]["problems"] if records else None
  return {"n": n, "k": ks, "problems": problems, "definition": PASSK_DEFINITION, "checkpoints": out}


def probe_table(records: dict[int, dict]) -> dict[int, dict]:
  """Per-model probe statistics plus ppl/execution_rel = exp(nll_exec − nll_exec(base))."""
  base = records.get(BASE)
  out = {}
  for step, r in sorted(records.items()):
    p = dict(r["probe"])
    b = base["probe"].get("nll/execution") if base else None
    x = p.get("nll/execution")
    p["ppl/execution_rel"] = math.exp(x - b) if x is not None and b is not None else None
    out[step] = p
  return out


def sparsity_table(records: dict[int, dict], comparisons: dict[int, dict], atols, other: str,
                   rank_rtol) -> dict:
  """The sparsity.json content."""
  ckpts = [{"step": s, **r["weights"]} for s, r in sorted(records.items()) if r.get("weights")]
  out = {"dtypes": list(sparsity_lib.DTYPES), "atols": [sparsity_lib.atol_key(a) for a in atols],
         "definition": "sparsity = 1 - (entries with |cast(theta_t) - cast(theta_0)| > atol) / n",
         "rank_definition": RANK_DEFINITION, "rank_rtol": rank_rtol, "checkpoints": ckpts}
  if other:
    out["compare"] = {
        "other": other,
        "definition": "overlap = |I1 & I2| / |I1| (I = entries updated, bf16); random = |I2| / n",
        "steps": [{"step": s, "same_base": r["same_base"], "overlap": r["overlap"]}
                  for s, r in sorted(comparisons.items())]}
  return out


# ---- markdown -----------------------------------------------------------------------------------


def _f(v, digits: int = 3) -> str:
  if v is None or (isinstance(v, float) and not math.isfinite(v)):
    return "–"
  if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
    return str(v)
  return f"{v:.{digits}f}"


def _pct(v) -> str:
  return "–" if v is None else f"{100 * v:.1f} %"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
  return (["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
          + ["| " + " | ".join(r) + " |" for r in rows])


def _boundary_sentence(entry: dict, n: int) -> str:
  v = entry["vs_base"]
  k = v["crossover_k"]
  if k is None:
    return (f"RL stays ahead of the base at every k ≤ {n}: within this sample budget it *expanded* "
            "the set of problems the model can solve (ProRL-like).")
  if k == min(entry["k"]) and not v["rl_ahead_at_1"]:
    return "RL is not ahead of the base even at k = 1 on the probe set."
  return (f"RL leads at small k but the base catches up at k = {k}: sharper on what it already "
          "solved, not broader (Yue et al.'s narrowing).")


def summary_lines(pk: dict, probe: dict[int, dict], sp: dict, settings: dict) -> list[str]:
  """The 'In short' paragraph: the run in five sentences."""
  lines = []
  entries = {e["step"]: e for e in pk["checkpoints"]}
  steps = sorted(entries)
  if not steps:
    return ["Nothing replayed yet."]
  last = steps[-1]
  n = pk["n"]
  base, fin = entries.get(BASE), entries[last]
  if base is not None and last != BASE:
    b1, bn = base["pass_at_k"][0], base["pass_at_k"][-1]
    r1, rn = fin["pass_at_k"][0], fin["pass_at_k"][-1]
    lines.append(f"- **Boundary.** pass@1 went from {b1:.3f} (base) to {r1:.3f} (step {last}); "
                 f"pass@{fin['k'][-1]} from {bn:.3f} to {rn:.3f}. " + _boundary_sentence(fin, n)
                 + f" ΔSE = pass@{n}(base) − pass@1(RL) = {fin['vs_base']['delta_se']:.3f}.")
    sv = fin["vs_base"]["solvable"]
    lines.append(f"- **Solvable sets** (≥ 1 correct of {n}): base {sv['base']}, step {last} {sv['rl']} "
                 f"of {sv['problems']} problems; {sv['base_only']} only the base solves, {sv['rl_only']} "
                 f"only RL solves. The base's perplexity on RL's responses is "
                 f"{_f(fin['vs_base']['ppl_base_on_this'])} (on its own: {_f(probe[BASE]['ppl/self'])}).")
    pb, pl = probe[BASE], probe[last]
    lines.append(
        f"- **Probe dynamics.** Entropy of planning tokens {_f(pb.get('entropy/planning'))} → "
        f"{_f(pl.get('entropy/planning'))}, of execution tokens {_f(pb.get('entropy/execution'))} → "
        f"{_f(pl.get('entropy/execution'))} nats; relative PPL of execution tokens "
        f"{_f(pl.get('ppl/execution_rel'))}; KL to base (k3) {_f(pl.get('kl/k3'), 4)}; response length "
        f"{_f(pb.get('response_len/mean'), 1)} → {_f(pl.get('response_len/mean'), 1)} tokens.")
  ck = {c["step"]: c for c in sp["checkpoints"]}
  if last in ck:
    w = ck[last]
    a0 = sp["atols"][0]
    lines.append(
        f"- **Weights.** At step {last}, {_pct(w['sparsity']['bf16'][a0])} of the weights are unchanged "
        f"in bf16 (atol {a0}) but {_pct(w['sparsity']['fp32'][a0])} in fp32"
        + (" — the sparsity is updates below bf16 resolution" if w['sparsity']['bf16'][a0]
           > w['sparsity']['fp32'][a0] + 0.05 else "")
        + f". The update's rank is {_pct(w['rank_frac_mean'])} of full on average over matrices.")
  if "compare" in sp and sp["compare"]["steps"]:
    c = sp["compare"]["steps"][-1]
    o = c["overlap"][sp["atols"][0]]
    lines.append(f"- **Seed overlap** with {sp['compare']['other']} at step {c['step']}: "
                 f"{_pct(o['overlap'])} of this run's updated weights were also updated there, vs "
                 f"{_pct(o['random'])} for a random mask of the same density.")
  return lines


def markdown(workdir: str, records: dict[int, dict], pk: dict, probe: dict[int, dict], sp: dict,
             settings: dict, plots: list[str]) -> str:
  steps = sorted(records)
  ck_steps = [s for s in steps if s != BASE]
  samp = settings["sampling"]
  task = settings["task"]
  out = [f"# Checkpoint replay: {workdir}", ""]
  out += [f"Probe set: {settings['probe']} held-out `{task['name']}` problems (eval seed "
          f"{settings['probe_seed']}, disjoint from training problems), **n = {settings['n']}** samples "
          f"each at temperature {samp['temperature']} (top-p {samp['top_p']}, top-k {samp['top_k']}, "
          f"≤ {samp['max_new_tokens']} new tokens), with the same prompts and sampling keys for every "
          f"model, so the comparisons are paired. Models: the base and {len(ck_steps)} checkpoint(s) "
          f"(steps {', '.join(map(str, ck_steps)) or '–'}).", ""]
  out += ["## In short", ""] + summary_lines(pk, probe, sp, settings) + [""]

  # Capability boundary.
  out += ["## Capability boundary (pass@k)", "",
          "Unbiased pass@k from n samples per problem, averaged over the probe set. If RL only sharpens "
          "what the base could already do, its curve starts higher but the base's overtakes it at "
          "large k (the *crossover k*).", ""]
  ks = pk["k"]
  out += _table(["model"] + [f"pass@{k}" for k in ks],
                [[e["model"]] + [_f(v) for v in e["pass_at_k"]] for e in pk["checkpoints"]])
  out += [""]
  if "passk.png" in plots:
    out += ["![pass@k curves](passk.png)", ""]
  vs = [e for e in pk["checkpoints"] if "vs_base" in e]
  if vs:
    out += ["Against the base (solvable = at least one correct sample of n; PPL = perplexity of one "
            "model on the other's sampled responses):", ""]
    rows = []
    for e in vs:
      v, sv = e["vs_base"], e["vs_base"]["solvable"]
      rows.append([e["model"], "none ≤ n" if v["crossover_k"] is None else str(v["crossover_k"]),
                   _f(v["delta_se"]), f"{sv['base']} / {sv['rl']} / {sv['both']}",
                   f"{sv['base_only']} / {sv['rl_only']}", _f(sv["jaccard"]),
                   _f(v["ppl_base_on_this"]), _f(v["ppl_this_on_base"])])
    out += _table(["model", "crossover k", "ΔSE", "solvable base / RL / both", "base-only / RL-only",
                   "Jaccard", "PPL_base(RL resp.)", "PPL_RL(base resp.)"], rows)
    out += ["", "ΔSE = pass@n(base) − pass@1(RL): what the base reaches with n tries that RL does not "
            "deliver in one. Crossover k = the smallest k on the grid where base ≥ RL.", ""]

  # Probe dynamics.
  out += ["## Probe dynamics", "",
          "On each model's own samples of the probe set. Entropy is the policy's full-vocabulary "
          "entropy at the sampled tokens, split by ground-truth token role (planning = tokens that "
          "choose strategy; execution = tokens that carry it out). Relative PPL of execution tokens is "
          "relative to the base; semantic entropy is the entropy of the planning-unit distribution "
          "(operands included, pooled over the probe set); strategy H is the per-problem entropy of "
          "strategy types (operands dropped; rldyn/metrics/strategy.py), distinct strategies and distinct "
          "correct solutions are counted per problem over its n samples; move errors are the "
          "fraction of written steps whose result is wrong (rldyn/metrics/procedure.py; countdown and "
          "arithmetic); KL "
          "is the k3 estimate of KL(π_θ‖π_base).", ""]
  rows = []
  for s in steps:
    p = probe[s]
    rows.append([_label(s), _f(p["accuracy"]), _f(p["entropy/all"]), _f(p["entropy/planning"]),
                 _f(p["entropy/execution"]), _f(p["ppl/execution_rel"]),
                 _f(p["semantic_entropy/planning"]), _f(p.get("strategy/entropy")),
                 _f(p.get("strategy/distinct_per_prompt"), 2),
                 _f(p.get("strategy/distinct_correct_per_prompt"), 2),
                 _f(p.get("strategy/first_move_entropy")), _f(p.get("procedure/move_error_rate")),
                 _f(p["kl/k3"], 4), _f(p["response_len/mean"], 1), _f(p["response_len/truncated_frac"])])
  out += _table(["model", "accuracy", "H all", "H planning", "H execution", "rel. PPL exec",
                 "sem. H planning", "strategy H", "distinct strat.", "distinct correct", "H first move",
                 "move errors", "KL k3", "length", "truncated"], rows)
  out += [""]
  for name, alt in (("entropy.png", "entropy by role"), ("dynamics.png", "probe dynamics")):
    if name in plots:
      out += [f"![{alt}]({name})", ""]

  # Weights.
  if sp["checkpoints"]:
    atols = sp["atols"]
    out += ["## Weights: where RL changed the model", "",
            "Fraction of weights unchanged relative to the base (sparsity), with both cast to bf16 "
            "(the published measurement) and in fp32, an entry unchanged iff |Δ| ≤ atol; and the "
            "numerical rank of Δ per matrix (fp32) as a fraction of full rank.", ""]
    rows = [[_label(c["step"])] + [_pct(c["sparsity"]["bf16"][a]) for a in atols]
            + [_pct(c["sparsity"]["fp32"][a]) for a in atols] + [_pct(c["rank_frac_mean"])]
            for c in sp["checkpoints"]]
    out += _table(["model"] + [f"bf16 atol {a}" for a in atols] + [f"fp32 atol {a}" for a in atols]
                  + ["mean rank"], rows)
    out += [""]
    if "sparsity.png" in plots:
      out += ["![sparsity by layer](sparsity.png)", ""]
    last = sp["checkpoints"][-1]
    a0 = atols[0]
    a_mid = sparsity_lib.atol_key(1e-5) if sparsity_lib.atol_key(1e-5) in atols else atols[-1]
    out += [f"Per matrix at step {last['step']}:", ""]
    rows = []
    for name, m in last["per_matrix"].items():
      rank = f"{m['rank']} / {m['full']}" if "rank" in m else "–"
      rows.append([f"`{name}`", "×".join(map(str, m["shape"])), _pct(m["bf16"][a0]),
                   _pct(m["bf16"][a_mid]), _pct(m["fp32"][a0]), rank])
    out += _table(["matrix", "shape", f"bf16 atol {a0}", f"bf16 atol {a_mid}", f"fp32 atol {a0}",
                   "rank(Δ)"], rows)
    out += ["", f"Rank tolerance: {RANK_DEFINITION}.", ""]
  if "compare" in sp:
    c = sp["compare"]
    out += ["## Overlap of updated weights with another run", "",
            f"Other run: `{c['other']}`. overlap = |I₁∩I₂| / |I₁| where I is the set of weights a run "
            "updated (bf16); random = |I₂| / n, the overlap a random mask of the other run's density "
            "would have.", ""]
    rows = []
    for e in c["steps"]:
      rows.append([str(e["step"]), "yes" if e["same_base"] else "NO"]
                  + [f"{_pct(e['overlap'][a]['overlap'])} vs {_pct(e['overlap'][a]['random'])}"
                     for a in sp["atols"]])
    out += _table(["step", "same base"] + [f"atol {a}" for a in sp["atols"]], rows) + [""]

  # Examples.
  out += ["## Same prompt, same key, across checkpoints", ""]
  first = records[steps[0]].get("examples") or []
  for i, ex in enumerate(first):
    out += [f"Problem: `{ex['prompt'].strip()}` (answer `{ex['answer']}`)", "", "```"]
    for s in steps:
      e = (records[s].get("examples") or [])[i] if i < len(records[s].get("examples") or []) else None
      if e is not None:
        mark = "✓" if e["correct"] else "✗"
        out.append(f"{_label(s):>10} {mark} {e['response'].strip()[:300]}")
    out += ["```", ""]

  # Timing and files.
  out += ["## Replay cost", ""]
  rows = []
  for s in steps:
    t = records[s].get("time_s") or {}
    rows.append([_label(s)] + [_f(t.get(k), 1) for k in ("sample", "score", "host", "weights", "total")])
  out += _table(["model", "sample s", "score s", "host s", "weights s", "total s"], rows) + [""]
  out += ["## Files", "",
          "- `replay.jsonl`: one line per replayed model (the cache; a rerun computes only new "
          "checkpoints).",
          "- `passk.json`: per model `n`, `k`, `pass_at_k`, `per_problem_correct` (recompute any curve: "
          f"{PASSK_DEFINITION}).",
          "- `sparsity.json`: overall and per-matrix sparsity (bf16 and fp32, atol sweep) and rank "
          "fractions" + (", and the overlap with the compared run." if "compare" in sp else "."),
          "- " + ", ".join(f"`{p}`" for p in plots) if plots else "- (plots disabled)", ""]
  return "\n".join(out)


def write_all(out_dir: str, workdir: str, records: dict[int, dict], comparisons: dict[int, dict], opts,
              settings: dict, other: str = "") -> list[str]:
  """Writes passk.json, sparsity.json, report.md and (opts.plots) the PNGs; returns the paths."""
  pk = passk_table(records, opts.k_grid())
  probe = probe_table(records)
  sp = sparsity_table(records, comparisons, opts.atols, other, opts.rank_rtol)
  files = [os.path.join(out_dir, workdir_lib.REPLAY_PASSK), os.path.join(out_dir, workdir_lib.REPLAY_SPARSITY)]
  write_json_atomic(files[0], pk)
  write_json_atomic(files[1], sp)
  plots = []
  if opts.plots and records:
    from rldyn.replay import plots as plots_lib  # pylint: disable=g-import-not-at-top
    steps = sorted(records)
    plots_lib.passk_plot(os.path.join(out_dir, "passk.png"),
                         {e["step"]: dict(zip(e["k"], e["pass_at_k"])) for e in pk["checkpoints"]})
    plots_lib.entropy_plot(os.path.join(out_dir, "entropy.png"), steps, probe)
    plots_lib.dynamics_plot(os.path.join(out_dir, "dynamics.png"), steps, probe)
    plots = ["passk.png", "entropy.png", "dynamics.png"]
    weights = {s: r["weights"] for s, r in records.items() if r.get("weights")}
    if weights:
      plots_lib.sparsity_plot(os.path.join(out_dir, "sparsity.png"), weights, sp["atols"])
      plots.append("sparsity.png")
  report_path = os.path.join(out_dir, workdir_lib.REPLAY_REPORT)
  if writers.is_writer():
    writers.write_bytes_atomic(report_path, markdown(workdir, records, pk, probe, sp, settings, plots).encode())
  return files + [os.path.join(out_dir, p) for p in plots] + [report_path]
