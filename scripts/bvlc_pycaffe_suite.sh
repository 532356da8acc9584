#!/usr/bin/env bash
# Runs BVLC Caffe's own pycaffe test files, unchanged, against brewnet.
#
#   scripts/bvlc_pycaffe_suite.sh CAFFE_CHECKOUT [pytest args...]
#
# CAFFE_CHECKOUT is a work tree of BVLC/caffe (python/caffe/test, examples/, models/).  Nothing of it is
# copied into this repository: the test files are copied into a temporary tree laid out like Caffe's
# (python/caffe/test/*.py, with examples/ and models/ beside python/, which test_draw walks), whose
# python/caffe holds only the test folder.  So `import caffe` inside the tests resolves to the installed
# `caffe` package — brewnet's alias package — and never to Caffe's python/caffe/__init__.py (which needs
# the compiled caffe._caffe).  The tests run from inside the test folder, as `python -m pytest` puts that
# folder (and not Caffe's python/) on sys.path; test_solver imports test_net and the Python layers import
# test_python_layer from there, as in Caffe's tree.  The files use unittest's assertEquals and
# assertRaisesRegexp, which Python 3.12 removed: run them with Python 3.11 or older.
set -euo pipefail

if [ $# -lt 1 ] || [ ! -d "$1/python/caffe/test" ]; then
    echo "usage: $0 CAFFE_CHECKOUT [pytest args...]  (a BVLC/caffe work tree with python/caffe/test)" >&2
    exit 2
fi
checkout=$(cd "$1" && pwd)
shift
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$here/.venv/bin/python}
[ -x "$python" ] || python=python3

tree=$(mktemp -d "${TMPDIR:-/tmp}/bvlc_pycaffe.XXXXXX")
trap 'rm -rf "$tree"' EXIT
mkdir -p "$tree/python/caffe/test"
cp "$checkout"/python/caffe/test/*.py "$tree/python/caffe/test/"
for dir in examples models; do
    [ -d "$checkout/$dir" ] && ln -s "$checkout/$dir" "$tree/$dir"
done

cd "$tree/python/caffe/test"
# Fail loudly, before any test, if `import caffe` would not be brewnet's.
"$python" -c 'import caffe, brewnet, sys
if not hasattr(caffe, "__version__") or "brewnet" not in sys.modules:
    sys.exit("import caffe does not resolve to brewnet: %s" % caffe.__file__)
print("caffe =", caffe.__file__)'
# Test files named among the arguments (test_coord_map.py, test_net.py::TestNet) narrow the run; else all.
paths=.
for arg in "$@"; do
    case "$arg" in test_*) paths= ;; esac
done
"$python" -m pytest -p no:cacheprovider --rootdir "$tree/python/caffe/test" "$@" $paths
