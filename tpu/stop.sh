#!/usr/bin/env bash
# Usage: tpu/stop.sh --name=NAME --zone=ZONE --project=PROJECT
#
# Sends SIGTERM to the run on every worker: rldyn saves a checkpoint at a step all processes agree on
# and exits 75, so rerunning tpu/launch.sh with the same flags resumes it. The slice stays up (and
# billed): tpu/delete.sh frees it. A launch.sh following the run restarts it unless stopped first
# (Ctrl-C it: that stops the following, not the run).
#
#   --name=NAME, --zone=ZONE, --project=PROJECT   the slice
#   --dry_run                print the command instead of running it
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

tpu::parse "name zone project" "$@"
[[ ${#TPU_ARGS[@]} -eq 0 ]] || tpu::die "stop.sh takes no arguments after --"
tpu::require name zone project
tpu::ssh all "bash rldyn-worker.sh stop"
