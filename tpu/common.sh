# Shared by the tpu/*.sh scripts (sourced, never run): settings, flags, printing and running commands,
# and the state of the queued resource. See tpu/README.md.
#
# Settings come from, highest first: a flag (--zone=Z), an environment variable (RLDYN_TPU_ZONE), the
# config file ($RLDYN_TPU_CONFIG, default tpu/config.env, git-ignored; template tpu/config.example.env).
# Every flag --some_flag is the variable RLDYN_TPU_SOME_FLAG, exported so that one script can run another.
# shellcheck shell=bash

TPU_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$TPU_DIR/.." && pwd)
# shellcheck disable=SC2034  # used by the scripts that source this file
EX_TEMPFAIL=75  # rldyn's exit code for "preempted (state saved); rerun the same command to resume"

# Flag kinds: value (--f=V), bool (--f), list (--f=V, repeatable; kept one per line).
declare -A TPU_FLAG_KIND=(
  [name]=value [zone]=value [project]=value [accelerator]=value [runtime]=value [provisioning]=value
  [create_args]=value [commit]=value [extras]=value [pip]=value [max_restarts]=value [dest]=value
  [worker]=value [env]=list
  [dry_run]=bool [yes]=bool [allow_dirty]=bool [recreate]=bool [attach]=bool [detach]=bool [follow]=bool
)
PROVISIONING_CHOICES="on-demand spot reserved guaranteed"

tpu::die() {  # one-line error, exit 2
  echo "$(basename "$0"): error: $*" >&2
  exit 2
}

tpu::note() {  # progress for the user (stderr, so that --dry_run's stdout stays a list of commands)
  echo "$(basename "$0"): $*" >&2
}

tpu::usage() {  # the script's leading comment block
  awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"
}

tpu::load_config() {
  local config=${RLDYN_TPU_CONFIG:-$TPU_DIR/config.env} var
  if [[ -n ${RLDYN_TPU_CONFIG:-} && ! -r $RLDYN_TPU_CONFIG ]]; then
    tpu::die "RLDYN_TPU_CONFIG=$RLDYN_TPU_CONFIG does not exist"
  fi
  if [[ -r $config ]]; then
    declare -A from_env=()
    for var in $(compgen -v RLDYN_TPU_); do [[ -z ${!var} ]] || from_env[$var]=${!var}; done
    set -a
    # shellcheck source=/dev/null
    source "$config"
    set +a
    for var in "${!from_env[@]}"; do export "$var=${from_env[$var]}"; done
  fi
  export RLDYN_TPU_PROVISIONING=${RLDYN_TPU_PROVISIONING:-on-demand}
  export RLDYN_TPU_EXTRAS=${RLDYN_TPU_EXTRAS-hf,tensorboard}
  export RLDYN_TPU_PIP=${RLDYN_TPU_PIP-jax[tpu] gcsfs}
  export RLDYN_TPU_MAX_RESTARTS=${RLDYN_TPU_MAX_RESTARTS:-10}
  export RLDYN_TPU_POLL_S=${RLDYN_TPU_POLL_S:-30}
}

tpu::flag_list() {  # "a b" -> "--a --b"
  local f out=()
  for f in $1; do out+=("--$f"); done
  echo "${out[*]}"
}

