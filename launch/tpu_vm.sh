#!/usr/bin/env bash
# Train abcjax on a Cloud TPU VM or pod slice, from a laptop with the Google Cloud CLI (gcloud).
#
#   launch/tpu_vm.sh SUBCOMMAND [--dry-run] [options] [-- abcjax arguments]
#
# Subcommands, in the order of a run:
#   create       create the TPU VM (a pod slice has one VM per host, called workers)
#   setup        copy this checkout to every worker and install abcjax and jax[tpu] in ~/abcjax/.venv
#                (--git URL [--ref REF]: clone that repository there instead)
#   train        run `abcjax train --config CONFIG --workdir WORKDIR [ARGS]` on every worker at once;
#                each worker appends its output to its own ~/abcjax/logs/train.log. Running it again
#                on the same workdir resumes from the latest checkpoint.
#   logs         show the end of the logs of worker 0 (or --worker N, or all)
#   tensorboard  run TensorBoard on worker 0 over the workdir and forward it to localhost:PORT
#   sample       run `abcjax sample --workdir WORKDIR --out out/TUNES [ARGS]` on every worker;
#                worker 0 writes the tunebook ~/abcjax/out/TUNES
#   copy         copy the tunebook from worker 0 to DEST on this machine
#   delete       delete the TPU VM (no questions asked)
#
# Options (flag, else environment variable, else default):
#   --name NAME            ABCJAX_TPU_NAME      abcjax
#   --zone ZONE            ABCJAX_ZONE          us-central1-a
#   --project PROJECT      ABCJAX_PROJECT       gcloud's configured project
#   --accelerator TYPE     ABCJAX_ACCELERATOR   v5litepod-8 (v5e, 8 chips, 1 host); e.g. v5litepod-16
#                                               (4 hosts of 4), v6e-8, v5p-8, v4-8, v4-32 (4 hosts)
#   --runtime VERSION      ABCJAX_RUNTIME       the TPU software version for the accelerator:
#                                               v2-alpha-tpuv6e (v6e), v2-alpha-tpuv5 (v5p),
#                                               v2-alpha-tpuv5-lite (v5e), tpu-ubuntu2204-base (v4, older)
#   --spot                 ABCJAX_SPOT=1        create a Spot VM: much cheaper, preemptible at any time
#   --workdir gs://B/DIR   ABCJAX_WORKDIR       train, sample, tensorboard: the run's directory, a Cloud
#   --bucket BUCKET        ABCJAX_BUCKET        Storage path every worker reads and writes; default
#                                               gs://BUCKET/runs/NAME
#   --config FILE          ABCJAX_CONFIG        configs/default.py (a path inside the checkout)
#   --detach                                    train, sample: run under nohup and return at once, so
#                                               the run outlives this ssh session; follow it with `logs`
#   --git URL, --ref REF   ABCJAX_GIT_URL       setup: clone URL at REF (default HEAD) on every worker
#   --tunes FILE                                sample, copy: tunebook name (default tunes.abc)
#   --dest PATH                                 copy: where to put it here (default .)
#   --port PORT                                 tensorboard: local and remote port (default 6006)
#   --worker N|all                              logs: which worker (default 0)
#   --dry-run                                   print each command, shell-quoted, instead of running it
#   --config.KEY=VALUE and anything after `--`  train, sample: passed to abcjax as they are
#
# Before creating a slice, check here that the config fits it (no TPU needed; pip install -e '.[tpu]'):
#   abcjax compile --config configs/default.py --topology v5litepod-8   # --accelerator's name, or v5e:2x4
#
# A run from zero (about the same on a pod slice: only --accelerator changes):
#   launch/tpu_vm.sh create --spot
#   launch/tpu_vm.sh setup
#   launch/tpu_vm.sh train --bucket my-bucket --detach --config.train.steps=5000
#   launch/tpu_vm.sh tensorboard --bucket my-bucket          # then open http://localhost:6006
#   launch/tpu_vm.sh sample --bucket my-bucket -- --num_tunes 1000
#   launch/tpu_vm.sh copy --dest runs/
#   launch/tpu_vm.sh delete
#
# Common problems:
#   - Quota: "Quota limit ... exceeded" or "You have no quota": TPU quota is per project, zone,
#     TPU type, and on-demand versus spot. Ask for it under IAM & Admin > Quotas, or try another
#     zone or type your quota covers.
#   - Zone capacity: "There is no more capacity in the zone": try again later or another zone
#     that offers the type (gcloud compute tpus accelerator-types list --zone=ZONE).
#   - Spot preemption: the VM stops (state PREEMPTED in gcloud compute tpus tpu-vm list) and
#     cannot be restarted. abcjax saves a checkpoint on the SIGTERM when it gets one; `delete`,
#     `create --spot`, `setup`, then `train` with the same workdir resumes from the latest
#     checkpoint (which is why the workdir is in a bucket, not on the VM).
#   - Bucket permissions: "403 ... does not have storage.objects.create access": the TPU VM runs
#     as its service account (by default the project's Compute Engine default service account);
#     grant it roles/storage.objectAdmin on the bucket:
#       gcloud storage buckets add-iam-policy-binding gs://BUCKET \
#         --member=serviceAccount:PROJECT_NUMBER-compute@developer.gserviceaccount.com \
#         --role=roles/storage.objectAdmin
#     Put the bucket in the TPU's region, or every step's checkpoint crosses regions.
#   - Workers out of step: a pod run hangs at start or fails with mismatched programs when the
#     workers run different abcjax or jax versions (a setup that failed on one worker, a copy made
#     before an edit). Run `setup` again (it installs on every worker), then `train`.
#   - A run that never starts on a pod: every worker must run it; a train started on worker 0 alone
#     waits for the others. `train` and `sample` always use --worker=all.
#   - Ctrl-C during a foreground train ends the ssh sessions; each worker's run dies at its next
#     output line, without a checkpoint of its own (the last periodic one stays). Use --detach for
#     long runs, and `logs` to follow them.
#   - ssh to all workers asks for a passphrase per worker, or fails on a pod: run
#     `ssh-add ~/.ssh/google_compute_engine` first (gcloud's advice for --worker=all).
#   - "Python 3.11 not found": setup installs uv, which fetches Python itself; the workers need
#     outbound internet access (the default VM has an external IP).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

