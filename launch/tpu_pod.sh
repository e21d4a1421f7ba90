#!/usr/bin/env bash
# A TPU VM pod slice: create it (optional), install jaxsae on every worker, run the sweep on all
# workers at once. JAX discovers the pod itself (JAXSAE_DISTRIBUTED=auto -> jax.distributed.initialize()).
#
#   launch/tpu_pod.sh create              # create the slice (TPU_NAME, ZONE, ACCELERATOR, VERSION)
#   launch/tpu_pod.sh install             # copy this checkout to every worker and pip install it
#   launch/tpu_pod.sh run [SWEEP] [args]  # run `python -m jaxsae.launch` on --worker=all
#   launch/tpu_pod.sh fetch [SWEEP]       # copy the run folder back from worker 0
#   launch/tpu_pod.sh delete
#
# Environment: TPU_NAME (default jaxsae), ZONE (us-west4-a), ACCELERATOR (v5litepod-64),
# VERSION (v2-alpha-tpuv5-lite), PROJECT (gcloud default), OUT (run folder on the workers: storage
# every worker sees, e.g. a Filestore NFS or bucket-backed mount, since each worker writes the files
# of its share of the SAEs and its checkpoint shards; persistent, so a preempted slice resumes).
set -euo pipefail
cd "$(dirname "$0")/.."
TPU_NAME="${TPU_NAME:-jaxsae}"
ZONE="${ZONE:-us-west4-a}"
ACCELERATOR="${ACCELERATOR:-v5litepod-64}"
VERSION="${VERSION:-v2-alpha-tpuv5-lite}"
PROJECT_FLAG=${PROJECT:+--project=$PROJECT}
CMD="${1:-run}"; shift || true

ssh_all() {
  # shellcheck disable=SC2086
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" $PROJECT_FLAG --worker=all --command="$1"
}

case "$CMD" in
  create)
    # shellcheck disable=SC2086
    gcloud compute tpus tpu-vm create "$TPU_NAME" --zone="$ZONE" $PROJECT_FLAG \
      --accelerator-type="$ACCELERATOR" --version="$VERSION"
    ;;
  install)
    tar czf /tmp/jaxsae-src.tgz --exclude=.venv --exclude=runs --exclude=.git .
    # shellcheck disable=SC2086
    gcloud compute tpus tpu-vm scp /tmp/jaxsae-src.tgz "$TPU_NAME":~/jaxsae-src.tgz --zone="$ZONE" $PROJECT_FLAG --worker=all
    ssh_all 'mkdir -p ~/jaxsae && tar xzf ~/jaxsae-src.tgz -C ~/jaxsae && cd ~/jaxsae &&
             python3 -m venv .venv && .venv/bin/pip install -q -e . "jax[tpu]" &&
             .venv/bin/python -c "import jax; print(jax.process_index(), jax.local_device_count())"'
    ;;
  run)
    SWEEP="${1:-full}"; shift || true
    OUT="${OUT:-runs/$SWEEP}"
    ssh_all "cd ~/jaxsae && JAXSAE_DISTRIBUTED=auto HF_TOKEN=\${HF_TOKEN:-} .venv/bin/python -m jaxsae.launch --sweep $SWEEP --out $OUT $* 2>&1 | tee -a run.log"
    ;;
  fetch)
    SWEEP="${1:-full}"
    OUT="${OUT:-runs/$SWEEP}"
    mkdir -p runs
    # shellcheck disable=SC2086
    gcloud compute tpus tpu-vm scp --recurse "$TPU_NAME":~/jaxsae/"$OUT" runs/ --zone="$ZONE" $PROJECT_FLAG --worker=0
    ;;
  delete)
    # shellcheck disable=SC2086
    gcloud compute tpus tpu-vm delete "$TPU_NAME" --zone="$ZONE" $PROJECT_FLAG --quiet
    ;;
  *)
    echo "usage: launch/tpu_pod.sh create|install|run [SWEEP] [args]|fetch [SWEEP]|delete" >&2
    exit 2
    ;;
esac
