"""Shared fixtures: where the golden Caffe outputs live, float64 mode for gradient checks."""
import os
import pathlib

import pytest
import torch

from brewnet.core import common

REPO = pathlib.Path(__file__).resolve().parent.parent
GOLDEN = pathlib.Path(os.environ.get("BREWNET_GOLDEN", REPO.parent / "shared" / "golden"))


@pytest.fixture
def golden():
    if not GOLDEN.is_dir():
        pytest.fail(f"golden data not found at {GOLDEN} (set BREWNET_GOLDEN)")
    return GOLDEN


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
