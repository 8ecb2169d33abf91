"""Mine a strategic-gram lexicon, or check one against the ground-truth token roles.

    python -m rldyn.roles mine --samples=WORKDIR/samples --out=lexicon.json  # its correct samples
    python -m rldyn.roles mine --samples=texts.jsonl --field=text --all_responses --out=lexicon.json
    python -m rldyn.roles mine --task=countdown --traces=2000 --out=lexicon.json  # reference traces
    python -m rldyn.roles validate --workdir=WORKDIR [--lexicon=PATH] [--entropy_model=base|final|none]
    python -m rldyn.roles validate --task=countdown --traces=1000 --seed=1 --out=report.json

mine writes a lexicon JSON (rldyn.roles.lexicon) and prints its top groups. validate --workdir writes
WORKDIR/roles_validation.json (rldyn.roles.validation); validate --task writes --out (default
./roles_validation.json). Both print precision, recall and F1 of lexicon planning against structural
planning. The console script `rldyn-roles` is the same command.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import os
import sys
from typing import Any

from absl import app
from absl import flags

from rldyn.roles.mining import mine_lexicon, read_texts, reference_traces
from rldyn.roles.words import MatchOptions
from rldyn.tasks import make_task
from rldyn.workdir import ROLES_VALIDATION, Workdir

_SAMPLES = flags.DEFINE_string("samples", "", "mine: a JSONL file, samples/ dir or workdir to mine.")
_TASK = flags.DEFINE_string(
    "task", "", "Use reference traces of this synthetic task instead of --samples / --workdir.")
_TRACES = flags.DEFINE_integer(
    "traces", None, "--task: reference traces to draw (default: 2000 for mine, 1000 for validate).")
_SEED = flags.DEFINE_integer(
    "seed", None, "--task: the traces' rng seed; mine: also the k-means seed (default: mine 0, "
    "validate 1).")
_FIELD = flags.DEFINE_string("field", "response", "mine: the JSONL field holding the text.")
_ALL_RESPONSES = flags.DEFINE_bool(
    "all_responses", False, "Keep incorrect responses (mine) or unverified traces (validate --task).")
_OUT = flags.DEFINE_string(
    "out", "", "mine: the lexicon JSON to write (required); validate --task: the report JSON "
    "(default roles_validation.json).")
_N_MIN = flags.DEFINE_integer("n_min", 3, "mine: fewest words in an n-gram.")
_N_MAX = flags.DEFINE_integer("n_max", 5, "mine: most words in an n-gram.")
_TOP_FRAC = flags.DEFINE_float(
    "top_frac", 0.2, "mine: fraction of groups kept, by CDF; validate: fraction of highest-entropy "
    "tokens.")
_MIN_DF = flags.DEFINE_integer("min_df", 2, "mine: least number of texts an n-gram is in.")
_CASE_SENSITIVE = flags.DEFINE_bool("case_sensitive", False, "mine: match words case-sensitively.")
_NUMBER_PLACEHOLDER = flags.DEFINE_bool(
    "number_placeholder", False, "mine: all-digit words match as <num>.")
_WORKDIR = flags.DEFINE_string("workdir", "", "validate: a run dir with samples/ and config.json.")
_LEXICON = flags.DEFINE_string(
    "lexicon", "", "validate: a lexicon path or shipped name (default: the task's).")
_ENTROPY_MODEL = flags.DEFINE_string(
    "entropy_model", "base", "validate --workdir: the model whose entropies score the samples: base, "
    "final (the last RL checkpoint) or none (skip them).")


def _or(flag: flags.FlagHolder, default: Any) -> Any:
  return default if flag.value is None else flag.value


def mine() -> None:
  if bool(_SAMPLES.value) == bool(_TASK.value):
    raise app.UsageError("mine: give exactly one of --samples or --task")
  if not _OUT.value:
    raise app.UsageError("mine: --out (the lexicon JSON to write) is required")
  seed = _or(_SEED, 0)
  if _SAMPLES.value:
    texts = read_texts(_SAMPLES.value, _FIELD.value, correct_only=not _ALL_RESPONSES.value)
    source = {"source": os.path.abspath(_SAMPLES.value), "field": _FIELD.value,
              "correct_only": not _ALL_RESPONSES.value}
  else:
    traces = _or(_TRACES, 2000)
    texts = [t for _, t in reference_traces(make_task(_TASK.value), traces, seed)]
    source = {"source": f"{_TASK.value} reference traces (default config), correct only",
              "traces_drawn": traces, "seed": seed}
  source["command"] = "python -m rldyn.roles " + " ".join(sys.argv[1:])
  lex = mine_lexicon(texts, n_min=_N_MIN.value, n_max=_N_MAX.value, top_frac=_TOP_FRAC.value,
                     min_df=_MIN_DF.value, seed=seed, meta=source,
                     match=MatchOptions(_CASE_SENSITIVE.value, _NUMBER_PLACEHOLDER.value))
  lex.save(_OUT.value)
  print(f"mined {len(lex.groups)} groups from {len(texts)} texts "
        f"({lex.meta['candidates']} candidate n-grams) -> {_OUT.value}")
  for g in lex.groups[:10]:
    print(f"  {g.id:>5} cdf={g.cdf:<6} {g.ngrams[0]!r}")


def validate() -> None:
  if bool(_WORKDIR.value) == bool(_TASK.value):
    raise app.UsageError("validate: give exactly one of --workdir or --task")
  from rldyn.roles import validation  # pylint: disable=g-import-not-at-top  (imports jax)
  if _ENTROPY_MODEL.value not in validation.ENTROPY_MODELS:
    raise app.UsageError(f"unknown --entropy_model {_ENTROPY_MODEL.value!r}; valid: "
                         f"{', '.join(validation.ENTROPY_MODELS)}")
  if _WORKDIR.value:
    res = validation.validate_workdir(_WORKDIR.value, _LEXICON.value, _ENTROPY_MODEL.value,
                                      _TOP_FRAC.value)
    out = Workdir(_WORKDIR.value).roles_validation_path
  else:
    task = make_task(_TASK.value)
    res = validation.validate_reference_traces(task, _LEXICON.value, _or(_TRACES, 1000),
                                               _or(_SEED, 1), correct_only=not _ALL_RESPONSES.value)
    out = _OUT.value or ROLES_VALIDATION
    validation.write_report(res, out)
  keys = ("precision", "recall", "f1", "high_entropy_planning_frac")
  print(" ".join(f"{k}={res[k]:.3f}" for k in keys if k in res) + f" -> {out}")


# Each command and the flags it reads; any other flag of this module on its command line is an error.
COMMANDS: dict[str, tuple[Callable[[], None], tuple[flags.FlagHolder, ...]]] = {
    "mine": (mine, (_SAMPLES, _TASK, _TRACES, _SEED, _FIELD, _ALL_RESPONSES, _OUT, _N_MIN, _N_MAX,
                    _TOP_FRAC, _MIN_DF, _CASE_SENSITIVE, _NUMBER_PLACEHOLDER)),
    "validate": (validate, (_WORKDIR, _TASK, _TRACES, _SEED, _ALL_RESPONSES, _OUT, _LEXICON,
                            _ENTROPY_MODEL, _TOP_FRAC)),
}


def main(argv: Sequence[str]) -> None:
  if len(argv) < 2 or argv[1] not in COMMANDS:
    got = f"unknown command {argv[1]!r}" if len(argv) > 1 else "no command given"
    sys.exit(f"rldyn.roles: {got}; valid commands: {', '.join(COMMANDS)} (--help lists the flags)")
  if len(argv) > 2:
    raise app.UsageError(f"unexpected arguments after {argv[1]}: {argv[2:]}")
  cmd, (fn, used) = argv[1], COMMANDS[argv[1]]
  ours = {h.name for _, holders in COMMANDS.values() for h in holders}
  stray = sorted(ours - {h.name for h in used})
  stray = [f"--{name}" for name in stray if flags.FLAGS[name].present]
  if stray:
    raise app.UsageError(f"{cmd} does not take {', '.join(stray)}")
  fn()


def entry() -> None:
  # absl's --help shows the main module's docstring and flags; under the `rldyn-roles` console script
  # the main module is the generated launcher, so lend it this module's.
  launcher = sys.modules["__main__"]
  if not launcher.__doc__:
    launcher.__doc__ = __doc__
  for flag in flags.FLAGS.get_key_flags_for_module(sys.modules[__name__]):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  app.run(main)


if __name__ == "__main__":
  entry()
