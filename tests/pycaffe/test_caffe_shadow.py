"""A BVLC Caffe checkout first on sys.path hides brewnet's `caffe`: the failing import of caffe._caffe says so
and what to do (_brewnet_caffe_check.py, run at start-up by brewnet-caffe-check.pth).  Each case runs in a new
interpreter, with a stand-in for Caffe's python/ folder that the test writes."""
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import _brewnet_caffe_check

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def caffe_python(tmp_path):
    """A folder laid out like Caffe's python/: caffe/__init__.py imports the compiled caffe._caffe, as Caffe's
    does (through pycaffe.py), and a script that imports caffe."""
    package = tmp_path / "python" / "caffe"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("from .pycaffe import Net, SGDSolver\n")
    (package / "pycaffe.py").write_text("from ._caffe import Net, SGDSolver\n")
    (tmp_path / "python" / "train.py").write_text("import caffe\nprint('trained')\n")
    return tmp_path / "python"


def run(args, cwd, pythonpath=None):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([sys.executable] + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_installed_check_explains_a_checkout_on_pythonpath(caffe_python, tmp_path):
    pth = Path(sysconfig.get_paths()["purelib"]) / _brewnet_caffe_check.PTH_NAME
    assert pth.is_file(), f"{pth} is missing: `make venv`, or {sys.executable} -m _brewnet_caffe_check install"
    result = run(["-c", "import caffe"], cwd=tmp_path, pythonpath=caffe_python)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last == (f"ModuleNotFoundError: No module named 'caffe._caffe': `import caffe` found BVLC Caffe's own "
                    f"Python package at {caffe_python / 'caffe'} instead of brewnet's, because {caffe_python} "
                    f"comes first on sys.path: it is on PYTHONPATH.  That package needs Caffe's compiled "
                    f"extension, which brewnet replaces.  To use brewnet, remove {caffe_python} from PYTHONPATH; "
                    f"brewnet's `caffe` provides Net, SGDSolver, io, draw, coord_map, NCCL and the rest itself.")
    # without the checkout on the path the same interpreter imports brewnet's caffe
    result = run(["-c", "import caffe, brewnet; print(caffe.__version__ == brewnet.__version__)"], cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "True", result.stderr


def test_check_explains_a_script_run_inside_the_checkout(caffe_python):
    result = run([str(caffe_python / "train.py")], cwd=caffe_python.parent)
    assert result.returncode == 1 and "trained" not in result.stdout
    assert f"BVLC Caffe's own Python package at {caffe_python / 'caffe'} instead of brewnet's" in result.stderr
    assert "it is the folder of the script being run" in result.stderr
    assert "run the script from a copy outside that folder" in result.stderr


def test_finder_answers_only_for_caffe_underscore_caffe(caffe_python, tmp_path):
    """install() on its own (what the .pth line calls); other missing modules keep Python's own message."""
    code = ("import sys; sys.path.append({repo!r}); import _brewnet_caffe_check as check; check.install(); "
            "check.install(); print(sys.meta_path.count(check.ShadowedCaffeFinder)); import {module}")
    result = run(["-c", code.format(repo=str(REPO), module="nothing_here_xyz")], cwd=tmp_path,
                 pythonpath=caffe_python)
    assert result.stdout.strip() == "1"
    assert result.stderr.strip().splitlines()[-1] == "ModuleNotFoundError: No module named 'nothing_here_xyz'"
    result = run(["-c", code.format(repo=str(REPO), module="caffe")], cwd=tmp_path, pythonpath=caffe_python)
    assert "No module named 'caffe._caffe': `import caffe` found BVLC Caffe's own Python package" in result.stderr
