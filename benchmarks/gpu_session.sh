#!/usr/bin/env bash
# There, on the lent GPU machine (see benchmarks/gpu_check.py): the one command of a session's device call,
#   run(command="bash benchmarks/gpu_session.sh", carry=[".gpu"], timeout_s=300)
# after `bash benchmarks/gpu_prepare.sh` here.  Results land in $OUT (gpu_results.md / .json, the log).
set -uo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl \
    && export PYTHONPATH="/tmp/site:$PWD"
export BREWNET_GOLDEN="$PWD/.gpu/golden" PYTHONUNBUFFERED=1 OUT="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 270 python3 -m benchmarks.gpu_check --out "$OUT" 2>&1 | tee "$OUT/gpu_check.log"