TPU_NAME=${ABCJAX_TPU_NAME:-abcjax}
ZONE=${ABCJAX_ZONE:-us-central1-a}
PROJECT=${ABCJAX_PROJECT:-}
ACCELERATOR=${ABCJAX_ACCELERATOR:-v5litepod-8}
RUNTIME=${ABCJAX_RUNTIME:-}
SPOT=$(truth ABCJAX_SPOT "${ABCJAX_SPOT:-}")
WORKDIR=${ABCJAX_WORKDIR:-}
BUCKET=${ABCJAX_BUCKET:-}
CONFIG=${ABCJAX_CONFIG:-configs/default.py}
DETACH=0
GIT_URL=${ABCJAX_GIT_URL:-}
GIT_REF=HEAD
TUNES=tunes.abc
DEST=.
PORT=6006
WORKER=0

# The flags that take a value, and the variable each sets; the switches, each setting its variable to 1.
VALUE_FLAGS='--name:TPU_NAME --zone:ZONE --project:PROJECT --accelerator:ACCELERATOR --runtime:RUNTIME
  --workdir:WORKDIR --bucket:BUCKET --config:CONFIG --git:GIT_URL --ref:GIT_REF --tunes:TUNES --dest:DEST
  --port:PORT --worker:WORKER'
SWITCHES='--spot:SPOT --detach:DETACH'

# The TPU software version (runtime) the Cloud TPU docs name for JAX on an accelerator type.
runtime_for() {
  case $1 in
    v6e-*) echo v2-alpha-tpuv6e ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v5litepod-* | v5e-*) echo v2-alpha-tpuv5-lite ;;
    v2-* | v3-* | v4-*) echo tpu-ubuntu2204-base ;;
    *) die "no default runtime for accelerator $1; give --runtime VERSION" ;;
  esac
}

