"""Caffe's global context (Caffe::mode, device, random seed), as brewnet keeps it.

Caffe is a singleton holding the CPU/GPU mode, the device id and the random generator; brewnet keeps the same
three facts in this module.  Blobs and layers ask `device()` where to allocate.
"""
import contextlib
import random

import numpy as np
import torch

from .. import switches
from ..errors import BrewnetError

CPU, GPU = "CPU", "GPU"
_state = {"mode": CPU, "device_id": 0, "dtype": torch.float32, "solver_count": 1, "solver_rank": 0,
          "capturing": False}


def set_mode_cpu():
    _state["mode"] = CPU


def set_mode_gpu():
    if not torch.cuda.is_available():
        raise BrewnetError("set_mode_gpu: no CUDA device is available (torch.cuda.is_available() is False)")
    _state["mode"] = GPU
    set_tf32(switches.value(TF32_VARIABLE) == "1")


TF32_VARIABLE = "BREWNET_TF32"


def set_tf32(allowed):
    """Whether cuDNN convolutions and cuBLAS matrix products may round their inputs to TF32 (10-bit mantissa)
    on Ampere and later GPUs.  PyTorch allows it for convolutions by default, which moves results by ~1e-3
    relative; Caffe computes in float32, so GPU mode turns it off (BREWNET_TF32=1 keeps it on: faster, not
    Caffe's numbers).  The flags are torch's, process-wide: PyTorch code in the same process follows them."""
    torch.backends.cudnn.allow_tf32 = bool(allowed)
    torch.backends.cuda.matmul.allow_tf32 = bool(allowed)


def set_device(device_id):
    if torch.cuda.is_available() and not 0 <= device_id < torch.cuda.device_count():
        raise BrewnetError(f"set_device: device {device_id} does not exist "
                           f"({torch.cuda.device_count()} CUDA devices)")
    _state["device_id"] = int(device_id)


def mode():
    return _state["mode"]


def device():
    """The torch.device new blobs are allocated on."""
    if _state["mode"] == GPU:
        return torch.device("cuda", _state["device_id"])
    return torch.device("cpu")


def set_random_seed(seed):
    """Seed every generator brewnet draws from (fillers, dropout, shuffling, crops), as Caffe::set_random_seed."""
    seed = int(seed)
    torch.manual_seed(seed)
    np.random.seed(seed % (2 ** 32))
    random.seed(seed)


def default_dtype():
    return _state["dtype"]


def set_default_dtype(dtype):
    """float32 unless a user (or a gradient check) asks for float64."""
    _state["dtype"] = dtype


def solver_count():
    """How many solvers train together (data-parallel ranks); data layers read 1/solver_count of the records."""
    return _state["solver_count"]


def solver_rank():
    return _state["solver_rank"]


def set_solver_count(count):
    _state["solver_count"] = int(count)


def set_solver_rank(rank):
    _state["solver_rank"] = int(rank)


def root_solver():
    """Only the root solver logs, tests and snapshots (Caffe::root_solver)."""
    return _state["solver_rank"] == 0


def set_multiprocess(value):
    """pycaffe's flag for solvers that run as processes (BVLC's train.py) rather than as the threads of one
    `caffe train`; brewnet's ranks are always processes, so it is only recorded."""
    _state["multiprocess"] = bool(value)


def multiprocess():
    return _state.get("multiprocess", False)


@contextlib.contextmanager
def graph_capture():
    """While a Net's step is recorded into a CUDA graph (runtime/capture.py): layers skip their host-side checks
    (each would make the host wait for the device, which a capture forbids; the eager warm-up ran them)."""
    previous, _state["capturing"] = _state["capturing"], True
    try:
        yield
    finally:
        _state["capturing"] = previous


def capturing():
    return _state["capturing"]
