#!/usr/bin/env bash
# The GPU check on a bare machine (Python 3.12, torch with CUDA, transformers 5.x; no ldm, k-diffusion,
# open_clip). Run from the repository root with the wheels of bench/gpu_wheels.txt in .whl/ (carried):
#   bash bench/gpu_check.sh            -> tables on stdout, gpu_check.md / gpu_check.json in $OUT
set -u
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "wheel install failed"; exit 1; }
export PYTHONPATH=/tmp/site
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 460 python3 bench/gpu_check.py --out "${OUT:-gpu_check_out}" "$@"
