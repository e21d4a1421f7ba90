#!/usr/bin/env bash
# One host with several GPUs (e.g. 8xH100): one process per GPU, joined by jax.distributed on
# localhost. The SAE sweep trains as one computation sharded over every GPU; the per-SAE stages
# (core metrics, AutoInterp, steering, ΔTC) give each process its share of the SAEs, so every GPU
# works in every stage.
#
#   launch/multi_gpu.sh [SWEEP] [extra `python -m jaxsae.launch` arguments...]
#   launch/multi_gpu.sh full --out runs/full
#   NGPU=4 launch/multi_gpu.sh debug
#
# Environment: VENV (default .venv, made by launch/single_gpu.sh), NGPU (default: the GPUs that
# nvidia-smi lists), JAXSAE_PORT (coordinator port, default 12355), LOG_DIR (per-process logs of
# processes 1..N-1, default runs/logs; process 0 prints to this terminal).
# Re-running the same command resumes where the run stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
SWEEP="${1:-full}"; shift || true
VENV="${VENV:-.venv}"
NGPU="${NGPU:-$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU' || true)}"
PORT="${JAXSAE_PORT:-12355}"
LOG_DIR="${LOG_DIR:-runs/logs}"
if ! [ "$NGPU" -ge 1 ] 2>/dev/null; then
  echo "multi_gpu.sh: no GPU found (set NGPU)" >&2
  exit 2
fi
mkdir -p "$LOG_DIR"
export JAXSAE_COORDINATOR="localhost:$PORT" JAXSAE_NUM_PROCESSES="$NGPU"
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}"

pids=()
for ((i = NGPU - 1; i >= 0; i--)); do
  if [ "$i" -eq 0 ]; then
    CUDA_VISIBLE_DEVICES=0 JAXSAE_PROCESS_ID=0 "$VENV/bin/python" -m jaxsae.launch --sweep "$SWEEP" "$@" &
  else
    CUDA_VISIBLE_DEVICES="$i" JAXSAE_PROCESS_ID="$i" "$VENV/bin/python" -m jaxsae.launch --sweep "$SWEEP" "$@" \
      > "$LOG_DIR/process-$i.log" 2>&1 &
  fi
  pids+=("$!")
done
# the first process to fail stops the others (one killed outright could not tell them at a barrier)
status=0
for _ in "${pids[@]}"; do
  if ! wait -n; then
    status=1
    kill "${pids[@]}" 2>/dev/null || true
  fi
done
exit "$status"
