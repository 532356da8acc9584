"""pycaffe's module-level functions that are not the Net's or the Solver's (Caffe's _caffe.cpp: init_log, log,
has_nccl, set_mode_gpu), and caffe.set_precision (brewnet's precision mode, runtime/precision.py)."""
import sys

from .. import switches
from ..log import get_logger
from ..runtime.precision import set_precision  # noqa: F401  (caffe.set_precision)


# --- pycaffe's module-level logging functions -------------------------------------------------------------------
_GLOG_LEVELS = {0: 20, 1: 30, 2: 40, 3: 50}        # glog INFO/WARNING/ERROR/FATAL -> logging levels


def init_log(level=None, stderr=True):
    """pycaffe's init_log(), init_log(level) and init_log(level, stderr): glog-style lines on stderr, at or
    above glog severity `level` (0 INFO, 1 WARNING, 2 ERROR, 3 FATAL; default GLOG_minloglevel)."""
    from .. import log as brewnet_log
    python_level = None if level is None else _GLOG_LEVELS.get(int(level), 50)
    brewnet_log.init_log(python_level, sys.stderr if stderr else sys.stdout)


def log(message):
    """Write `message` to the log at INFO (pycaffe's caffe.log)."""
    get_logger("python").info("%s", message)


def has_nccl():
    """True: caffe.NCCL (multi-process training, BVLC's train.py) is there, on torch.distributed — NCCL
    between GPUs, gloo between CPU processes (brewnet/parallel/nccl.py)."""
    return True


# --- GPU mode in a script written for a GPU ---------------------------------------------------------------------
REQUIRE_GPU_VARIABLE = "BREWNET_REQUIRE_GPU"
_fallback_warned = []


def set_mode_gpu():
    """pycaffe's set_mode_gpu.  Without a CUDA device brewnet stays in CPU mode and says so in a WARNING (once
    per process), so that a script written for GPUs (BVLC's train.py, a notebook) runs on the CPU instead of
    failing; caffe.set_device then only records the id.  BREWNET_REQUIRE_GPU=1 makes it an error, as
    brewnet.set_mode_gpu() and `caffe train -gpu` always are."""
    import torch
    from ..core import common
    if torch.cuda.is_available() or switches.value(REQUIRE_GPU_VARIABLE) == "1":
        common.set_mode_gpu()
        return
    common.set_mode_cpu()
    if not _fallback_warned:
        _fallback_warned.append(True)
        get_logger("pycaffe").warning(
            "set_mode_gpu: no CUDA device is available (torch.cuda.is_available() is False); brewnet computes "
            "on the CPU instead (%s=1 makes this an error)", REQUIRE_GPU_VARIABLE)
