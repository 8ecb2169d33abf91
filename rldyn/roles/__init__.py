"""Token roles: ground truth, strategic-gram lexicons (HICRA), placebo masks and tag spans.

On a real model nobody hands us per-token roles, so the planning/execution split comes from text, as
in HICRA (Wang et al. 2025, arXiv 2509.03646; docs/roles.md): *strategic grams* are 3-5-word n-grams
mined from correct responses, grouped by meaning, scored by Cluster Document Frequency (CDF = number
of distinct responses containing >= 1 n-gram of the group); the top 20 % of groups form the lexicon.
A token is planning iff its character span overlaps a matched occurrence; every other non-special
token is execution. Matching is on words of the decoded text, and character spans map back to tokens
through the tokenizer's offsets (token-id windows break under BPE).

    from rldyn import roles
    tagger = roles.make_tagger("lexicon", task)         # the task's shipped lexicon
    r = tagger(ids_list, texts, step)                   # [int8 [T_i]]: 0 other, 1 planning, 2 execution
    lex = roles.load_lexicon("math_en")                 # a shipped name, or a path to a JSON file
    semantic_entropy(roles.group_uses(texts, lex))      # planning diversity of a step (docs/metrics.md)

Modules, one concern each:
  ids         the role ids OTHER, PLANNING, EXECUTION and ROLE_NAMES (imports nothing).
  words       splitting text into words, MatchOptions (case, `<num>` placeholder).
  lexicon     Lexicon, Group, JSON load/save, the lexicons shipped in rldyn/data.
  matcher     Matcher (n-gram occurrences in text), group_uses, planning_semantic_entropy.
  tokenizers  tokenizers with character offsets; character masks -> token roles.
  taggers     the Tagger protocol, TAGGERS (structural, lexicon, placebo, spans), make_tagger.
  mining      mine_lexicon (n-grams, k-means groups, CDF ranking) and its text sources.
  validation  lexicon roles vs ground truth, high-entropy planning fraction (imports jax).
  __main__    the CLI: `python -m rldyn.roles mine|validate` (`rldyn-roles`).

This package loads its modules on first use of a name below, so importing `rldyn.roles.ids` costs
nothing and cannot form an import cycle (rldyn.tasks and rldyn.metrics import the role ids), and
`import rldyn.roles` never imports jax: only the validation names do.
"""

import importlib
from typing import Any

from rldyn.roles.ids import EXECUTION, OTHER, PLANNING, ROLE_NAMES

# Public name -> the module of this package that defines it.
_EXPORTS = {
    **dict.fromkeys(("NUM", "MatchOptions", "ngram_words", "words_with_spans"), "words"),
    **dict.fromkeys(("Group", "Lexicon", "default_lexicon_name", "lexicon_path", "load_lexicon",
                     "shipped_lexicons"), "lexicon"),
    **dict.fromkeys(("Matcher", "Occurrence", "group_uses", "planning_semantic_entropy"), "matcher"),
    **dict.fromkeys(("HFTextTokenizer", "SyntheticTextTokenizer", "TextTokenizer",
                     "roles_from_char_mask", "text_tokenizer"), "tokenizers"),
    **dict.fromkeys(("DEFAULT_SPAN_PATTERNS", "TAGGERS", "LexiconTagger", "PlaceboTagger", "SpanTagger",
                     "StructuralTagger", "Tagger", "lexicon_roles", "lexicon_roles_batch",
                     "make_tagger", "tag_text"), "taggers"),
    **dict.fromkeys(("doc_ngrams", "kmeans", "mine_lexicon", "read_texts", "reference_traces"),
                    "mining"),
    **dict.fromkeys(("high_entropy_planning_frac", "model_entropies", "planning_prf",
                     "validate_texts", "validate_workdir"), "validation"),
}
__all__ = ["EXECUTION", "OTHER", "PLANNING", "ROLE_NAMES", *_EXPORTS]


def __getattr__(name: str) -> Any:
  if name not in _EXPORTS:
    raise AttributeError(f"module 'rldyn.roles' has no attribute {name!r}")
  value = getattr(importlib.import_module(f"rldyn.roles.{_EXPORTS[name]}"), name)
  globals()[name] = value
  return value


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(_EXPORTS))
