"""What every rldyn command line shares: `--help` that lists the command's flags, and one-line errors.

    def entry():
      cli.run(main, __name__)
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from absl import app
from absl import flags


def lend_help(module_name: str) -> None:
  """absl's --help shows the main module's docstring and key flags; under a console script the main
  module is the generated launcher, so lend it the command module's."""
  module = sys.modules[module_name]
  launcher = sys.modules["__main__"]
  if launcher is not module:
    if not launcher.__doc__:
      launcher.__doc__ = module.__doc__
    for flag in flags.FLAGS.get_key_flags_for_module(module):
      flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def guarded(main: Callable) -> Callable:
  """main with SIGTERM handled, a ConfigError or WorkdirBusy (nothing written) printed as one line with
  exit status 2, and a preemption (state checkpointed) as exit status 75."""
  # Imported here so that numpy-only commands (rldyn.phases) can use this module without jax.
  from rldyn import runtime  # pylint: disable=g-import-not-at-top
  from rldyn.config import ConfigError  # pylint: disable=g-import-not-at-top
  from rldyn.workdir import WorkdirBusy  # pylint: disable=g-import-not-at-top

  def wrapped(argv):
    runtime.install_stop_handler()
    try:
      return main(argv)
    except (ConfigError, WorkdirBusy) as e:
      print(f"rldyn: error: {e}", file=sys.stderr, flush=True)
      sys.exit(2)
    except runtime.Preempted as e:
      print(f"rldyn: {e}", file=sys.stderr, flush=True)
      sys.exit(runtime.PREEMPTED_EXIT)
  return wrapped


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad --config.key=value override reported as one line (exit 2).

  ml_collections raises AttributeError/KeyError/TypeError/ValueError from inside absl's parser for an
  unknown key or a value of the wrong type; absl would print a long traceback.
  """
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    msg = lines[0] if len(lines) == 1 else f"{lines[0].split(':')[0]}: {lines[-1]}"  # (a config file's traceback)
    print(f"rldyn: error: {msg} (--help lists the flags)", file=sys.stderr, flush=True)
    sys.exit(2)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    msg = str(e.args[0] if e.args else e).strip("'\"").replace("\\n", " ").replace("\n", " ")
    msg = msg.replace("\\'", "'").replace('\\"', '"')
    overrides = [a.split("=", 1)[0] for a in argv if a.startswith("--config.")]
    bad = [o for o in overrides if any(part and part in msg for part in o[len("--config."):].split("."))]
    if isinstance(e, (AttributeError, KeyError)) and bad:
      hint = msg[msg.index("Did you mean"):] if "Did you mean" in msg else "docs/config.md lists every key"
      msg = f"unknown config key {bad[-1][len('--config.'):]!r}; {hint}"
    print(f"rldyn: error: bad config override: {msg}", file=sys.stderr, flush=True)
    sys.exit(2)


def run(main: Callable, module_name: str, guard: bool = True) -> None:
  """app.run(main) with --help lending and override errors; guard=False skips `guarded` (and jax)."""
  lend_help(module_name)
  app.run(guarded(main) if guard else main, flags_parser=parse_flags)
