"""Mining strategic grams (HICRA): n-grams of correct responses, grouped, ranked by CDF.

Candidates are the word n-grams (3-5 words by default) found in >= min_df distinct texts, usually the
correct responses of a run or verified reference traces. Each n-gram is its own group, or, given an
embedding function, n-grams are grouped by meaning with k-means. A group's Cluster Document Frequency
(CDF) is the number of distinct texts containing >= 1 of its n-grams; the top 20 % of groups by CDF
form the lexicon.

    texts = read_texts(workdir)                         # the correct responses of samples.jsonl
    lex = mine_lexicon(texts, n_min=3, n_max=5, top_frac=0.2)
    lex.save("lexicon.json")
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
import json
import math
import os
from typing import Any

import numpy as np

from rldyn.roles.lexicon import Group, Lexicon
from rldyn.roles.words import MatchOptions, words_with_spans


def doc_ngrams(texts: Iterable[str], n_min: int, n_max: int,
               opts: MatchOptions) -> list[set[tuple[str, ...]]]:
  """The set of distinct word n-grams (n_min <= n <= n_max) of each text."""
  out = []
  for text in texts:
    words, _ = words_with_spans(text, opts)
    out.append({tuple(words[i:i + n]) for n in range(n_min, n_max + 1)
                for i in range(len(words) - n + 1)})
  return out


def kmeans(x: np.ndarray, k: int, *, seed: int = 0, iters: int = 100) -> np.ndarray:
  """Lloyd's k-means with k-means++ seeding (numpy); labels [N] in 0..k-1."""
  x = np.asarray(x, np.float64)
  n = len(x)
  k = min(k, n)
  rng = np.random.default_rng(seed)
  centers = [x[rng.integers(n)]]
  d2 = ((x - centers[0]) ** 2).sum(1)
  for _ in range(1, k):
    total = d2.sum()
    idx = rng.choice(n, p=d2 / total) if total > 0 else rng.integers(n)
    centers.append(x[idx])
    d2 = np.minimum(d2, ((x - x[idx]) ** 2).sum(1))
  c = np.stack(centers)
  labels = np.full(n, -1)
  for _ in range(iters):
    dist = (x ** 2).sum(1)[:, None] - 2 * x @ c.T + (c ** 2).sum(1)[None]
    new = dist.argmin(1)
    if np.array_equal(new, labels):
      break
    labels = new
    for j in range(k):
      members = x[labels == j]
      if len(members):
        c[j] = members.mean(0)
  return labels


def embedding_groups(cands: Sequence[tuple[str, ...]], embed: Callable[[list[str]], np.ndarray],
                     num_groups: int | None, seed: int) -> list[list[tuple[str, ...]]]:
  """`cands` grouped by k-means over their L2-normalised embeddings (default ceil(sqrt(N)) groups)."""
  if not cands:
    return []
  e = np.asarray(embed([" ".join(g) for g in cands]), np.float64)
  if e.shape[0] != len(cands):
    raise ValueError(f"embed returned {e.shape[0]} rows for {len(cands)} n-grams")
  e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
  k = num_groups or math.ceil(math.sqrt(len(cands)))
  labels = kmeans(e, k, seed=seed)
  return [[g for g, lab in zip(cands, labels) if lab == j] for j in sorted(set(labels))]


def mine_lexicon(texts: Sequence[str], *, n_min: int = 3, n_max: int = 5, top_frac: float = 0.2,
                 min_df: int = 2, embed: Callable[[list[str]], np.ndarray] | None = None,
                 num_groups: int | None = None, match: MatchOptions = MatchOptions(),
                 seed: int = 0, meta: Mapping[str, Any] | None = None) -> Lexicon:
  """Strategic grams of `texts` (usually the correct responses), HICRA-style.

  Candidates: word n-grams with n_min <= n <= n_max found in >= min_df distinct texts. Grouping: each
  n-gram alone (exact identity), or, with `embed(list[str]) -> [N, D]`, k-means over the L2-normalised
  embeddings into `num_groups` groups (default ceil(sqrt(N))). CDF(group) = number of distinct texts
  containing >= 1 of its n-grams. Kept: the top ceil(top_frac * groups) groups by CDF (ties broken by
  more words, then alphabetically, so the result is deterministic). Group ids: "g<rank>".
  """
  if not 1 <= n_min <= n_max:
    raise ValueError(f"need 1 <= n_min <= n_max, got {n_min}, {n_max}")
  if not 0 < top_frac <= 1:
    raise ValueError(f"top_frac must be in (0, 1], got {top_frac}")
  docs = doc_ngrams(texts, n_min, n_max, match)
  df = Counter(g for d in docs for g in d)
  cands = sorted(g for g, c in df.items() if c >= min_df)
  if embed is None:
    members = [[g] for g in cands]
  else:
    members = embedding_groups(cands, embed, num_groups, seed)
  index = {g: i for i, grp in enumerate(members) for g in grp}
  cover: list[set[int]] = [set() for _ in members]
  for d_i, d in enumerate(docs):
    for g in d:
      if g in index:
        cover[index[g]].add(d_i)
  scored = sorted(((len(cover[i]), grp) for i, grp in enumerate(members)),
                  key=lambda s: (-s[0], -max(len(g) for g in s[1]), s[1]))
  keep = scored[:math.ceil(top_frac * len(scored))]
  groups = tuple(Group(f"g{r}", tuple(" ".join(g) for g in sorted(grp, key=lambda g: -df[g])), cdf)
                 for r, (cdf, grp) in enumerate(keep))
  info = {"n": [n_min, n_max], "top_frac": top_frac, "min_df": min_df, "docs": len(docs),
          "candidates": len(cands), "grouping": "exact" if embed is None else "kmeans",
          "groups_scored": len(scored), **(meta or {})}
  return Lexicon(groups, match, info)


def read_texts(path: str, field: str = "response", correct_only: bool = True) -> list[str]:
  """Texts from a JSONL file, a samples/ dir or a workdir (samples/samples.jsonl).

  correct_only: keep records whose "correct" is true (records without the key are kept).
  """
  for cand in (path, os.path.join(path, "samples.jsonl"),
               os.path.join(path, "samples", "samples.jsonl")):
    if os.path.isfile(cand):
      path = cand
      break
  else:
    raise FileNotFoundError(f"no JSONL at {path} (nor samples.jsonl, samples/samples.jsonl in it)")
  out = []
  with open(path) as f:
    for line in f:
      if not line.strip():
        continue
      rec = json.loads(line)
      if correct_only and not rec.get("correct", True):
        continue
      if field not in rec:
        raise KeyError(f"{path}: a record has no field {field!r} (keys: {sorted(rec)})")
      out.append(str(rec[field]))
  return out


def reference_traces(task: Any, num: int, seed: int, correct_only: bool = True
                     ) -> list[tuple[Any, str]]:
  """(problem, trace) pairs drawn with np.random.default_rng(seed), optionally only verified ones."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(num):
    problem = task.sample_problem(rng)
    trace = task.reference_trace(problem, rng)
    if not correct_only or task.verify(problem, trace):
      out.append((problem, trace))
  return out
