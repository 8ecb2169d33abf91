#!/usr/bin/env bash
# Usage: tpu/run.sh --name=NAME --zone=ZONE --project=PROJECT --accelerator=TYPE [flags] -- RLDYN_FLAGS...
#
# Everything in one: create.sh (unless the slice exists), setup.sh (installs HEAD or --commit), then
# launch.sh --recreate, which follows the run, restarts it after exit 75 and recreates a preempted
# slice, at most --max_restarts times. Rerunning run.sh with the same flags resumes. Delete the slice
# with tpu/delete.sh when done.
#
# Takes the flags of create.sh, setup.sh and launch.sh (see their --help); settings come from flags,
# else environment variables, else tpu/config.env. --dry_run prints every command of the three.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

tpu::parse "name zone project accelerator runtime provisioning create_args commit allow_dirty extras pip env
  max_restarts" "$@"
tpu::require name zone project accelerator
tpu::runtime > /dev/null
tpu::check_rldyn_args ${TPU_ARGS[@]+"${TPU_ARGS[@]}"}
RLDYN_TPU_COMMIT=$(tpu::commit check_dirty)
export RLDYN_TPU_COMMIT

"$TPU_DIR/create.sh"
"$TPU_DIR/setup.sh"
exec "$TPU_DIR/launch.sh" --recreate -- "${TPU_ARGS[@]}"
