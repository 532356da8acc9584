#!/usr/bin/env bash
# Here, before a lent GPU session's one device call: what that bare machine lacks goes into .gpu/ (ignored by
# git, sent with `carry`).  Its Python 3.12 has torch, NumPy, protobuf and h5py but no lmdb, plyvel or matplotlib, nothing
# can be downloaded there, and ../shared (the golden data) does not travel with the working tree.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .gpu && mkdir -p .gpu/whl .gpu/golden
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .gpu/whl lmdb plyvel
# matplotlib and its dependencies for the book's figures, less NumPy (the machine's own stays, torch's match)
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .gpu/mpl matplotlib
rm -f .gpu/mpl/numpy-*.whl && mv .gpu/mpl/*.whl .gpu/whl/ && rmdir .gpu/mpl
GOLDEN="${BREWNET_GOLDEN:-tests/golden}"
cp -r "$GOLDEN/layers" "$GOLDEN/models" .gpu/golden/
du -sh .gpu
