"""tpu/ scripts: the commands their dry runs print, flag errors, launch.sh's resume loop against a fake
gcloud, and worker.sh (the per-worker side) run locally with a fake python3."""
import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import tarfile
import time

import pytest

TPU = pathlib.Path(__file__).resolve().parent.parent / "tpu"
NAME, ZONE, PROJECT = "demo-pod", "us-east5-a", "my-proj"
SLICE = [f"--name={NAME}", f"--zone={ZONE}", f"--project={PROJECT}"]
LOC = f"--zone={ZONE} --project={PROJECT}"
SSH = f"gcloud compute tpus tpu-vm ssh {NAME} {LOC}"
RLDYN = ["--config=experiments/two_phase.py", "--workdir=gs://bucket/runs/a"]

FAKE_GCLOUD = """#!{python}
import json, os, sys
d = os.environ["FAKE_GCLOUD_DIR"]
argv = sys.argv[1:]
with open(os.path.join(d, "calls.jsonl"), "a") as f:
  f.write(json.dumps(argv) + "\\n")
line = " ".join(argv)
rules = json.load(open(os.path.join(d, "rules.json"))) if os.path.exists(os.path.join(d, "rules.json")) else []
for i, (pattern, responses) in enumerate(rules):
  if pattern in line:
    counter = os.path.join(d, "count%d" % i)
    n = int(open(counter).read()) if os.path.exists(counter) else 0
    open(counter, "w").write(str(n + 1))
    rc, out, err = responses[min(n, len(responses) - 1)]
    sys.stdout.write(out)
    sys.stderr.write(err)
    sys.exit(rc)
"""
NOT_FOUND = [1, "", "ERROR: (gcloud.compute.tpus.queued-resources.describe) NOT_FOUND: Resource was not found\n"]


class Env:
  """A git checkout holding a copy of tpu/ (one commit), a fake gcloud on PATH, and a clean environment."""

  def __init__(self, tmp_path):
    self.root = tmp_path / "repo"
    shutil.copytree(TPU, self.root / "tpu", ignore=shutil.ignore_patterns("config.env"))
    self.git("init", "-q")
    self.git("add", ".")
    self.git("commit", "-q", "-m", "init")
    self.sha = self.git("rev-parse", "HEAD")
    self.fake = tmp_path / "fake"
    (tmp_path / "bin").mkdir()
    self.fake.mkdir()
    gcloud = tmp_path / "bin" / "gcloud"
    gcloud.write_text(FAKE_GCLOUD.format(python=sys.executable))
    gcloud.chmod(0o755)
    self.tmp = tmp_path / "tmp"
    self.tmp.mkdir()
    self.vars = {k: v for k, v in os.environ.items() if not k.startswith(("RLDYN_TPU_", "GIT_"))}
    self.vars.update(PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}", HOME=str(tmp_path), TMPDIR=str(self.tmp),
                     RLDYN_TPU_CONFIG=os.devnull, RLDYN_TPU_POLL_S="0", FAKE_GCLOUD_DIR=str(self.fake))

  def git(self, *args):
    return subprocess.run(["git", "-C", str(self.root), "-c", "user.name=t", "-c", "user.email=t@example.com",
                           *args], check=True, capture_output=True, text=True).stdout.strip()

  def run(self, script, *args, **env):
    return subprocess.run(["bash", str(self.root / "tpu" / script), *args], env={**self.vars, **env},
                          capture_output=True, text=True, timeout=60)

  def dry(self, script, *args, **env):
    """The dry run's lines (comments dropped); asserts it succeeded and touched neither gcloud nor git."""
    status = self.git("status", "--porcelain")
    p = self.run(script, *SLICE, "--dry_run", *args, **env)
    assert p.returncode == 0, p.stderr
    assert not (self.fake / "calls.jsonl").exists()
    assert self.git("status", "--porcelain") == status and not list(self.tmp.iterdir())
    return [line for line in p.stdout.splitlines() if not line.startswith("#")]

  def rules(self, rules):
    (self.fake / "rules.json").write_text(json.dumps(rules))

  def calls(self):
    path = self.fake / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

  def kinds(self):
    """Each gcloud call named by what it does."""
    out = []
    for argv in self.calls():
      command = next((a[len("--command="):] for a in argv if a.startswith("--command=")), "")
      line = " ".join(argv)
      if "rldyn-worker.sh start" in command:
        out.append("start")
      elif "rldyn-worker.sh wait" in command:
        out.append("wait")
      elif "pip install" in command:
        out.append("install")
      elif "tpu-vm scp" in line:
        out.append("scp")
      elif "queued-resources describe" in line:
        out.append("qr-describe")
      elif "tpu-vm describe" in line:
        out.append("node-describe")
      elif "queued-resources create" in line:
        out.append("create")
      elif "queued-resources delete" in line:
        out.append("delete")
      else:
        out.append(line)
    return out


