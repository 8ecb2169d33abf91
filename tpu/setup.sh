#!/usr/bin/env bash
# Usage: tpu/setup.sh --name=NAME --zone=ZONE --project=PROJECT [flags]
#
# Installs one commit of this checkout on every worker of the slice: `git archive` of the commit (HEAD
# by default) into ${TMPDIR:-/tmp}/rldyn-COMMIT.tar.gz, scp to every worker, unpacked there as
# ~/rldyn-COMMIT (the directory launch.sh runs from, so relative --config paths work) and pip-installed
# with its dependencies plus --pip. Copies tpu/worker.sh to ~/rldyn-worker.sh. Rerunning is safe; a
# different commit is installed beside the others.
#
#   --name=NAME, --zone=ZONE, --project=PROJECT   the slice (as for create.sh)
#   --commit=REV             what to install (default HEAD)                    (RLDYN_TPU_COMMIT)
#   --allow_dirty            install HEAD although tracked files have uncommitted changes (they are
#                            not installed)                                    (RLDYN_TPU_ALLOW_DIRTY)
#   --extras=LIST            setup.py extras, default hf,tensorboard           (RLDYN_TPU_EXTRAS)
#   --pip='REQS'             more requirements, split at spaces, default 'jax[tpu] gcsfs'
#                            (gcsfs lets etils.epath read and write gs://)     (RLDYN_TPU_PIP)
#   --dry_run                print the commands instead of running them
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

tpu::parse "name zone project commit allow_dirty extras pip" "$@"
[[ ${#TPU_ARGS[@]} -eq 0 ]] || tpu::die "setup.sh takes no arguments after --"
tpu::require name zone project
sha=$(tpu::commit check_dirty)
dir=rldyn-$sha
tarball=${TMPDIR:-/tmp}/$dir.tar.gz
read -r -a pip <<< "${RLDYN_TPU_PIP:-}"

install="set -e; [ -f $dir/COMMIT ] || { rm -rf $dir; tar -xzf $dir.tar.gz; echo $sha > $dir/COMMIT; }"
install+="; cp $dir/tpu/worker.sh rldyn-worker.sh"
install+="; $(tpu::quote_words python3 -m pip install --user "./$dir.tar.gz${RLDYN_TPU_EXTRAS:+[$RLDYN_TPU_EXTRAS]}" \
  ${pip[@]+"${pip[@]}"})"
install+="; $(tpu::quote_words python3 -m pip install --user --no-deps --force-reinstall "./$dir.tar.gz")"
install+="; python3 -c 'import jax, rldyn; print(rldyn.__file__, jax.__version__)'"

tpu::run git -C "$REPO_DIR" archive --format=tar.gz --prefix="$dir/" -o "$tarball" "$sha"
# shellcheck disable=SC2046
tpu::run gcloud compute tpus tpu-vm scp "$tarball" "$RLDYN_TPU_NAME:$dir.tar.gz" $(tpu::loc) --worker=all
tpu::ssh all "$install"
[[ -n ${RLDYN_TPU_DRY_RUN:-} ]] || tpu::note "rldyn ${sha:0:12} is installed on every worker of $RLDYN_TPU_NAME"