# tpu::parse "FLAGS THIS SCRIPT TAKES" "$@": loads the config, applies the flags, and leaves what follows
# `--` in TPU_ARGS.
tpu::parse() {
  local allowed words
  read -r -d '' -a words <<< "$1" || true
  allowed="${words[*]} dry_run"  # one line, single spaces
  shift
  tpu::load_config
  TPU_ARGS=()  # read by the calling script
  while (($#)); do
    local arg=$1
    shift
    if [[ $arg == -- ]]; then
      # shellcheck disable=SC2034
      TPU_ARGS=("$@")
      break
    fi
    if [[ $arg == --help || $arg == -h ]]; then
      tpu::usage
      exit 0
    fi
    if [[ $arg != --* ]]; then
      tpu::die "unexpected argument '$arg' (rldyn's own flags go after --); valid flags: $(tpu::flag_list "$allowed")"
    fi
    local key=${arg#--} value="" has_value=0
    if [[ $key == *=* ]]; then
      value=${key#*=}
      key=${key%%=*}
      has_value=1
    fi
    if [[ " $allowed " != *" $key "* ]]; then
      tpu::die "unknown flag --$key; valid flags: $(tpu::flag_list "$allowed")"
    fi
    local var=RLDYN_TPU_${key^^}
    case ${TPU_FLAG_KIND[$key]} in
      bool)
        ((has_value)) && tpu::die "--$key takes no value"
        export "$var=1" ;;
      value)
        ((has_value)) || tpu::die "--$key needs a value: --$key=VALUE"
        export "$var=$value" ;;
      list)
        ((has_value)) || tpu::die "--$key needs a value: --$key=VALUE"
        export "$var=${!var:+${!var}$'\n'}$value" ;;
    esac
  done
}

tpu::require() {  # tpu::require name zone ...: each must be set
  local key var
  for key in "$@"; do
    var=RLDYN_TPU_${key^^}
    [[ -n ${!var:-} ]] || tpu::die "--$key is required (or set $var in tpu/config.env)"
  done
  tpu::validate
}

tpu::validate() {  # checks every setting that is set
  local v
  v=${RLDYN_TPU_NAME:-}
  if [[ -n $v && ! $v =~ ^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$ ]]; then
    tpu::die "--name=$v is not a valid TPU name (lowercase letters, digits and hyphens, starting with a letter)"
  fi
  v=${RLDYN_TPU_ZONE:-}
  if [[ -n $v && ! $v =~ ^[a-z]+-[a-z]+[0-9]+-[a-z]$ ]]; then
    tpu::die "--zone=$v is not a zone (e.g. us-east5-a, europe-west4-b)"
  fi
  v=${RLDYN_TPU_PROJECT:-}
  if [[ -n $v && ! $v =~ ^[a-z][-a-z0-9.:]{4,61}[a-z0-9]$ ]]; then
    tpu::die "--project=$v is not a project id"
  fi
  v=${RLDYN_TPU_ACCELERATOR:-}
  if [[ -n $v && ! $v =~ ^v[0-9]+[a-z]*-[0-9]+$ ]]; then
    tpu::die "--accelerator=$v is not a TPU accelerator type (e.g. v4-32, v5p-64, v5litepod-16, v6e-64)"
  fi
  v=$RLDYN_TPU_PROVISIONING
  if [[ " $PROVISIONING_CHOICES " != *" $v "* ]]; then
    tpu::die "--provisioning=$v is not one of: $PROVISIONING_CHOICES"
  fi
  v=$RLDYN_TPU_MAX_RESTARTS
  [[ $v =~ ^[0-9]+$ ]] || tpu::die "--max_restarts=$v is not a non-negative integer"
  v=$RLDYN_TPU_POLL_S
  [[ $v =~ ^[0-9]+$ ]] || tpu::die "RLDYN_TPU_POLL_S=$v is not a non-negative integer (seconds)"
  v=${RLDYN_TPU_EXTRAS:-}
  if [[ -n $v && ! $v =~ ^[a-z0-9_-]+(,[a-z0-9_-]+)*$ ]]; then
    tpu::die "--extras=$v is not a comma-separated list of setup.py extras (e.g. hf,tensorboard)"
  fi
  v=${RLDYN_TPU_WORKER:-}
  [[ -z $v || $v =~ ^[0-9]+$ ]] || tpu::die "--worker=$v is not a worker index (0, 1, ...)"
  local line
  while IFS= read -r line; do
    [[ -z $line || $line =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || tpu::die "--env=$line is not NAME=VALUE"
  done <<< "${RLDYN_TPU_ENV:-}"
}

tpu::runtime() {  # the TPU VM software version: --runtime, else the one Google documents for the generation
  if [[ -n ${RLDYN_TPU_RUNTIME:-} ]]; then
    echo "$RLDYN_TPU_RUNTIME"
    return
  fi
  case $RLDYN_TPU_ACCELERATOR in
    v6e-*) echo v2-alpha-tpuv6e ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v5litepod-*) echo v2-alpha-tpuv5-lite ;;
    v2-* | v3-* | v4-*) echo tpu-ubuntu2204-base ;;
    *) tpu::die "no default --runtime for --accelerator=$RLDYN_TPU_ACCELERATOR; pass --runtime=VERSION" ;;
  esac
}

