"""Host-side role statistics: semantic entropy of planning (docs/metrics.md) and its stand-in groups.

Semantic entropy (HICRA's sense): the Shannon entropy of the frequency distribution of strategic-gram
groups used in a step's responses, H = −Σ_g p_g log p_g; m equally used groups give log m, one gives 0.

Until a strategic-gram lexicon is configured, the groups are the task's planning units: each maximal
run of consecutive planning tokens in a response (e.g. `try 5 * 3`) is one use of the group named by
its token ids. Pooled over the step's prompts and operands included, this value grows with the number
of prompts and the response length; rldyn/metrics/strategy.py estimates strategy diversity per prompt
on operand-free strategy types (`strategy/*`), which the phase detector reads by default.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Sequence

import numpy as np

from rldyn.roles.ids import PLANNING


def semantic_entropy(group_uses: Iterable[Hashable]) -> float:
  """H of the empirical distribution of group uses (natural log); 0.0 when nothing was used."""
  counts = np.array(list(Counter(group_uses).values()), np.float64)
  if counts.size == 0:
    return 0.0
  p = counts / counts.sum()
  return float(-(p * np.log(p)).sum())


def planning_units(ids: Sequence[int], roles: Sequence[int]) -> list[tuple[int, ...]]:
  """Maximal runs of consecutive planning tokens, as token-id tuples."""
  units, cur = [], []
  for tok, role in zip(ids, roles):
    if role == PLANNING:
      cur.append(int(tok))
    elif cur:
      units.append(tuple(cur))
      cur = []
  if cur:
    units.append(tuple(cur))
  return units
