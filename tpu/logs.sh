#!/usr/bin/env bash
# Usage: tpu/logs.sh --name=NAME --zone=ZONE --project=PROJECT [--dest=DIR | --follow [--worker=N]]
#
# Collects every worker's run log (~/rldyn-logs/HOSTNAME.log on the worker: all runs and restarts,
# each started by a `=== date host rldyn COMMIT: command` line and ended by `=== date host exit CODE`)
# into DIR/W.log for worker W. With --follow, streams one worker's log instead (Ctrl-C stops following,
# not the run). Metrics, events and checkpoints are in the run's gs:// workdir, not here.
#
#   --name=NAME, --zone=ZONE, --project=PROJECT   the slice
#   --dest=DIR               where to collect; default tpu-logs/NAME           (RLDYN_TPU_DEST)
#   --follow                 stream the log of --worker (default 0)
#   --worker=N               the worker to follow                              (RLDYN_TPU_WORKER)
#   --dry_run                print the commands instead of running them
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

tpu::parse "name zone project dest follow worker" "$@"
[[ ${#TPU_ARGS[@]} -eq 0 ]] || tpu::die "logs.sh takes no arguments after --"
tpu::require name zone project
if [[ -n ${RLDYN_TPU_FOLLOW:-} ]]; then
  [[ -z ${RLDYN_TPU_DEST:-} ]] || tpu::die "--dest collects logs; --follow streams them: pass one"
  tpu::ssh "${RLDYN_TPU_WORKER:-0}" "bash rldyn-worker.sh tail"
  exit 0
fi
[[ -z ${RLDYN_TPU_WORKER:-} ]] || tpu::die "--worker goes with --follow; collecting takes every worker"
dest=${RLDYN_TPU_DEST:-tpu-logs/$RLDYN_TPU_NAME}
tpu::run mkdir -p "$dest"
# shellcheck disable=SC2046
tpu::run gcloud compute tpus tpu-vm ssh "$RLDYN_TPU_NAME" $(tpu::loc) --worker=all \
  --command="bash rldyn-worker.sh cat" --output-directory="$dest"
[[ -n ${RLDYN_TPU_DRY_RUN:-} ]] || tpu::note "logs of every worker of $RLDYN_TPU_NAME are in $dest/"