# Quoting for a POSIX shell: words made only of [A-Za-z0-9_@%+=:,./-] stay bare; others get single
# quotes, or double quotes when they hold a single quote but nothing special inside double quotes
# ($ ` \ " !), else single quotes with each ' written '"'"' (as Python's shlex.quote).
tpu::quote() {
  local s=$1 safe='^[A-Za-z0-9_@%+=:,./-]+$' dq_special='[$`\\"!]' sq="'" esc="'\"'\"'"
  if [[ $s =~ $safe ]]; then
    printf '%s' "$s"
  elif [[ $s != *"'"* ]]; then
    printf "'%s'" "$s"
  elif [[ ! $s =~ $dq_special ]]; then
    printf '"%s"' "$s"
  else
    printf "'%s'" "${s//$sq/$esc}"
  fi
}

tpu::quote_words() {  # one line; a --flag=value word is written --flag=QUOTED(value)
  local w out=() flag='^(--[A-Za-z0-9_.-]+=)(.*)$'
  for w in "$@"; do
    if [[ $w =~ $flag ]]; then
      out+=("${BASH_REMATCH[1]}$(tpu::quote "${BASH_REMATCH[2]}")")
    else
      out+=("$(tpu::quote "$w")")
    fi
  done
  local IFS=' '
  echo "${out[*]}"
}

# Runs a command; with --dry_run prints it (one line, exactly as it would run) instead.
tpu::run() {
  if [[ -n ${RLDYN_TPU_DRY_RUN:-} ]]; then
    tpu::quote_words "$@"
    return 0
  fi
  echo "+ $(tpu::quote_words "$@")" >&2
  "$@"
}

tpu::dry_note() {  # a comment line in the dry-run listing (what happens between the printed commands)
  [[ -z ${RLDYN_TPU_DRY_RUN:-} ]] || echo "# $*"
}

# ---- gcloud ----
tpu::loc() { echo "--zone=$RLDYN_TPU_ZONE" "--project=$RLDYN_TPU_PROJECT"; }

tpu::ssh() {  # tpu::ssh WORKER COMMAND: run COMMAND (a remote shell line, run from $HOME) on WORKER or all
  # shellcheck disable=SC2046
  tpu::run gcloud compute tpus tpu-vm ssh "$RLDYN_TPU_NAME" $(tpu::loc) --worker="$1" --command="$2"
}

tpu::describe_line() {  # the state query, as a shell line
  # shellcheck disable=SC2046
  tpu::quote_words gcloud compute tpus queued-resources describe "$RLDYN_TPU_NAME" $(tpu::loc) \
    "--format=value(state.state)"
}

# The queued resource's state (ACTIVE, WAITING_FOR_RESOURCES, SUSPENDED, ...), ABSENT when it does not
# exist, UNKNOWN when gcloud failed otherwise (network, auth): never act destructively on UNKNOWN.
tpu::qr_state() {
  local err out rc=0
  err=$(mktemp)
  out=$(gcloud compute tpus queued-resources describe "$RLDYN_TPU_NAME" --zone="$RLDYN_TPU_ZONE" \
    --project="$RLDYN_TPU_PROJECT" --format='value(state.state)' 2> "$err") || rc=$?
  if ((rc == 0)) && [[ -n $out ]]; then
    echo "$out"
  elif grep -qE 'NOT_FOUND|not found' "$err"; then
    echo ABSENT
  else
    sed 's/^/  gcloud: /' "$err" >&2
    echo UNKNOWN
  fi
  rm -f "$err"
}

