"""`make demo`: the demo study end to end on CPU, then what happened.

    python -m rldyn.demo --workdir=runs/demo                    # experiments/two_phase.py:persist
    python -m rldyn.demo --workdir=runs/demo2 --variant=        # the default world (experiments/two_phase.py)

Runs experiments/two_phase.py:persist (countdown: a base model, then GRPO), which prints base vs final
held-out accuracy and pass@1, the trajectory of execution- and planning-token entropy and the phase
detector's verdict; then writes phases.json and phases.png. Rerunning resumes (or, if the run is
complete, prints the summary again).

The base comes shipped (rldyn/data/demo_base, rldyn.shipped): the base this recipe pretrains (seed 0,
1200 steps, on 2 CPU devices; ~5 of the demo's ~13 minutes on 2 cores), so the demo spends its time on
RL, and every machine runs RL on the same base, where pretrained bases differ by float rounding (held-out
greedy 0.40-0.505 over seeds and numerics, README). `--base=pretrain` (`make demo-pretrain`) trains it
here instead; `--base=auto` (the default) uses the shipped base only for the recipe that made it, so
`--variant=` and `smoke` pretrain. The `persist` world is the demo's because its base holds up over
seeds and float-rounding variants and its RL run raises greedy accuracy along with sampled pass@1 by
the robustness bars' margins on every seed and variant measured (README, "What is and is not
reproducible").

On a CPU-only machine with several cores the demo splits its batches over one JAX CPU device per core
(`--cpu_devices`; up to 8, a power of two, so every batch divides): XLA's CPU code does not spread ops
of this model's small shapes over the cores by itself, so one device keeps one core busy
(benchmarks/bench_threads.py: on 2 cores the rollout runs 2.0x and a pretraining step 1.2x faster on 2
devices). The split changes the order of float reductions, so on 2 cores the demo computes the `dev2`
numerics variant of benchmarks/robustness.py, not the 1-device run `python -m rldyn.main` gives.
"""

from __future__ import annotations

import os

from absl import flags
from absl import logging

from rldyn import cli
from rldyn import launch
from rldyn import runtime
from rldyn import shipped
from rldyn.config import ConfigError
from rldyn.experiments import two_phase
from rldyn.workdir import Workdir

_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Where the demo run lives.")
_VARIANT = flags.DEFINE_string("variant", "persist",
                               "experiments/two_phase.py variant: persist (the demo), '' (the default world) "
                               "or smoke.")
_BASE = flags.DEFINE_enum(
    "base", "auto", ["auto", "shipped", "pretrain"],
    "Where the base model comes from: shipped = the one in rldyn/data/demo_base (this recipe's base, "
    "pretrained on 2 CPU devices; refused if the recipe differs), pretrain = pretrain it here first "
    "(~5 min on 2 cores), auto = shipped where its recipe is this run's, else pretrain.")
_CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices", -1, "JAX CPU devices the batches are split over: -1 = one per core (up to 8, a power "
    "of two; left alone when XLA_FLAGS sets a device count), N = N devices, 1 = one device (what "
    "`python -m rldyn.main` uses).")
MAX_AUTO_CPU_DEVICES = 8


def usable_cores() -> int:
  """The cores this process may run on (its CPU affinity where the OS tells it)."""
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def auto_cpu_devices(cores: int) -> int:
  """One device per core, rounded down to a power of two and capped at MAX_AUTO_CPU_DEVICES, so the
  demo's batches (pretraining 16 sequences, rollouts 128 rows) split evenly."""
  n = 1
  while n * 2 <= min(cores, MAX_AUTO_CPU_DEVICES):
    n *= 2
  return n


def set_cpu_devices(requested: int) -> int | None:
  """Sets jax_num_cpu_devices before any JAX operation; returns the count set (None: left alone)."""
  if requested == -1:
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
      return None
    requested = auto_cpu_devices(usable_cores())
  if requested < 1:
    raise ValueError(f"--cpu_devices must be -1 (auto) or >= 1, got {requested}")
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_num_cpu_devices", requested)
  return requested


def use_shipped_base(config_dict, wd: Workdir, choice: str) -> bool:
  """Installs the shipped base into wd's base/ when `choice` (auto | shipped | pretrain) asks for it and
  the workdir has none yet; returns whether it did. Every launch check runs first, so a launch that
  would be refused leaves the workdir as it was."""
  if wd.base_source().has_base():  # the workdir's run continues on its base; a choice against it is refused
    was_shipped = bool(wd.base_info().get("shipped_from"))
    if choice != "auto" and was_shipped != (choice == "shipped"):
      raise ConfigError(f"{wd.root} holds a run on {'the shipped' if was_shipped else 'a pretrained'} base; "
                        f"--base={choice} needs another --workdir")
    return False
  if choice == "pretrain":
    return False
  cfg, _, mesh, _ = launch.prepare(config_dict, wd.root)
  differ = shipped.recipe_differences(cfg)
  if differ and choice == "auto":
    print(f"[rldyn] pretraining the base here: the shipped base ({shipped.DEMO_BASE_DIR}) is another "
          f"recipe's (differs: {', '.join(differ[:4])})", flush=True)
    return False
  wd.ensure()
  with wd.lock():
    info = shipped.install(cfg, wd, mesh)
  print(f"[rldyn] base: the shipped demo base ({shipped.DEMO_BASE_DIR}: {info['steps']} pretraining steps of "
        f"this recipe; held-out greedy accuracy {info['eval/accuracy']:.3f}, sampled pass@1 "
        f"{info['eval/pass@1']:.3f} where it was trained); --base=pretrain trains it here", flush=True)
  return True


def main(argv):
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  set_cpu_devices(_CPU_DEVICES.value)
  runtime.enable_compile_cache()
  wd = Workdir(_WORKDIR.value)
  launch.print_devices()
  config_dict = two_phase.get_config(_VARIANT.value)
  use_shipped_base(config_dict, wd, _BASE.value)
  launch.run(config_dict, wd.root)
  from rldyn.phases import report  # pylint: disable=g-import-not-at-top
  report.analyse(wd.metrics_path, wd.root)
  print(f"\nwrote {wd.phases_path} and {wd.phases_plot_path}", flush=True)


if __name__ == "__main__":
  cli.run(main, __name__)