@pytest.fixture
def env(tmp_path):
  return Env(tmp_path)


def test_create_dry_run(env):
  assert env.dry("create.sh", "--accelerator=v5p-64", "--provisioning=spot") == [
      f"gcloud compute tpus queued-resources create {NAME} --node-id={NAME} {LOC} --accelerator-type=v5p-64 "
      "--runtime-version=v2-alpha-tpuv5 --spot",
      f"gcloud compute tpus queued-resources describe {NAME} {LOC} --format='value(state.state)'"]
  line = env.dry("create.sh", "--accelerator=v6e-64", "--create_args=--network=n1 --subnetwork=s1")[0]
  assert line.endswith("--accelerator-type=v6e-64 --runtime-version=v2-alpha-tpuv6e --network=n1 --subnetwork=s1")
  line = env.dry("create.sh", "--accelerator=v4-32", "--runtime=tpu-vm-base", "--provisioning=reserved")[0]
  assert line.endswith("--accelerator-type=v4-32 --runtime-version=tpu-vm-base --reserved")


def test_setup_dry_run(env):
  sha, d = env.sha, f"rldyn-{env.sha}"
  lines = env.dry("setup.sh", "--extras=hf", "--pip=jax[tpu]==0.7.0 gcsfs")
  assert lines[:2] == [
      f"git -C {env.root} archive --format=tar.gz --prefix={d}/ -o {env.tmp}/{d}.tar.gz {sha}",
      f"gcloud compute tpus tpu-vm scp {env.tmp}/{d}.tar.gz {NAME}:{d}.tar.gz {LOC} --worker=all"]
  argv = shlex.split(lines[2])
  assert argv[:-1] == shlex.split(f"{SSH} --worker=all") and len(lines) == 3
  assert argv[-1] == (
      f"--command=set -e; [ -f {d}/COMMIT ] || {{ rm -rf {d}; tar -xzf {d}.tar.gz; echo {sha} > {d}/COMMIT; }}; "
      f"cp {d}/tpu/worker.sh rldyn-worker.sh; "
      f"python3 -m pip install --user './{d}.tar.gz[hf]' 'jax[tpu]==0.7.0' gcsfs; "
      f"python3 -m pip install --user --no-deps --force-reinstall ./{d}.tar.gz; "
      "python3 -c 'import jax, rldyn; print(rldyn.__file__, jax.__version__)'")


def test_setup_refuses_uncommitted_changes_and_installs_a_named_commit(env):
  first = env.sha
  with open(env.root / "tpu" / "delete.sh", "a") as f:
    f.write("# changed\n")
  p = env.run("setup.sh", *SLICE, "--dry_run")
  assert p.returncode == 2 and "uncommitted changes" in p.stderr and "--allow_dirty" in p.stderr
  assert f"rldyn-{first}" in env.dry("setup.sh", "--allow_dirty")[0]
  env.git("commit", "-q", "-am", "second")
  assert f"rldyn-{first}" in env.dry("setup.sh", f"--commit={first[:8]}")[0]
  assert f"rldyn-{env.git('rev-parse', 'HEAD')}" in env.dry("setup.sh")[0]


def test_launch_dry_run(env):
  assert env.dry("launch.sh", "--", *RLDYN) == [
      f"{SSH} --worker=all --command='bash rldyn-worker.sh start {env.sha} {' '.join(RLDYN)}'",
      f"{SSH} --worker=0 --command='bash rldyn-worker.sh wait'"]
  assert env.dry("launch.sh", "--detach", "--", *RLDYN) == env.dry("launch.sh", "--", *RLDYN)[:1]
  assert env.dry("launch.sh", "--attach") == env.dry("launch.sh", "--", *RLDYN)[1:]