# Like tpu::qr_state, but PREEMPTED when the queued resource is ACTIVE and its TPU VM was preempted or
# terminated.
tpu::slice_state() {
  local state node
  state=$(tpu::qr_state)
  if [[ $state == ACTIVE ]]; then
    node=$(gcloud compute tpus tpu-vm describe "$RLDYN_TPU_NAME" --zone="$RLDYN_TPU_ZONE" \
      --project="$RLDYN_TPU_PROJECT" --format='value(state)' 2> /dev/null) || node=""
    if [[ $node == PREEMPTED || $node == TERMINATED ]]; then state=PREEMPTED; fi
  fi
  echo "$state"
}

# Polls until the queued resource is ACTIVE; returns 1 (printing why) when it cannot become ACTIVE.
tpu::wait_active() {
  local state last="" unknown=0
  while :; do
    state=$(tpu::qr_state)
    [[ $state == "$last" ]] || tpu::note "queued resource $RLDYN_TPU_NAME: $state"
    last=$state
    case $state in
      ACTIVE) return 0 ;;
      FAILED | SUSPENDING | SUSPENDED | DELETING | ABSENT) return 1 ;;
      UNKNOWN) ((++unknown <= 5)) || return 1 ;;
      *) unknown=0 ;;
    esac
    sleep "$RLDYN_TPU_POLL_S"
  done
}

# ---- git ----
# The full commit to install or run: --commit, else HEAD. With check_dirty, refuses a HEAD whose tracked
# files have uncommitted changes (they would silently not be installed) unless --allow_dirty.
tpu::commit() {
  local check_dirty=${1:-} sha
  git -C "$REPO_DIR" rev-parse --git-dir > /dev/null 2>&1 ||
    tpu::die "$REPO_DIR is not a git checkout; the workers run a commit of it"
  if [[ -n ${RLDYN_TPU_COMMIT:-} ]]; then
    sha=$(git -C "$REPO_DIR" rev-parse --verify --quiet "$RLDYN_TPU_COMMIT^{commit}") ||
      tpu::die "--commit=$RLDYN_TPU_COMMIT is not a commit of $REPO_DIR"
  else
    sha=$(git -C "$REPO_DIR" rev-parse --verify --quiet "HEAD^{commit}") ||
      tpu::die "$REPO_DIR has no commit yet"
    if [[ -n $check_dirty && -z ${RLDYN_TPU_ALLOW_DIRTY:-} ]] &&
      [[ -n $(git -C "$REPO_DIR" status --porcelain --untracked-files=no) ]]; then
      tpu::die "uncommitted changes to tracked files would not be installed; commit them, or pass --allow_dirty to install HEAD (${sha:0:12}) as committed"
    fi
  fi
  echo "$sha"
}

# ---- the rldyn command line ----
# Checks the flags for python -m rldyn.main: --config and a gs:// --workdir (a worker's disk is its own
# and is lost with a preempted slice, so a resumable pod run keeps everything in the bucket).
tpu::check_rldyn_args() {
  local arg prev="" config="" workdir=""
  for arg in "$@"; do
    case $prev in
      --config) config=$arg ;;
      --workdir) workdir=$arg ;;
    esac
    case $arg in
      --config=*) config=${arg#--config=} ;;
      --workdir=*) workdir=${arg#--workdir=} ;;
    esac
    prev=$arg
  done
  if [[ -z $config || -z $workdir ]]; then
    tpu::die "give rldyn's flags after --, at least --config and --workdir, e.g. -- --config=experiments/two_phase.py --workdir=gs://BUCKET/runs/two_phase"
  fi
  if [[ $workdir != gs://?* ]]; then
    tpu::die "--workdir=$workdir must be a gs:// path: each worker's disk is its own and a recreated slice starts empty"
  fi
}
