"""rldyn entry point: `python -m rldyn.main --config=experiments/two_phase.py:smoke --workdir=DIR`."""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from rldyn import launch

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (python).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for everything the run writes.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:  # orbax logs every save at INFO; keep the console readable
    logging.set_verbosity(logging.WARNING)
  launch.print_devices()
  launch.run(_CONFIG.value, _WORKDIR.value)


def entry():
  app.run(main)


if __name__ == "__main__":
  entry()
