#!/usr/bin/env bash
# Usage: tpu/create.sh --name=NAME --zone=ZONE --project=PROJECT --accelerator=TYPE [flags]
#
# Requests a TPU VM slice as a queued resource (id NAME, TPU node NAME) and waits until it is ACTIVE.
# Does nothing but wait when NAME already exists and is on its way to ACTIVE.
#
#   --name=NAME              queued resource and TPU node id                  (RLDYN_TPU_NAME)
#   --zone=ZONE              e.g. us-east5-a                                   (RLDYN_TPU_ZONE)
#   --project=PROJECT        GCP project id                                    (RLDYN_TPU_PROJECT)
#   --accelerator=TYPE       e.g. v5p-64, v6e-64, v5litepod-16, v4-32          (RLDYN_TPU_ACCELERATOR)
#   --runtime=VERSION        TPU VM image; default by generation: v2-alpha-tpuv5 (v5p),
#                            v2-alpha-tpuv5-lite (v5litepod), v2-alpha-tpuv6e (v6e),
#                            tpu-ubuntu2204-base (v2-v4)                       (RLDYN_TPU_RUNTIME)
#   --provisioning=MODE      on-demand (default) | spot | reserved | guaranteed (RLDYN_TPU_PROVISIONING)
#   --create_args='ARGS'     more `queued-resources create` flags, split at spaces,
#                            e.g. '--network=N --subnetwork=S'                 (RLDYN_TPU_CREATE_ARGS)
#   --dry_run                print the commands instead of running them
#
# Settings come from flags, else environment variables, else tpu/config.env (see tpu/README.md).
# RLDYN_TPU_POLL_S (default 30) is the polling interval while waiting.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

tpu::parse "name zone project accelerator runtime provisioning create_args" "$@"
[[ ${#TPU_ARGS[@]} -eq 0 ]] || tpu::die "create.sh takes no arguments after --; use --create_args='...'"
tpu::require name zone project accelerator
runtime=$(tpu::runtime)

provisioning=()
case $RLDYN_TPU_PROVISIONING in
  spot) provisioning=(--spot) ;;
  reserved) provisioning=(--reserved) ;;
  guaranteed) provisioning=(--guaranteed) ;;
esac
read -r -a extra <<< "${RLDYN_TPU_CREATE_ARGS:-}"
state=""

if [[ -z ${RLDYN_TPU_DRY_RUN:-} ]]; then
  state=$(tpu::qr_state)
  case $state in
    ABSENT) ;;
    UNKNOWN) tpu::die "cannot read the state of queued resource $RLDYN_TPU_NAME (see gcloud's message above)" ;;
    FAILED | SUSPENDING | SUSPENDED | DELETING)
      tpu::die "queued resource $RLDYN_TPU_NAME exists and is $state; tpu/delete.sh it first (tpu/launch.sh --recreate does both)" ;;
    *) tpu::note "queued resource $RLDYN_TPU_NAME already exists ($state)" ;;
  esac
fi

if [[ -n ${RLDYN_TPU_DRY_RUN:-} || $state == ABSENT ]]; then
  # shellcheck disable=SC2046
  tpu::run gcloud compute tpus queued-resources create "$RLDYN_TPU_NAME" --node-id="$RLDYN_TPU_NAME" \
    $(tpu::loc) --accelerator-type="$RLDYN_TPU_ACCELERATOR" --runtime-version="$runtime" \
    ${provisioning[@]+"${provisioning[@]}"} ${extra[@]+"${extra[@]}"}
fi

if [[ -n ${RLDYN_TPU_DRY_RUN:-} ]]; then
  tpu::dry_note "then, every ${RLDYN_TPU_POLL_S}s until the state is ACTIVE:"
  tpu::describe_line
  exit 0
fi
tpu::wait_active || tpu::die "queued resource $RLDYN_TPU_NAME did not become ACTIVE; see: $(tpu::describe_line)"
tpu::note "slice $RLDYN_TPU_NAME ($RLDYN_TPU_ACCELERATOR) is ACTIVE"
