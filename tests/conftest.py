"""Shared fixtures: where the golden Caffe outputs live, float64 mode for gradient checks.

The conformance data (outputs of the real BVLC Caffe 1.0, see tests/golden/README.md) is vendored in
tests/golden so that a clone alone passes its tests; BREWNET_GOLDEN points the tests at another copy (e.g. a
refreshed ../shared/golden).  Caffe's caffe.proto schema, which ours must stay wire-compatible with, is
vendored as tests/spec/caffe_schema.txt (BREWNET_SCHEMA overrides it)."""
import os
import pathlib
import shutil

import pytest
import torch

from brewnet.core import common

REPO = pathlib.Path(__file__).resolve().parent.parent
GOLDEN = pathlib.Path(os.environ.get("BREWNET_GOLDEN", REPO / "tests" / "golden"))
SCHEMA = pathlib.Path(os.environ.get("BREWNET_SCHEMA", REPO / "tests" / "spec" / "caffe_schema.txt"))


@pytest.fixture(scope="session")
def golden(tmp_path_factory):
    """The golden tree as the tests see it: a session folder of links to the vendored files, except LevelDB
    databases, which are copied, because opening one (as Caffe's reader does) rewrites its LOG and MANIFEST
    files: the vendored bytes stay as Caffe wrote them."""
    if not GOLDEN.is_dir():
        pytest.fail(f"golden data not found at {GOLDEN} (set BREWNET_GOLDEN)")
    view = tmp_path_factory.mktemp("golden")
    for source in GOLDEN.iterdir():
        _link_tree(source, view / source.name)
    return view


def _link_tree(source, target):
    if source.is_dir() and source.name.endswith("_leveldb"):
        shutil.copytree(source, target)
    elif source.is_dir():
        target.mkdir()
        for child in source.iterdir():
            _link_tree(child, target / child.name)
    else:
        target.symlink_to(source.resolve())


@pytest.fixture
def caffe_schema():
    """The text of Caffe's caffe.proto schema (field numbers, types, defaults)."""
    if not SCHEMA.is_file():
        pytest.fail(f"Caffe's schema not found at {SCHEMA} (set BREWNET_SCHEMA)")
    return SCHEMA.read_text()


@pytest.fixture
def float64():
    """Run a test with float64 blobs (gradient checks), restoring float32 afterwards."""
    common.set_default_dtype(torch.float64)
    yield
    common.set_default_dtype(torch.float32)


@pytest.fixture(autouse=True)
def _seed():
    common.set_random_seed(1701)
    yield


@pytest.fixture(autouse=True)
def _device_mode():
    """BREWNET_TEST_MODE=gpu runs each test in GPU mode: how a lent GPU session runs the device-agnostic tests
    (benchmarks/gpu_check.py, section tests_on_device).  Unset, as in CI, every test runs on the CPU."""
    if os.environ.get("BREWNET_TEST_MODE") != "gpu":
        yield
        return
    common.set_mode_gpu()
    yield
    common.set_mode_cpu()
