"""Where a 2-core CPU's time goes: the demo's pretraining step and rollout under XLA's threading choices.

    python benchmarks/bench_threads.py [--rounds=3] [--config_variant=persist]

Each setting is a fresh process (XLA reads its flags once), all timed in one run so the ratios compare
like with like on a noisy machine; settings alternate round by round and each reports its best round:
  default   one CPU device; XLA splits each op over its intra-op thread pool (every core)
  1thread   one CPU device, Eigen's matmuls and convolutions on one thread
            (--xla_cpu_multi_thread_eigen=false): what splitting an op is worth at these shapes
  dev2      two CPU devices (--xla_force_host_platform_device_count=2), the batch split over a 2-way data
            axis: the two halves run side by side, each op on smaller shapes
  dev2_1t   dev2 with single-threaded ops: one core per device, nothing split inside an op
  dev4, dev8  four or eight devices (by name: what `make demo` computes on a 4- or 8-core machine, here
            timed on however many cores this one has)
Timed: the pretraining step (the study's batch x seq_len, packed traces) and one rollout (the study's RL
batch, prompts_per_step x group_size rows, sampling.max_new_tokens new tokens, KV cache), each per call.
A setting that changes the device count changes the float reduction order (the `dev2` numerics variant of
benchmarks/robustness.py), so it is a recipe change, not a free speed-up.

XLA's other CPU code paths, on top of dev2 (by name: --settings=dev2,dev2_xnn,...; not in the default run):
  dev2_xnn   XNNPACK (--xla_cpu_use_xnnpack)          dev2_xdot  dots fused into XNNPACK calls
  dev2_odnn  oneDNN (--xla_cpu_use_onednn)            dev2_w512  512-bit vectors preferred
  dev2_xgr   XNNPACK greedy graph fusion
On CPU B (AMD EPYC, AVX-512, 2 cores; one round, 2026-11-28) none sped up the persist pretraining step
(0.85-0.98x of dev2); rollouts 0.83-1.18x.
On the same 2 cores (best of 2 rounds), dev4 and dev8 run the rollout at 0.79x and 0.68x of dev2's
speed and the pretraining step at 0.93x and 1.07x: more devices than cores does not pay.
"""

import argparse
import json
import os
import subprocess
import sys

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SETTINGS = {
    "default": "",
    "1thread": "--xla_cpu_multi_thread_eigen=false",
    "dev2": "--xla_force_host_platform_device_count=2",
    "dev2_1t": "--xla_force_host_platform_device_count=2 --xla_cpu_multi_thread_eigen=false",
    "dev4": "--xla_force_host_platform_device_count=4",
    "dev8": "--xla_force_host_platform_device_count=8",
    "dev2_xnn": "--xla_force_host_platform_device_count=2 --xla_cpu_use_xnnpack=true",
    "dev2_xdot": "--xla_force_host_platform_device_count=2 "
                 "--xla_cpu_experimental_xnn_fusion_type=LIBRARY_FUSION_TYPE_DOT",
    "dev2_odnn": "--xla_force_host_platform_device_count=2 --xla_cpu_use_onednn=true",
    "dev2_w512": "--xla_force_host_platform_device_count=2 --xla_cpu_prefer_vector_width=512",
    "dev2_xgr": "--xla_force_host_platform_device_count=2 "
                "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
}
DEFAULT_SETTINGS = ("default", "1thread", "dev2", "dev2_1t")

_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import jax
from benchmarks.bench_sampler import pretrain_step_time
from rldyn import data, parallel, sampling
from rldyn.experiments import two_phase
from rldyn.rl import rollout as rollout_lib
variant, n_calls = sys.argv[2], int(sys.argv[3])
pre, cfg, task, mesh, params = pretrain_step_time(two_phase.get_config(variant), n_calls)
sample = sampling.make_sampler(cfg.model, cfg.sampling)
prompts = data.prompt_batch(task, rollout_lib.step_problems(cfg, task, 0), repeat=cfg.rl.group_size)
dev = parallel.shard_batch(mesh, prompts)
key = jax.random.key(0)
jax.block_until_ready(sample(params, dev["tokens"], dev["mask"], key))
t0 = time.perf_counter()
for i in range(n_calls):
  jax.block_until_ready(sample(params, dev["tokens"], dev["mask"], jax.random.fold_in(key, i)))
roll = (time.perf_counter() - t0) / n_calls
print(json.dumps({"pretrain_s": pre, "rollout_s": roll, "devices": jax.device_count(),
                  "rows": int(prompts["tokens"].shape[0]), "new": cfg.sampling.max_new_tokens,
                  "batch": cfg.pretrain.batch_size, "seq_len": cfg.pretrain.seq_len}))
"""


def run_setting(flags: str, variant: str, calls: int) -> dict:
  env = dict(os.environ)
  env["XLA_FLAGS"] = " ".join(f for f in (env.get("XLA_FLAGS", ""), flags) if f)
  out = subprocess.run([sys.executable, "-c", _CHILD, ROOT_DIR, variant, str(calls)], env=env,
                       capture_output=True, text=True, check=False, cwd=ROOT_DIR)
  if out.returncode:
    raise RuntimeError(f"setting {flags!r} failed:\n{out.stderr[-3000:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--rounds", type=int, default=3, help="rounds; every setting runs once per round")
  ap.add_argument("--calls", type=int, default=8, help="timed calls per phase per process")
  ap.add_argument("--config_variant", default="persist", help="experiments/two_phase.py variant")
  ap.add_argument("--settings", default=",".join(DEFAULT_SETTINGS), help=f"of {', '.join(SETTINGS)}")
  args = ap.parse_args()
  names = [s for s in args.settings.split(",") if s]
  bad = sorted(set(names) - set(SETTINGS))
  if bad:
    ap.error(f"unknown setting(s) {bad}; valid: {', '.join(SETTINGS)}")
  best: dict[str, dict] = {}
  shape = None
  for r in range(args.rounds):
    for name in names:
      res = run_setting(SETTINGS[name], args.config_variant, args.calls)
      shape = res
      print(f"round {r} {name:8s} pretrain step {res['pretrain_s'] * 1e3:7.0f} ms   rollout "
            f"{res['rollout_s'] * 1e3:7.0f} ms", flush=True)
      b = best.setdefault(name, {"pretrain_s": float("inf"), "rollout_s": float("inf")})
      b["pretrain_s"] = min(b["pretrain_s"], res["pretrain_s"])
      b["rollout_s"] = min(b["rollout_s"], res["rollout_s"])
  print(f"\nbest of {args.rounds} rounds (config {args.config_variant!r}: pretrain batch {shape['batch']} x "
        f"{shape['seq_len']}; rollout {shape['rows']} rows x {shape['new']} new tokens; {os.cpu_count()} cores)")
  ref = best[names[0]]
  print(f"{'setting':8s}  {'pretrain ms':>11s}  {'ratio':>6s}  {'rollout ms':>10s}  {'ratio':>6s}")
  for name in names:
    b = best[name]
    print(f"{name:8s}  {b['pretrain_s'] * 1e3:11.0f}  {ref['pretrain_s'] / b['pretrain_s']:6.2f}  "
          f"{b['rollout_s'] * 1e3:10.0f}  {ref['rollout_s'] / b['rollout_s']:6.2f}")
  print(f"(ratio = {names[0]} time / setting time: > 1 is faster than {names[0]})")


if __name__ == "__main__":
  main()
