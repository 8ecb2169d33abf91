"""`make demo`'s entry point, run as a user runs it (smoke size): table, phase verdict, files."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_cli_smoke(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="",
             JAX_COMPILATION_CACHE_DIR=os.path.join(ROOT, ".jax_cache"))
  workdir = str(tmp_path / "demo")
  out = subprocess.run([sys.executable, "-m", "rldyn.demo", f"--workdir={workdir}", "--variant=smoke"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "greedy accuracy" in out.stdout and "sampled pass@1" in out.stdout
  assert "H(execution)" in out.stdout and "Phase detector" in out.stdout
  phases = json.load(open(os.path.join(workdir, "phases.json")))
  assert set(phases) >= {"detected", "boundary_step", "ci", "confidence", "signals", "reason"}
  assert phases["reason"]
  for name in ("config.json", "metrics.jsonl", "eval.jsonl", "events.jsonl", "base/info.json"):
    assert os.path.exists(os.path.join(workdir, name)), name
