"""The replay report's PNG figures. matplotlib is imported here, lazily, with the Agg backend."""

from __future__ import annotations

import numpy as np


def _plt():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def short_name(path: str) -> str:
  """'layers/3/self_attn/q_proj/kernel' → '3.q_proj'; 'embed_tokens/embedding' → 'embed_tokens'."""
  parts = [p for p in path.split("/") if p not in ("kernel", "scale", "embedding", "bias")]
  if len(parts) >= 2 and parts[0] == "layers":
    return f"{parts[1]}.{parts[-1]}"
  return parts[-1] if parts else path


def _colors(plt, count: int):
  cmap = plt.get_cmap("viridis")
  return [cmap(x) for x in np.linspace(0.15, 0.9, max(count, 1))]


def passk_plot(path: str, curves: dict[int, dict[int, float]]) -> None:
  """pass@k against k (log2 axis): the base dashed black, checkpoints coloured by step."""
  plt = _plt()
  fig, ax = plt.subplots(figsize=(7, 4.5))
  steps = [s for s in sorted(curves) if s != 0]
  for s, color in zip(steps, _colors(plt, len(steps))):
    ks = sorted(curves[s])
    ax.plot(ks, [curves[s][k] for k in ks], "o-", ms=3, color=color, label=f"step {s}")
  if 0 in curves:
    ks = sorted(curves[0])
    ax.plot(ks, [curves[0][k] for k in ks], "s--", ms=4, color="black", label="base")
  ax.set_xscale("log", base=2)
  ax.set_xlabel("k (samples allowed per problem)")
  ax.set_ylabel("pass@k on the probe set")
  ax.set_ylim(-0.02, 1.02)
  ax.grid(alpha=0.3)
  ax.set_title("Capability boundary: does RL expand or narrow what the model can solve?")
  ax.legend(fontsize=8, ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def entropy_plot(path: str, steps: list[int], probe: dict[int, dict]) -> None:
  """Mean token entropy by role (all / planning / execution) over checkpoints (step 0 = base)."""
  plt = _plt()
  fig, ax = plt.subplots(figsize=(7, 4))
  for key, style in (("entropy/all", "k-"), ("entropy/planning", "o-"), ("entropy/execution", "s-")):
    ax.plot(steps, [_num(probe[s].get(key)) for s in steps], style, ms=4, label=key.split("/")[1])
  ax.set_xlabel("RL step (0 = base)")
  ax.set_ylabel("mean token entropy (nats)")
  ax.set_title("Entropy by token role on the probe set")
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def dynamics_plot(path: str, steps: list[int], probe: dict[int, dict]) -> None:
  """A grid of the other probe statistics over checkpoints."""
  plt = _plt()
  panels = (("accuracy", "accuracy (pass@1)"), ("ppl/execution_rel", "rel. PPL of execution tokens"),
            ("semantic_entropy/planning", "semantic entropy of planning"), ("kl/k3", "KL to base (k3)"),
            ("response_len/mean", "response length (tokens)"),
            ("ppl/base_on_this", "base's PPL on this model's responses"),
            ("strategy/entropy", "strategy entropy (per problem)"),
            ("strategy/distinct_correct_per_prompt", "distinct correct solutions / problem"),
            ("strategy/first_move_entropy", "first-move entropy (per problem)"))
  fig, axes = plt.subplots(3, 3, figsize=(11, 8))
  for ax, (key, title) in zip(axes.flat, panels):
    ax.plot(steps, [_num(probe[s].get(key)) for s in steps], "o-", ms=4)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("RL step", fontsize=8)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def sparsity_plot(path: str, weights: dict[int, dict], atols: list[str]) -> None:
  """Unchanged fraction and rank fraction per matrix (by layer) at the last checkpoint; overall by step."""
  plt = _plt()
  steps = sorted(weights)
  last = weights[steps[-1]]
  names = list(last["per_matrix"])
  x = np.arange(len(names))
  fig, axes = plt.subplots(3, 1, figsize=(max(8, 0.28 * len(names) + 2), 10))
  ax = axes[0]
  for s, color in zip(steps[:-1], _colors(plt, len(steps))):
    ax.plot(x, [weights[s]["per_matrix"][p]["bf16"][atols[0]] for p in names], "-", lw=0.7,
            color=color, alpha=0.6)
  for atol, style in zip(atols, ("o-", "s-", "^-", "v-", "d-")):
    ax.plot(x, [last["per_matrix"][p]["bf16"][atol] for p in names], style, ms=3,
            label=f"bf16, atol {atol}")
  ax.plot(x, [last["per_matrix"][p]["fp32"][atols[0]] for p in names], "k--", lw=1,
          label=f"fp32, atol {atols[0]}")
  ax.set_xticks(x, [short_name(p) for p in names], rotation=90, fontsize=7)
  ax.set_ylabel("fraction unchanged")
  ax.set_ylim(-0.02, 1.02)
  ax.set_title(f"Update sparsity by matrix, step {steps[-1]} (thin lines: earlier checkpoints, "
               f"bf16 atol {atols[0]})", fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  ax = axes[1]
  ranks = [last["per_matrix"][p].get("rank_frac") for p in names]
  ax.bar(x, [np.nan if r is None else r for r in ranks], color="tab:purple")
  ax.set_xticks(x, [short_name(p) for p in names], rotation=90, fontsize=7)
  ax.set_ylabel("rank(Δ) / min(shape)")
  ax.set_ylim(0, 1.05)
  ax.set_title(f"Rank of the update per matrix (fp32), step {steps[-1]}", fontsize=9)
  ax.grid(alpha=0.3, axis="y")
  ax = axes[2]
  for atol, style in zip(atols, ("o-", "s-", "^-", "v-", "d-")):
    ax.plot(steps, [weights[s]["sparsity"]["bf16"][atol] for s in steps], style, ms=4,
            label=f"bf16, atol {atol}")
  ax.plot(steps, [weights[s]["sparsity"]["fp32"][atols[0]] for s in steps], "k--",
          label=f"fp32, atol {atols[0]}")
  ax.set_xlabel("RL step")
  ax.set_ylabel("fraction unchanged (all weights)")
  ax.set_ylim(-0.02, 1.02)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _num(v) -> float:
  return float("nan") if v is None else float(v)

