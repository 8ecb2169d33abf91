#!/usr/bin/env bash
# Usage: tpu/launch.sh --name=NAME --zone=ZONE --project=PROJECT [flags] -- RLDYN_FLAGS...
#
# Starts `python3 -m rldyn.main RLDYN_FLAGS...` on every worker of the slice at once (the same command
# everywhere; jax.distributed finds its peers on a TPU VM), detached from ssh, from the ~/rldyn-COMMIT
# directory that setup.sh installed. Then follows worker 0's log until the run ends, and:
#   exit 0                      done;
#   exit 75 (preempted; rldyn   starts the same command again, which resumes from the last checkpoint
#     saved its state)          in the gs:// workdir, at most --max_restarts times;
#   any other failure           asks gcloud for the slice's state: still ACTIVE, a run failure (launch
#                               exits with its code) or ssh that could not connect (retried, 5 times,
#                               RLDYN_TPU_POLL_S apart); not ACTIVE, the slice was preempted: with
#                               --recreate, delete.sh + create.sh + setup.sh of the same commit and
#                               start again (counted as a restart), else exit 75.
# Rerunning launch.sh with the same flags later resumes the same way (rerun = resume).
#
#   --name=NAME, --zone=ZONE, --project=PROJECT   the slice
#   --commit=REV             the installed commit to run (default HEAD)        (RLDYN_TPU_COMMIT)
#   --env=NAME=VALUE         environment variable for the run; repeatable      (RLDYN_TPU_ENV, one a line)
#   --max_restarts=N         default 10                                        (RLDYN_TPU_MAX_RESTARTS)
#   --recreate               recreate a preempted slice (needs --accelerator and create.sh's flags)
#   --attach                 follow a run that is already going instead of starting one (without
#                            RLDYN_FLAGS it cannot restart, so it stops at exit 75)
#   --detach                 start and return; follow later with --attach or tpu/logs.sh --follow
#   --dry_run                print the commands instead of running them
#
# RLDYN_FLAGS are passed verbatim (quoted for the remote shell) and must include --config (relative
# paths are relative to the checkout, e.g. experiments/two_phase.py) and a gs:// --workdir.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

tpu::parse "name zone project commit env max_restarts recreate attach detach accelerator runtime provisioning
  create_args extras pip" "$@"
tpu::require name zone project
[[ -z ${RLDYN_TPU_ATTACH:-} || -z ${RLDYN_TPU_DETACH:-} ]] || tpu::die "--attach and --detach exclude each other"
if [[ -n ${RLDYN_TPU_RECREATE:-} ]]; then
  tpu::require accelerator
  tpu::runtime > /dev/null
