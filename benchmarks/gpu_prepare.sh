#!/usr/bin/env bash
# Here, before a lent GPU session's one device call: what that bare machine lacks goes into .gpu/ (ignored by
# git, sent with `carry`).  Its Python 3.12 has torch, NumPy, protobuf and h5py but no lmdb, plyvel or
# matplotlib, and nothing can be downloaded there.  The golden data travel with the working tree (tests/golden);
# matplotlib stays here (the working tree and .gpu must fit in 64 MiB): figures are drawn after the run.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .gpu && mkdir -p .gpu/whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .gpu/whl lmdb plyvel pillow
du -sh .gpu
