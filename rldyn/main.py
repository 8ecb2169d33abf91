"""rldyn entry point (`rldyn-train` is the same):

    python -m rldyn.main --config=experiments/two_phase.py:smoke --workdir=/tmp/rldyn/two_phase
    rldyn-train --config=two_phase:smoke --workdir=/tmp/rldyn/two_phase    # a study shipped with rldyn

--config is an ml_collections config file, `path[:variant]`; a bare study name (`two_phase`,
`hicra:placebo,smoke`) means the file of that name in rldyn's installed experiments, so the console
script works outside a checkout. Any key can be overridden: --config.rl.steps=320. A config file is
Python and therefore trusted code. A bad key, value or registry name prints one line naming the valid
choices and exits with status 2, before anything is written.

Many hosts: run the same command on every host. TPU VM pods (and SLURM, Open MPI) are joined through
`jax.distributed` by themselves (tpu/ sets RLDYN_DISTRIBUTED=1); elsewhere add
`--coordinator_address=HOST0:PORT --num_processes=N --process_id=I`. Each process samples and scores its
own slice of the batch, process 0 alone writes the workdir (which may be gs://...), and a SIGTERM stops
every process at the same step (tpu/README.md, "Many hosts").

JAX's persistent compilation cache is on by default (~/.cache/rldyn/jax; set RLDYN_COMPILE_CACHE to
another directory, or to "" to turn it off), so a second launch of the same study skips compilation.
"""

import os
import sys

from absl import flags
from absl import logging
from ml_collections import config_flags

from rldyn import cli
from rldyn import launch
from rldyn import parallel
from rldyn import runtime
from rldyn.config import ConfigError

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config: a config file `path.py[:variant]`, or a shipped study name "
    "(two_phase, pretrain, hicra; e.g. two_phase:smoke). Override keys with --config.section.key=value.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for everything the run writes (created; a "
                               "rerun resumes it).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "Multi-process runs: host:port of process 0 "
                                   "(TPU VMs, SLURM and Open MPI are detected without it).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-process runs: how many processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-process runs: this process's index.")
flags.mark_flags_as_required(["config", "workdir"])


def study_path(spec: str) -> str:
  """`name[:variant]` of a shipped study -> `/path/to/rldyn/experiments/name.py[:variant]`; else spec."""
  path, sep, variant = spec.partition(":")
  if os.path.exists(path):
    return spec
  from rldyn import experiments  # pylint: disable=g-import-not-at-top
  name = os.path.basename(path[:-3] if path.endswith(".py") else path)
  shipped = os.path.join(os.path.dirname(experiments.__file__), name + ".py")
  return shipped + sep + variant if os.path.exists(shipped) else spec


def resolve_config_flag(argv: list[str]) -> list[str]:
  """Rewrites `--config=study[:variant]` to the shipped file when the path does not exist."""
  out = []
  for a in argv:
    if a.startswith("--config="):
      a = "--config=" + study_path(a[len("--config="):])
    out.append(a)
  return out


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:  # orbax logs every save at INFO; keep the console readable
    logging.set_verbosity(logging.WARNING)
  runtime.enable_compile_cache()
  spec = parallel.DistributedSpec(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  try:
    parallel.init_distributed(spec)  # before anything touches a device
  except ValueError as e:
    raise ConfigError(str(e)) from e
  try:
    config = _CONFIG.value
    config.to_dict()  # config_flags reports a file that failed to load only when the config is used
  except OSError as e:
    from rldyn import experiments  # pylint: disable=g-import-not-at-top
    shipped = sorted(f[:-3] for f in os.listdir(os.path.dirname(experiments.__file__))
                     if f.endswith(".py") and not f.startswith("_"))
    raise ConfigError(f"--config={flags.FLAGS['config'].serialize().split('=', 1)[-1]!s}: no such config "
                      f"file, and not a shipped study (shipped: {', '.join(shipped)})") from e
  launch.print_devices()
  launch.run(config, _WORKDIR.value)


def entry():
  sys.argv = resolve_config_flag(sys.argv)
  cli.run(main, __name__)


if __name__ == "__main__":
  entry()
