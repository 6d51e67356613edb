#!/usr/bin/env bash
# The lewm_fast GPU check from a bare checkout (only torch / triton / numpy / h5py / pytest installed):
#   OUT=DIR bash bench/gpu_check.sh [--dry-run] [--budget SECONDS] [--only env,cem-bf16,...]
# Stages, limits and outputs: bench/gpu_check.py. Give the command ~500 s (default budget 470 s).
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,clocks.sm,memory.used \
  --format=csv,noheader
exec "${PYTHON:-python3}" -m bench.gpu_check --out "${OUT:-/tmp/lewm_gpu_check}" "$@"
