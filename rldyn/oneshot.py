"""One-shot RLVR (Wang et al. 2025): choose the training problem, then train on it alone.

    python -m rldyn.oneshot rank --workdir=RUN [--top=10] [--min_steps=2]

ranks the training problems of an ordinary RL run by the **historical variance** of their accuracy: for
each problem uid in RUN/samples/samples.jsonl, a_s = the fraction of its logged responses the verifier
accepted at step s, and the score is the population variance of (a_s) over the steps that logged it
(Wang et al. rank by its standard deviation: the same order). Problems logged at fewer than `min_steps`
steps have no history and are left out. It prints the top problems with the exact override that trains
on one of them:

    --config.task.fixed_problem='{"answer":...,"data":...,"prompt":...,"uid":...}'

Notes. samples.jsonl holds the first `log.samples` rows of every `log.every`-th step (docs/workdir.md),
so rank a run made for it: `experiments/oneshot.py:rank` logs every row of every step. A problem needs to
recur to have a history: the RL stream draws problems i.i.d. from the task's world, so rank a world small
enough to repeat problems (the smoke countdown world does) or a long run. The full Problem is
regenerated from the run's own config (a step's problems are a pure function of seed and step).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Sequence
import dataclasses

import numpy as np

from rldyn.tasks import oneshot as oneshot_task
from rldyn.tasks.base import Problem
from rldyn.workdir import Workdir


@dataclasses.dataclass(frozen=True)
class Ranked:
  uid: str
  prompt: str
  variance: float  # population variance of the per-step accuracies
  mean: float  # mean of the per-step accuracies
  steps: int  # steps at which the problem was logged
  first_step: int  # the first of them (the problem is regenerated from it)


def rank_samples(samples: Iterable[dict], min_steps: int = 2) -> list[Ranked]:
  """Problems by decreasing historical accuracy variance (ties: higher mean first, then uid)."""
  if min_steps < 2:
    raise ValueError(f"a variance needs at least 2 steps of history; got min_steps={min_steps}")
  by = collections.defaultdict(lambda: collections.defaultdict(list))
  prompts = {}
  for row in samples:
    if not all(k in row for k in ("step", "problem", "correct")):
      continue
    by[row["problem"]][int(row["step"])].append(bool(row["correct"]))
    prompts.setdefault(row["problem"], row.get("prompt", ""))
  out = []
  for uid, steps in by.items():
    if len(steps) < min_steps:
      continue
    acc = np.array([np.mean(v) for _, v in sorted(steps.items())])
    out.append(Ranked(uid, prompts[uid], float(acc.var()), float(acc.mean()), len(acc), min(steps)))
  return sorted(out, key=lambda r: (-r.variance, -r.mean, r.uid))


def step_problems(cfg, task, step: int) -> list[Problem]:
  from rldyn.rl import rollout  # pylint: disable=g-import-not-at-top  (jax)
  return rollout.step_problems(cfg, task, step)


def find_problem(cfg, task, uid: str, steps: Iterable[int]) -> Problem:
  """The training problem `uid` of the run configured by cfg, looked up in the given steps' draws."""
  for s in steps:
    for p in step_problems(cfg, task, s):
      if p.uid == uid:
        return p
  raise ValueError(f"problem {uid} is not among the training problems of the steps searched; pass the "
                   "problem as JSON (python -m rldyn.oneshot rank prints it)")


def wrap(cfg, task):
  """The RL loop's task: `task` itself, or with `task.fixed_problem` set, the one-problem wrapper.

  A uid is looked up in the training stream of this config's first rl.steps steps.
  """
  value = cfg.task.fixed_problem
  if not value:
    return task
  problem = oneshot_task.parse_problem(task, value)
  if problem is None:
    problem = find_problem(cfg, task, value.strip(), range(cfg.rl.steps))
  return oneshot_task.FixedProblemTask(task, problem)


def rank(workdir: str, top: int = 10, min_steps: int = 2) -> list[tuple[Ranked, Problem]]:
  """The top problems of a run's samples, each with its regenerated Problem."""
  wd = Workdir(workdir)
  cfg, task = wd.load_config()
  samples = wd.read_samples()
  if not samples:
    raise ValueError(f"{wd.samples_path} has no samples: rank a run that logged samples (log.samples > 0)")
  ranked = rank_samples(samples, min_steps)[:top]
  return [(r, find_problem(cfg, task, r.uid, [r.first_step])) for r in ranked]


def main(argv: Sequence[str]) -> None:
  import sys  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  if len(argv) != 2 or argv[1] != "rank":
    print("usage: python -m rldyn.oneshot rank --workdir=RUN [--top=N] [--min_steps=S]", file=sys.stderr)
    sys.exit(2)
  try:
    rows = rank(f.workdir, f.top, f.min_steps)
  except (ValueError, FileNotFoundError) as e:
    print(f"rldyn: error: {e}", file=sys.stderr, flush=True)
    sys.exit(2)
  if not rows:
    print(f"no problem was logged at {f.min_steps} or more steps: nothing to rank (see "
          "`python -m rldyn.oneshot --help`)")
    return
  print(f"{'rank':>4}  {'variance':>8}  {'mean acc':>8}  {'steps':>5}  problem")
  for i, (r, _) in enumerate(rows, 1):
    print(f"{i:>4}  {r.variance:8.4f}  {r.mean:8.3f}  {r.steps:>5}  {r.uid}  {r.prompt}")
  print("\nTrain on the top problem with:\n  --config.task.fixed_problem='"
        f"{oneshot_task.problem_json(rows[0][1])}'")


def entry() -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  from rldyn import cli  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("workdir", None, "The RL run whose samples/ to rank.", required=True)
  flags.DEFINE_integer("top", 10, "How many problems to print.")
  flags.DEFINE_integer("min_steps", 2, "Least steps a problem must be logged at to be ranked.")
  cli.run(main, __name__, guard=False)


if __name__ == "__main__":
  entry()