def test_launch_quoting_survives_both_shells(env, tmp_path):
  """The printed command, run by a local shell and then (its --command) by the worker's, gives rldyn the
  exact argv: spaces, both quote kinds, $, backquotes, backslashes, ! and an empty value."""
  args = [*RLDYN, "--config.note=it's a \"test\" $HOME `id` \\n !", "--config.sp=a  b", "--config.empty=",
          "--config.q='single'", "--config.dq=\"double\"", "--config.d=it's $HOME", "--config.b=it's `id` \\x",
          "*"]
  lines = env.dry("launch.sh", "--env=XLA_FLAGS=--a=1 --b='2'", "--", *args)
  subprocess.run(["bash", "-c", lines[0]], env=env.vars, check=True)  # the fake gcloud records its argv
  (argv,) = env.calls()
  assert argv[:8] == ["compute", "tpus", "tpu-vm", "ssh", NAME, f"--zone={ZONE}", f"--project={PROJECT}",
                      "--worker=all"]
  remote = argv[8][len("--command="):]
  worker_home = tmp_path / "worker"
  worker_home.mkdir()
  (worker_home / "rldyn-worker.sh").write_text(
      f"{sys.executable} -c 'import json, os, sys; print(json.dumps([os.environ.get(\"XLA_FLAGS\"), sys.argv[1:]]))' "
      '"$@"\n')
  out = subprocess.run(["bash", "-c", remote], cwd=worker_home, env=env.vars, check=True, capture_output=True,
                       text=True).stdout
  assert json.loads(out) == ["--a=1 --b='2'", ["start", env.sha, *args]]


def test_run_dry_run_is_create_setup_launch(env):
  lines = env.dry("run.sh", "--accelerator=v5litepod-16", "--", *RLDYN)
  assert [shlex.split(line)[:4] for line in lines] == [
      ["gcloud", "compute", "tpus", "queued-resources"], ["gcloud", "compute", "tpus", "queued-resources"],
      ["git", "-C", str(env.root), "archive"], ["gcloud", "compute", "tpus", "tpu-vm"],
      ["gcloud", "compute", "tpus", "tpu-vm"], ["gcloud", "compute", "tpus", "tpu-vm"],
      ["gcloud", "compute", "tpus", "tpu-vm"]]
  assert "--runtime-version=v2-alpha-tpuv5-lite" in lines[0]
  assert lines[-2:] == env.dry("launch.sh", "--", *RLDYN)


def test_logs_delete_stop_dry_runs(env):
  assert env.dry("logs.sh") == [
      f"mkdir -p tpu-logs/{NAME}",
      f"{SSH} --worker=all --command='bash rldyn-worker.sh cat' --output-directory=tpu-logs/{NAME}"]
  assert env.dry("logs.sh", "--dest=/tmp/my logs")[1].endswith("--output-directory='/tmp/my logs'")
  assert env.dry("logs.sh", "--follow", "--worker=3") == [f"{SSH} --worker=3 --command='bash rldyn-worker.sh tail'"]
  assert env.dry("delete.sh") == [f"gcloud compute tpus queued-resources delete {NAME} {LOC} --force"]
  assert env.dry("delete.sh", "--yes") == [f"gcloud compute tpus queued-resources delete {NAME} {LOC} --force --quiet"]
  assert env.dry("stop.sh") == [f"{SSH} --worker=all --command='bash rldyn-worker.sh stop'"]


def test_settings_precedence_flag_over_environment_over_config_file(env, tmp_path):
  config = tmp_path / "my.env"
  config.write_text("RLDYN_TPU_NAME=file-pod  # comment\nRLDYN_TPU_ZONE=us-central2-b\nRLDYN_TPU_PROJECT=file-proj\n")
  p = env.run("delete.sh", "--name=flag-pod", "--dry_run", RLDYN_TPU_CONFIG=str(config), RLDYN_TPU_PROJECT="env-proj")
  assert p.stdout == "gcloud compute tpus queued-resources delete flag-pod --zone=us-central2-b --project=env-proj --force\n"


