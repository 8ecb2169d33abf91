"""`make demo`: the demo study end to end on CPU, then what happened.

    python -m rldyn.demo --workdir=runs/demo                    # experiments/two_phase.py:persist
    python -m rldyn.demo --workdir=runs/demo2 --variant=        # the default world (experiments/two_phase.py)

Runs experiments/two_phase.py:persist (countdown; pretrains the base model, then GRPO), which prints base
vs final held-out accuracy and pass@1, the trajectory of execution- and planning-token entropy and the
phase detector's verdict; then writes phases.json and phases.png. Rerunning resumes (or, if the run is
complete, prints the summary again). The `persist` world is the demo's because its base holds up over
seeds and float-rounding variants and its RL run raises greedy accuracy along with sampled pass@1 on
every seed measured (README, "What is and is not reproducible").
"""

from __future__ import annotations

from absl import flags
from absl import logging

from rldyn import cli
from rldyn import launch
from rldyn import runtime
from rldyn.experiments import two_phase
from rldyn.workdir import Workdir

_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Where the demo run lives.")
_VARIANT = flags.DEFINE_string("variant", "persist",
                               "experiments/two_phase.py variant: persist (the demo), '' (the default world) "
                               "or smoke.")


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  runtime.enable_compile_cache()
  wd = Workdir(_WORKDIR.value)
  launch.print_devices()
  launch.run(two_phase.get_config(_VARIANT.value), wd.root)
  from rldyn.phases import report  # pylint: disable=g-import-not-at-top
  report.analyse(wd.metrics_path, wd.root)
  print(f"\nwrote {wd.phases_path} and {wd.phases_plot_path}", flush=True)


if __name__ == "__main__":
  cli.run(main, __name__)
