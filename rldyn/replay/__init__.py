"""Checkpoint replay analysis: what changed, checkpoint by checkpoint (docs/replay.md, docs/metrics.md).

    python -m rldyn.replay --workdir=/tmp/rldyn/two_phase [--steps=100,200] [--n=64] [--probe=128]

    from rldyn.replay import ReplayOptions, replay
    result = replay(workdir, ReplayOptions(n=64, probe=128))

For the base and every checkpoint of an RL run, on a fixed held-out probe set with paired sampling keys:
pass@k curves and the boundary comparisons (crossover k, ΔSE, solvable sets, cross-model perplexity);
role-split entropy, relative execution PPL, planning semantic entropy, KL to base, length, accuracy;
update sparsity (bf16 and fp32, atol sweep), rank of Δ per matrix, and (--compare) overlap of the
updated weights with another run. Results are cached per checkpoint in DIR/replay/replay.jsonl, so a
rerun only replays new checkpoints; DIR/replay/ then gets passk.json, sparsity.json, report.md, *.png.

Modules: runner (orchestration, options), probe (sampling/scoring/statistics on the probe set), cache
(replay.jsonl), report and plots (the outputs), progress (the progress bar). The measures themselves
live in rldyn.metrics.passk and rldyn.metrics.sparsity.
"""

from rldyn.replay.runner import ReplayOptions, ReplayResult, replay, replay_dir

__all__ = ["ReplayOptions", "ReplayResult", "replay", "replay_dir"]