@pytest.mark.parametrize("script,args,message", [
    ("create.sh", ["--zone=us-east5-a", "--project=my-proj", "--accelerator=v5p-8"], "--name is required"),
    ("create.sh", [*SLICE, "--accelerator=v5p-8", "--provisioning=cheap"],
     "--provisioning=cheap is not one of: on-demand spot reserved guaranteed"),
    ("create.sh", [*SLICE, "--accelerator=tpu-64"], "is not a TPU accelerator type"),
    ("create.sh", [*SLICE, "--accelerator=v9x-8"], "no default --runtime for --accelerator=v9x-8"),
    ("create.sh", [*SLICE, "--accelerator=v5p-8", "--zon=x"], "unknown flag --zon; valid flags: --name --zone"),
    ("delete.sh", ["--name=Bad_Name", "--zone=us-east5-a", "--project=my-proj"], "not a valid TPU name"),
    ("delete.sh", [*SLICE, "--zone=east"], "--zone=east is not a zone"),
    ("delete.sh", [*SLICE, "--name"], "--name needs a value: --name=VALUE"),
    ("delete.sh", [*SLICE, "--yes=1"], "--yes takes no value"),
    ("delete.sh", [*SLICE, "now"], "unexpected argument 'now'"),
    ("launch.sh", SLICE, "give rldyn's flags after --"),
    ("launch.sh", [*SLICE, "--", "--config=c.py", "--workdir=/tmp/run"], "--workdir=/tmp/run must be a gs:// path"),
    ("launch.sh", [*SLICE, "--", "--config", "c.py", "--workdir", "runs/x"], "--workdir=runs/x must be a gs://"),
    ("launch.sh", [*SLICE, "--attach", "--detach"], "--attach and --detach exclude each other"),
    ("launch.sh", [*SLICE, "--recreate", "--", *RLDYN], "--accelerator is required"),
    ("launch.sh", [*SLICE, "--max_restarts=-1", "--", *RLDYN], "--max_restarts=-1 is not a non-negative integer"),
    ("launch.sh", [*SLICE, "--env=1X=2", "--", *RLDYN], "--env=1X=2 is not NAME=VALUE"),
    ("launch.sh", [*SLICE, "--commit=nope", "--", *RLDYN], "--commit=nope is not a commit"),
    ("logs.sh", [*SLICE, "--worker=all", "--follow"], "--worker=all is not a worker index"),
    ("run.sh", [*SLICE, "--", *RLDYN], "--accelerator is required"),
])
def test_bad_flags_fail_with_one_line(env, script, args, message):
  p = env.run(script, *args, "--dry_run")
  assert p.returncode == 2 and p.stdout == ""
  assert len(p.stderr.splitlines()) == 1 and message in p.stderr, p.stderr


@pytest.mark.parametrize("script", ["create.sh", "setup.sh", "launch.sh", "logs.sh", "delete.sh", "stop.sh", "run.sh"])
def test_help(env, script):
  p = env.run(script, "--help")
  assert p.returncode == 0 and p.stderr == "" and p.stdout.startswith(f"Usage: tpu/{script} --name=NAME")
  assert "--dry_run" in p.stdout and "set -e" not in p.stdout


def test_launch_reruns_once_after_exit_75(env):
  env.rules([["rldyn-worker.sh wait", [[75, "", ""], [0, "", ""]]]])
  p = env.run("launch.sh", *SLICE, "--", *RLDYN)
  assert p.returncode == 0, p.stderr
  assert env.kinds() == ["start", "wait", "start", "wait"]
  starts = [c for c in env.calls() if "start" in c[-1]]
  assert starts[0] == starts[1] and starts[0][-2] == "--worker=all"
  assert "restart 1 of 10" in p.stderr


def test_launch_stops_when_restarts_run_out(env):
  env.rules([["rldyn-worker.sh wait", [[75, "", ""]]]])
  p = env.run("launch.sh", *SLICE, "--max_restarts=1", "--", *RLDYN)
  assert p.returncode == 75 and "no restarts left (--max_restarts=1)" in p.stderr
  assert env.kinds() == ["start", "wait", "start", "wait"]


def test_launch_run_failure_on_an_active_slice_is_not_retried(env):
  env.rules([["rldyn-worker.sh wait", [[1, "", ""]]], ["queued-resources describe", [[0, "ACTIVE\n", ""]]],
             ["tpu-vm describe", [[0, "READY\n", ""]]]])
  p = env.run("launch.sh", *SLICE, "--", *RLDYN)
  assert p.returncode == 1 and "the run failed with exit 1" in p.stderr
  assert env.kinds() == ["start", "wait", "qr-describe", "node-describe"]


def test_launch_reconnects_when_ssh_drops(env):
  env.rules([["rldyn-worker.sh wait", [[255, "", ""], [0, "", ""]]], ["queued-resources describe", [[0, "ACTIVE\n", ""]]],
             ["tpu-vm describe", [[0, "READY\n", ""]]]])
  p = env.run("launch.sh", *SLICE, "--", *RLDYN)
  assert p.returncode == 0, p.stderr
  assert env.kinds() == ["start", "wait", "qr-describe", "node-describe", "wait"]


def test_launch_without_recreate_reports_a_preempted_slice(env):
  env.rules([["rldyn-worker.sh wait", [[255, "", ""]]], ["queued-resources describe", [[0, "SUSPENDED\n", ""]]]])
  p = env.run("launch.sh", *SLICE, "--", *RLDYN)
  assert p.returncode == 75 and "is SUSPENDED" in p.stderr and "--recreate" in p.stderr
  assert env.kinds() == ["start", "wait", "qr-describe"]


