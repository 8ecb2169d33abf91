#!/usr/bin/env bash
# Usage: tpu/delete.sh --name=NAME --zone=ZONE --project=PROJECT [--yes]
#
# Deletes the queued resource NAME and its TPU VMs (everything on the workers' disks, logs included:
# collect them first with tpu/logs.sh). The run's gs:// workdir is untouched. gcloud asks to confirm
# unless --yes.
#
#   --name=NAME, --zone=ZONE, --project=PROJECT   the slice
#   --yes                    do not ask
#   --dry_run                print the command instead of running it
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

tpu::parse "name zone project yes" "$@"
[[ ${#TPU_ARGS[@]} -eq 0 ]] || tpu::die "delete.sh takes no arguments after --"
tpu::require name zone project
quiet=()
[[ -z ${RLDYN_TPU_YES:-} ]] || quiet=(--quiet)
# shellcheck disable=SC2046
tpu::run gcloud compute tpus queued-resources delete "$RLDYN_TPU_NAME" $(tpu::loc) --force \
  ${quiet[@]+"${quiet[@]}"}
