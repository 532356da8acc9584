"""brewnet: Caffe, reborn as a Python package, on PyTorch kernels."""
__version__ = "1.0.0"

from . import log  # noqa: F401  (installs the glog-style handler)
from .core.common import set_mode_cpu, set_mode_gpu, set_device, set_random_seed  # noqa: F401
from .core.registry import layer_type_list  # noqa: F401