def test_launch_recreates_a_preempted_slice_and_resumes(env):
  env.rules([
      ["rldyn-worker.sh wait", [[255, "", ""], [0, "", ""]]],
      # launch sees SUSPENDED twice (then deletes), ABSENT twice (then creates), ACTIVE
      ["queued-resources describe", [[0, "SUSPENDED\n", ""], [0, "SUSPENDED\n", ""], NOT_FOUND, NOT_FOUND,
                                     [0, "ACTIVE\n", ""]]],
      ["tpu-vm describe", [[0, "READY\n", ""]]],
  ])
  p = env.run("launch.sh", *SLICE, "--recreate", "--accelerator=v5p-64", "--provisioning=spot", "--", *RLDYN)
  assert p.returncode == 0, p.stderr
  assert env.kinds() == ["start", "wait", "qr-describe", "qr-describe", "delete", "qr-describe", "qr-describe",
                         "create", "qr-describe", "qr-describe", "node-describe", "scp", "install", "start", "wait"]
  calls = env.calls()
  assert calls[4] == ["compute", "tpus", "queued-resources", "delete", NAME, f"--zone={ZONE}", f"--project={PROJECT}",
                      "--force", "--quiet"]
  assert calls[7] == ["compute", "tpus", "queued-resources", "create", NAME, f"--node-id={NAME}", f"--zone={ZONE}",
                      f"--project={PROJECT}", "--accelerator-type=v5p-64", "--runtime-version=v2-alpha-tpuv5", "--spot"]
  tarball = env.tmp / f"rldyn-{env.sha}.tar.gz"
  assert calls[11][4] == str(tarball) and calls[13] == calls[0]  # the same commit, the same command
  with tarfile.open(tarball) as t:
    assert f"rldyn-{env.sha}/tpu/worker.sh" in t.getnames()
  assert "restart 1 of 10" in p.stderr


@pytest.fixture
def worker(tmp_path):
  """A worker's home with rldyn COMMIT 'abc' installed and a fake python3 that records how it ran."""
  home = tmp_path / "home"
  (home / "rldyn-abc").mkdir(parents=True)
  (home / "rldyn-abc" / "COMMIT").write_text("abc\n")
  (tmp_path / "bin").mkdir()
  python = tmp_path / "bin" / "python3"
  python.write_text('#!/usr/bin/env bash\ntrap \'echo "got TERM"; exit 75\' TERM\n'
                    'echo "cwd=$PWD args=$* FOO=${FOO-unset} RLDYN_DISTRIBUTED=$RLDYN_DISTRIBUTED"\n'
                    'if [[ -n ${FAKE_SLEEP:-} ]]; then sleep "$FAKE_SLEEP" & wait; fi\nexit "${FAKE_RC:-0}"\n')
  python.chmod(0o755)
  env = {**os.environ, "HOME": str(home), "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}

  def run(*args, **extra):
    return subprocess.run(["bash", str(TPU / "worker.sh"), *args], env={**env, **extra}, cwd=home,
                          capture_output=True, text=True, timeout=30)
  return home, run


def test_worker_runs_detached_and_wait_returns_its_exit_code(worker):
  home, run = worker
  assert run("start", "abc", "--config=c.py", "a b", FOO="x y", FAKE_RC="75").returncode == 0
  p = run("wait")
  assert p.returncode == 75
  assert f"cwd={home}/rldyn-abc args=-m rldyn.main --config=c.py a b FOO=x y RLDYN_DISTRIBUTED=1" in p.stdout
  assert run("status").stdout.endswith("exited 75\n")
  assert run("start", "abc", "again", FAKE_RC="0").returncode == 0 and run("wait").returncode == 0
  log = run("cat").stdout
  assert log.count("=== ") == 4 and "exit 75" in log and "args=-m rldyn.main again" in log


def test_worker_stop_sends_sigterm_and_records_75(worker):
  _, run = worker
  assert run("start", "abc", "x", FAKE_SLEEP="20").returncode == 0
  assert "running" in run("status").stdout
  for _ in range(100):  # until the fake run has installed its SIGTERM handler (it prints after that)
    if "cwd=" in run("cat").stdout:
      break
    time.sleep(0.1)
  assert "sent SIGTERM" in run("stop").stdout
  p = run("wait")
  assert p.returncode == 75 and "got TERM" in p.stdout
  assert "no run is going" in run("stop").stdout


def test_worker_refuses_a_commit_that_is_not_installed(worker):
  _, run = worker
  p = run("start", "def", "x")
  assert p.returncode == 3 and "rldyn def is not installed here; run tpu/setup.sh --commit=def" in p.stderr
  assert run("wait").returncode == 3 and run("status").stdout.endswith("never started\n")
