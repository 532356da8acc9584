"""Caffe's global context (core/common.py): mode, device, and what GPU mode does to torch's TF32 flags."""
import pytest
import torch

from brewnet.core import common
from brewnet.errors import BrewnetError


@pytest.fixture
def restore_context():
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    yield
    common.set_mode_cpu()
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_gpu_mode_without_a_device_is_a_clear_error():
    with pytest.raises(BrewnetError, match="no CUDA device is available"):
        common.set_mode_gpu()
    assert common.mode() == common.CPU and common.device() == torch.device("cpu")


@pytest.mark.parametrize("env, allowed", [(None, False), ("1", True)])
def test_gpu_mode_computes_convolutions_in_float32_unless_asked(monkeypatch, restore_context, env, allowed):
    # PyTorch lets cuDNN round convolution inputs to TF32 by default; Caffe's numbers need float32.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    if env is None:
        monkeypatch.delenv(common.TF32_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(common.TF32_VARIABLE, env)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = not allowed
    common.set_mode_gpu()
    assert common.device() == torch.device("cuda", 0)
    assert torch.backends.cudnn.allow_tf32 is allowed
    assert torch.backends.cuda.matmul.allow_tf32 is allowed