fi
if [[ -z ${RLDYN_TPU_ATTACH:-} || ${#TPU_ARGS[@]} -gt 0 ]]; then
  tpu::check_rldyn_args ${TPU_ARGS[@]+"${TPU_ARGS[@]}"}
fi
sha=$(tpu::commit)
export RLDYN_TPU_COMMIT=$sha  # a recreated slice gets the same commit

env_words=()
while IFS= read -r line; do
  [[ -z $line ]] || env_words+=("${line%%=*}=$(tpu::quote "${line#*=}")")
done <<< "${RLDYN_TPU_ENV:-}"
start="${env_words[*]+${env_words[*]} }$(tpu::quote_words bash rldyn-worker.sh start "$sha" \
  ${TPU_ARGS[@]+"${TPU_ARGS[@]}"})"
follow="bash rldyn-worker.sh wait"
max=$RLDYN_TPU_MAX_RESTARTS

if [[ -n ${RLDYN_TPU_DRY_RUN:-} ]]; then
  [[ -n ${RLDYN_TPU_ATTACH:-} ]] || tpu::ssh all "$start"
  [[ -n ${RLDYN_TPU_DETACH:-} ]] && exit 0
  tpu::ssh 0 "$follow"
  tpu::dry_note "exit $EX_TEMPFAIL (preempted, state saved): start and follow again, at most $max times"
  if [[ -n ${RLDYN_TPU_RECREATE:-} ]]; then
    tpu::dry_note "slice not ACTIVE after a failure: tpu/delete.sh --yes, tpu/create.sh, tpu/setup.sh --commit=$sha, then start and follow again"
  fi
  exit 0
fi

restarts=0
reconnects=0
need_start=1
[[ -z ${RLDYN_TPU_ATTACH:-} ]] || need_start=0

restart() {  # restart REASON: counts a restart, or exits 75 when none are left or none are possible
  if [[ ${#TPU_ARGS[@]} -eq 0 ]]; then
    tpu::note "$1; rerun tpu/launch.sh with the run's flags to resume"
    exit "$EX_TEMPFAIL"
  fi
  if ((restarts >= max)); then
    tpu::note "$1; no restarts left (--max_restarts=$max); rerun tpu/launch.sh to resume"
    exit "$EX_TEMPFAIL"
  fi
  restarts=$((restarts + 1))
  tpu::note "$1: restart $restarts of $max"
  need_start=1
}

recreate() {  # delete the preempted slice, create it again and install the same commit
  local state unknown=0
  while :; do
    state=$(tpu::slice_state)
    case $state in
      ACTIVE) break ;;
      SUSPENDED | SUSPENDING | FAILED | PREEMPTED) "$TPU_DIR/delete.sh" --yes ;;
      ABSENT) "$TPU_DIR/create.sh" ;;
      UNKNOWN)
        ((++unknown <= 5)) || tpu::die "cannot read the state of $RLDYN_TPU_NAME to recreate it"
        sleep "$RLDYN_TPU_POLL_S" ;;
      *)
        tpu::note "queued resource $RLDYN_TPU_NAME: $state"
        sleep "$RLDYN_TPU_POLL_S" ;;
    esac
  done
  "$TPU_DIR/setup.sh"
}

failed() {  # failed RC WHAT: a failure other than exit 75; was it the run, ssh, or a preempted slice?
  local state
  state=$(tpu::slice_state)
  case $state in
    ACTIVE | UNKNOWN)
      if (($1 != 255)); then
        tpu::note "$2 failed with exit $1 (slice $state); worker logs: tpu/logs.sh"
        exit "$1"
      fi
      reconnects=$((reconnects + 1))
      ((reconnects <= 5)) ||
        tpu::die "cannot reach $RLDYN_TPU_NAME by ssh (5 tries); the run may still be going: tpu/launch.sh --attach"
      tpu::note "ssh could not connect ($2); retrying in ${RLDYN_TPU_POLL_S}s"
      sleep "$RLDYN_TPU_POLL_S" ;;
    *)
      if [[ -z ${RLDYN_TPU_RECREATE:-} ]]; then
        tpu::note "slice $RLDYN_TPU_NAME is $state (preempted?); tpu/launch.sh --recreate (or tpu/run.sh) recreates it and resumes"
        exit "$EX_TEMPFAIL"
      fi
      restart "slice $RLDYN_TPU_NAME is $state"
      recreate ;;
  esac
}

while :; do
  if ((need_start)); then
    rc=0
    tpu::ssh all "$start" || rc=$?
    if ((rc != 0)); then
      failed "$rc" "starting the run"
      continue
    fi
    need_start=0
    reconnects=0
    if [[ -n ${RLDYN_TPU_DETACH:-} ]]; then
      tpu::note "started; follow it with tpu/launch.sh --attach or tpu/logs.sh --follow"
      exit 0
    fi
  fi
  rc=0
  tpu::ssh 0 "$follow" || rc=$?
  case $rc in
    0)
      tpu::note "the run finished"
      exit 0 ;;
    "$EX_TEMPFAIL")
      reconnects=0
      restart "the run exited $EX_TEMPFAIL (preempted, state saved)" ;;
    *) failed "$rc" "the run" ;;
  esac
done
