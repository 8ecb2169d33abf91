"""Strategic-gram lexicons: groups of n-grams with one meaning, stored as JSON.

Lexicon JSON: {"version": 1, "groups": [{"id", "ngrams": [...], "cdf"}], "meta": {..., "match":
{"case_sensitive": false, "number_placeholder": false}}}. Shipped lexicons live in rldyn/data/:
  lexicon_math_en.json    hand-curated English planning phrases for math reasoning, grouped by meaning.
  lexicon_countdown.json  mined from correct countdown reference traces; regenerate with
      python -m rldyn.roles mine --task=countdown --traces=2000 --seed=0 \\
          --out=rldyn/data/lexicon_countdown.json

    lex = load_lexicon("math_en")                       # a shipped name, or a path to a JSON file
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
import dataclasses
import json
import os
from typing import Any

from rldyn.roles.words import MatchOptions, ngram_words

LEXICON_VERSION = 1
DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
# The lexicon a task uses when none is configured; any other task uses math_en.
DEFAULT_LEXICONS = {"countdown": "countdown"}
FALLBACK_LEXICON = "math_en"


@dataclasses.dataclass(frozen=True)
class Group:
  """A strategic-gram group: n-grams with one meaning, and its Cluster Document Frequency."""
  id: str
  ngrams: tuple[str, ...]
  cdf: int | None = None  # None for hand-curated groups.


@dataclasses.dataclass(frozen=True)
class Lexicon:
  """Strategic-gram groups plus the word normalisation they were built with."""
  groups: tuple[Group, ...]
  match: MatchOptions = MatchOptions()
  meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    ids = [g.id for g in self.groups]
    if len(set(ids)) != len(ids):
      raise ValueError(f"lexicon group ids must be unique, got duplicates "
                       f"{sorted(k for k, c in Counter(ids).items() if c > 1)}")
    seen: dict[tuple[str, ...], str] = {}
    for g in self.groups:
      for ng in g.ngrams:
        key = ngram_words(ng, self.match)
        if not key:
          raise ValueError(f"lexicon group {g.id!r} has an n-gram with no words: {ng!r}")
        if seen.get(key, g.id) != g.id:
          raise ValueError(f"n-gram {ng!r} is in groups {seen[key]!r} and {g.id!r}")
        seen[key] = g.id

  def to_json(self) -> dict:
    return {"version": LEXICON_VERSION,
            "groups": [{"id": g.id, "ngrams": list(g.ngrams), "cdf": g.cdf} for g in self.groups],
            "meta": {**self.meta, "match": dataclasses.asdict(self.match)}}

  @classmethod
  def from_json(cls, d: Mapping[str, Any]) -> Lexicon:
    if d.get("version") != LEXICON_VERSION:
      raise ValueError(f"lexicon version {d.get('version')!r} is not {LEXICON_VERSION}")
    meta = dict(d.get("meta", {}))
    match = MatchOptions(**meta.pop("match", {}))
    groups = tuple(Group(str(g["id"]), tuple(str(n) for n in g["ngrams"]),
                         None if g.get("cdf") is None else int(g["cdf"])) for g in d["groups"])
    return cls(groups, match, meta)

  def save(self, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    d = self.to_json()
    groups = ",\n  ".join(json.dumps(g) for g in d["groups"])  # one group per line
    with open(tmp, "w") as f:
      f.write(f'{{"version": {d["version"]},\n "meta": {json.dumps(d["meta"])},\n'
              f' "groups": [\n  {groups}\n ]}}\n')
    os.replace(tmp, path)


def shipped_lexicons() -> list[str]:
  """Names of the lexicons shipped in rldyn/data (lexicon_<name>.json)."""
  if not os.path.isdir(DATA_DIR):
    return []
  return sorted(f[len("lexicon_"):-len(".json")] for f in os.listdir(DATA_DIR)
                if f.startswith("lexicon_") and f.endswith(".json"))


def lexicon_path(name_or_path: str) -> str:
  """A path for a shipped lexicon name ("math_en") or a path; raises if neither exists."""
  if os.path.isfile(name_or_path):
    return name_or_path
  shipped = os.path.join(DATA_DIR, f"lexicon_{name_or_path}.json")
  if os.path.isfile(shipped):
    return shipped
  raise FileNotFoundError(f"no lexicon file {name_or_path!r}; shipped lexicons: "
                          f"{', '.join(shipped_lexicons())}")


def load_lexicon(name_or_path: str) -> Lexicon:
  with open(lexicon_path(name_or_path)) as f:
    return Lexicon.from_json(json.load(f))


def default_lexicon_name(task: Any) -> str:
  return DEFAULT_LEXICONS.get(getattr(task, "name", ""), FALLBACK_LEXICON)
