#!/usr/bin/env bash
# Runs on every TPU worker, not on your laptop: tpu/setup.sh copies it to ~/rldyn-worker.sh, and
# launch.sh, logs.sh and stop.sh call it over ssh. One rldyn run per worker at a time.
#
#   bash rldyn-worker.sh start COMMIT ARGS...  start `python3 -m rldyn.main ARGS...` in ~/rldyn-COMMIT,
#                                               detached (it survives the ssh session), output appended
#                                               to ~/rldyn-logs/HOSTNAME.log
#   bash rldyn-worker.sh wait      follow the log until the run ends; exit with the run's exit code
#   bash rldyn-worker.sh tail      follow the log (Ctrl-C stops following, not the run)
#   bash rldyn-worker.sh cat       print the whole log
#   bash rldyn-worker.sh stop      SIGTERM to the run (rldyn saves, then exits 75: rerun to resume)
#   bash rldyn-worker.sh status    running / exited CODE / never started
#
# Environment variables set on the start command line (NAME=VALUE bash rldyn-worker.sh start ...) reach
# the run. A start while a previous run is still exiting waits up to 120 s for it.
set -euo pipefail

SELF=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
LOGS=$HOME/rldyn-logs
HOST=$(hostname)
LOG=$LOGS/$HOST.log
PID=$LOGS/$HOST.pid
EXIT=$LOGS/$HOST.exit

running() { [[ -f $PID ]] && kill -0 "$(cat "$PID")" 2> /dev/null; }

stamp() { date -u +%Y-%m-%dT%H:%M:%SZ; }

case ${1:-} in
  start)
    [[ $# -ge 2 ]] || { echo "$HOST: usage: rldyn-worker.sh start COMMIT ARGS..." >&2; exit 2; }
    root=$HOME/rldyn-$2
    shift 2
    if [[ ! -f $root/COMMIT ]]; then
      echo "$HOST: rldyn ${root#"$HOME/rldyn-"} is not installed here; run tpu/setup.sh --commit=${root#"$HOME/rldyn-"}" >&2
      exit 3
    fi
    mkdir -p "$LOGS"
    for _ in $(seq 120); do running || break; sleep 1; done
    if running; then
      echo "$HOST: a run is still going (pid $(cat "$PID")); tpu/stop.sh stops it, tpu/launch.sh --attach follows it" >&2
      exit 3
    fi
    rm -f "$EXIT"
    echo "=== $(stamp) $HOST rldyn $(cat "$root/COMMIT"): python3 -m rldyn.main $*" >> "$LOG"
    cd "$root"
    nohup setsid bash "$SELF" _run "$@" >> "$LOG" 2>&1 < /dev/null &
    echo $! > "$PID"
    echo "$HOST: started (pid $!), log ~/rldyn-logs/$HOST.log"
    ;;
  _run)  # the detached session leader: runs rldyn, records its exit code
    shift
    # The run gets SIGTERM itself (stop.sh signals the whole process group, a shutting-down VM every
    # process). A trapped signal waits for the foreground command, so this shell records its exit code.
    trap ':' TERM INT HUP
    rc=0
    # RLDYN_DISTRIBUTED=1: a multi-controller run; rldyn calls jax.distributed.initialize(), which finds
    # its peers through the TPU VM's metadata server.
    RLDYN_DISTRIBUTED=1 PYTHONUNBUFFERED=1 python3 -m rldyn.main "$@" || rc=$?
    echo "=== $(stamp) $HOST exit $rc"
    echo "$rc" > "$EXIT"
    exit "$rc"
    ;;
  wait)
    [[ -f $PID ]] || { echo "$HOST: no run was started here" >&2; exit 3; }
    tail -n 100 -F --pid="$(cat "$PID")" "$LOG" 2> /dev/null || true
    [[ -f $EXIT ]] || { echo "$HOST: the run ended without recording an exit code" >&2; exit 1; }
    exit "$(cat "$EXIT")"
    ;;
  tail)
    exec tail -n 100 -F "$LOG"
    ;;
  cat)
    [[ -f $LOG ]] || { echo "$HOST: no log (no run was started here)"; exit 0; }
    exec cat "$LOG"
    ;;
  stop)
    if running; then
      kill -TERM -- "-$(cat "$PID")"
      echo "$HOST: sent SIGTERM to the run (pid $(cat "$PID"))"
    else
      echo "$HOST: no run is going"
    fi
    ;;
  status)
    if running; then echo "$HOST: running (pid $(cat "$PID"))"
    elif [[ -f $EXIT ]]; then echo "$HOST: exited $(cat "$EXIT")"
    elif [[ -f $PID ]]; then echo "$HOST: ended without recording an exit code"
    else echo "$HOST: never started"
    fi
    ;;
  *)
    echo "$HOST: usage: rldyn-worker.sh start COMMIT ARGS... | wait | tail | cat | stop | status" >&2
    exit 2
    ;;
esac
