#!/usr/bin/env bash
# There, on the lent GPU machine (see benchmarks/gpu_check.py): the one command of a session's device call,
#   run(command="bash benchmarks/gpu_session.sh", carry=[".gpu"], timeout_s=300)
# after `bash benchmarks/gpu_prepare.sh` here.  Results land in $OUT (gpu_results.md / .json, the log).
# TESTS="tests/..." first runs those tests in GPU mode ($OUT/tests.log).  BOOK="5.9 5.9:SETTING ..." runs the
# book's experiments that want a GPU (5.9: LeNet++ at caffe-face's own size and schedule, or another of
# examples/book/ch5_9.py's SETTINGS) into $OUT/book.tar.gz; figures are drawn here afterwards
# (python -m examples.book.ch5_9 --draw DIR).  CRF=1 checks the dense CRF and CRF-as-RNN on CUDA (gpu_crf.py).
# GPU_CHECK=0 skips the check.
set -uo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl \
    && export PYTHONPATH="/tmp/site:$PWD"
export BREWNET_GOLDEN="$PWD/tests/golden" PYTHONUNBUFFERED=1 OUT="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
# Book sections run side by side, each SECTION[:SETTING] into /tmp/book/<section>-<setting> (9: FCN, dense CRF and
# CRF-as-RNN at examples/book/ch9.py's GPU sizes, into /tmp/book/9, with the RESULTS.md it updated); their numbers,
# features and logs come back in one archive (a call returns at most 8 files).
mkdir -p /tmp/book
for section in ${BOOK:-}; do
    name="${section%%:*}"; setting="${section#*:}"; [ "$setting" != "$section" ] || setting=caffe-face
    case "$name" in
        5.9) (timeout "${BOOK_TIMEOUT:-240}" python3 -m examples.book.ch5_9 --settings "$setting" --gpu 0 \
                  --no-figures --out "/tmp/book/5.9-$setting" > "/tmp/book/5.9-$setting.log" 2>&1
              echo "book 5.9 $setting: rc $?"; tail -1 "/tmp/book/5.9-$setting.log") & ;;
        9) (timeout "${BOOK_TIMEOUT:-240}" python3 -m examples.book 9 --gpu 0 --out /tmp/book/9 \
                  > /tmp/book/9.log 2>&1
            echo "book 9: rc $?"; grep -v "^FCN\|^CRF-as" /tmp/book/9.log | tail -6
            cp examples/book/RESULTS.md /tmp/book/9/RESULTS.md) & ;;
        *) echo "book section $section: not a GPU experiment";;
    esac
done
# While the book runs: the tests in GPU mode, and (CRF=1) the dense CRF and MultiStageMeanfield on CUDA against
# the CPU (benchmarks/gpu_crf.py).
[ -z "${TESTS:-}" ] || BREWNET_TEST_MODE=gpu timeout 120 python3 -m pytest -q -p no:cacheprovider $TESTS \
    > "$OUT/tests.log" 2>&1; [ -z "${TESTS:-}" ] || tail -3 "$OUT/tests.log"
[ "${CRF:-0}" = 0 ] || timeout 200 python3 -m benchmarks.gpu_crf --out "$OUT" 2>&1 | tee "$OUT/gpu_crf.log"
wait
[ -z "${BOOK:-}" ] || (cd /tmp/book && tar czf "$OUT/book.tar.gz" --exclude=data --exclude='*.solverstate*' \
                                         --exclude='*_iter_*' --exclude='*.caffemodel' --exclude=voc_digits .)
[ "${GPU_CHECK:-1}" = 0 ] || timeout 270 python3 -m benchmarks.gpu_check --out "$OUT" 2>&1 | tee "$OUT/gpu_check.log"