# Checks the options the subcommand needs and fills in derived ones, before anything runs.
validate() {
  case $SUBCOMMAND in
    create | setup | train | sample | logs | tensorboard | copy | delete) ;;
    *) die "unknown subcommand '$SUBCOMMAND'; one of create, setup, train, sample, logs, tensorboard, copy, delete" ;;
  esac
  case $SUBCOMMAND in
    train | sample) ;;
    *) [ ${#PASSTHROUGH[@]} = 0 ] || die "$SUBCOMMAND passes no arguments to abcjax (only train and sample do)" ;;
  esac
  case $SUBCOMMAND in
    create) RUNTIME=${RUNTIME:-$(runtime_for "$ACCELERATOR")} ;;
    train | sample | tensorboard) resolve_workdir ;;
    logs) [[ $WORKER =~ ^([0-9]+|all)$ ]] || die "--worker $WORKER: give a worker number or all" ;;
  esac
  [[ $PORT =~ ^[0-9]+$ ]] || die "--port $PORT: give a port number"
  [[ $TUNES != */* ]] || die "--tunes $TUNES: give a file name (it lives in ~/$REMOTE_DIR/out on the workers)"
}

# WORKDIR from --workdir, else from the bucket; it must be in Cloud Storage for every worker to share it.
resolve_workdir() {
  if [ -z "$WORKDIR" ] && [ -n "$BUCKET" ]; then
    WORKDIR=gs://${BUCKET#gs://}/runs/$TPU_NAME
  fi
  [ -n "$WORKDIR" ] || die "$SUBCOMMAND needs a workdir: give --workdir gs://BUCKET/DIR or --bucket BUCKET"
  [[ $WORKDIR == gs://?* ]] || die "--workdir $WORKDIR: give a gs:// path (all workers share it, and it outlives the VM)"
}

# gcloud compute tpus tpu-vm VERB ARGS, in the zone and project.
gcloud_tpu() {
  run gcloud compute tpus tpu-vm "$@" --zone="$ZONE" ${PROJECT:+"--project=$PROJECT"}
}

# Runs a shell command on worker WORKER (a number or all) over gcloud's ssh, with more gcloud ARGS.
on_worker() {
  local worker=$1 command=$2
  shift 2
  gcloud_tpu ssh "$TPU_NAME" --worker="$worker" --command="$command" "$@"
}

cmd_create() {
  local spot=
  [ "$SPOT" = 0 ] || spot=--spot
  gcloud_tpu create "$TPU_NAME" --accelerator-type="$ACCELERATOR" --version="$RUNTIME" ${spot:+"$spot"}
}

cmd_setup() {
  if [ -z "$GIT_URL" ]; then
    make_source_tarball
    gcloud_tpu scp "$SOURCE_TARBALL" "$TPU_NAME:$REMOTE_TARBALL" --worker=all
  fi
  on_worker all "$(install_command 'jax[tpu]' tensorboard)"
}

cmd_train() {
  on_worker all "$(abcjax_command train.log train --config "$CONFIG" --workdir "$WORKDIR" \
    ${PASSTHROUGH[@]+"${PASSTHROUGH[@]}"})"
}

cmd_sample() {
  on_worker all "$(abcjax_command sample.log sample --workdir "$WORKDIR" --out "out/$TUNES" \
    ${PASSTHROUGH[@]+"${PASSTHROUGH[@]}"})"
}

cmd_logs() {
  on_worker "$WORKER" "tail -n 50 $REMOTE_DIR/logs/*.log"
}

cmd_tensorboard() {
  echo "TensorBoard on worker 0, forwarded to http://localhost:$PORT (Ctrl-C stops it)" >&2
  on_worker 0 "$REMOTE_DIR/.venv/bin/tensorboard --logdir $(quote_word "$WORKDIR") --port $PORT" \
    --ssh-flag="-L $PORT:localhost:$PORT"
}

cmd_copy() {
  gcloud_tpu scp "$TPU_NAME:$REMOTE_DIR/out/$TUNES" "$DEST" --worker=0
}

cmd_delete() {
  gcloud_tpu delete "$TPU_NAME" --quiet
}

main() {
  parse_args "$@"
  validate
  require_program gcloud "install the Google Cloud CLI: https://cloud.google.com/sdk/docs/install"
  "cmd_$SUBCOMMAND"
}

main "$@"
