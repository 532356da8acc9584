#!/usr/bin/env bash
# There, on the lent GPU machine (see benchmarks/gpu_check.py): the one command of a session's device call,
#   run(command="bash benchmarks/gpu_session.sh", carry=[".gpu"], timeout_s=300)
# after `bash benchmarks/gpu_prepare.sh` here.  Results land in $OUT (gpu_results.md / .json, the log).
# BOOK="5.9" first runs the book's experiments that want a GPU (5.9: LeNet++ at caffe-face's own size and
# schedule) into $OUT/book/<section>, figures drawn here afterwards (python -m examples.book.ch5_9 --draw DIR);
# GPU_CHECK=0 skips the check.
set -uo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl \
    && export PYTHONPATH="/tmp/site:$PWD"
export BREWNET_GOLDEN="$PWD/tests/golden" PYTHONUNBUFFERED=1 OUT="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
for section in ${BOOK:-}; do
    case "$section" in
        5.9) timeout "${BOOK_TIMEOUT:-240}" python3 -m examples.book.ch5_9 --settings caffe-face --gpu 0 \
                 --no-figures --out /tmp/book/5.9 > "$OUT/book_5.9.log" 2>&1; echo "book 5.9: rc $?"; tail -1 "$OUT/book_5.9.log"
             mkdir -p "$OUT/book/5.9" && cp /tmp/book/5.9/*.{json,npz,prototxt,caffemodel} "$OUT/book/5.9/";;
        *) echo "book section $section: not a GPU experiment";;
    esac
done
[ "${GPU_CHECK:-1}" = 0 ] || timeout 270 python3 -m benchmarks.gpu_check --out "$OUT" 2>&1 | tee "$OUT/gpu_check.log"
