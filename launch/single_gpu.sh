#!/usr/bin/env bash
# One GPU (debugging, or a small sweep): install jaxsae with CUDA JAX and run a sweep.
#
#   launch/single_gpu.sh [SWEEP] [extra `python -m jaxsae.launch` arguments...]
#   launch/single_gpu.sh debug --out runs/debug
#   JUDGE_API_KEY=... launch/single_gpu.sh full --judge.kind api --judge.api-key-env JUDGE_API_KEY
#
# Environment: VENV (default .venv), JAX_EXTRA (default "cuda12"; "tpu" on a TPU VM, "" for CPU).
# Gated Hub models (Gemma) need `huggingface-cli login` or HF_TOKEN in the environment first.
set -euo pipefail
cd "$(dirname "$0")/.."
SWEEP="${1:-debug}"; shift || true
VENV="${VENV:-.venv}"
JAX_EXTRA="${JAX_EXTRA-cuda12}"

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q -e .
if [ -n "$JAX_EXTRA" ]; then
  "$VENV/bin/python" -m pip install -q "jax[$JAX_EXTRA]"
fi
"$VENV/bin/python" -c 'import jax; print("devices:", jax.devices())'

# Let XLA use most of the GPU's memory for the model + the stacked SAE sweep.
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}"
exec "$VENV/bin/python" -m jaxsae.launch --sweep "$SWEEP" "$@"
