"""`import caffe` is brewnet: pycaffe's module layout over brewnet's modules (this package only re-exports).

    import caffe
    from caffe import layers as L, params as P
    from caffe.proto import caffe_pb2
"""
import brewnet.layers  # noqa: F401  (registers every layer type, so layer_type_list() is complete)
from brewnet import __version__  # noqa: F401
from brewnet.core.common import (multiprocess, set_device, set_mode_cpu, set_multiprocess,  # noqa: F401
                                 set_random_seed, set_solver_count, set_solver_rank, solver_count, solver_rank)
from brewnet.core.registry import layer_type_list  # noqa: F401
from brewnet.layers.python_layer import PythonLayerBase as Layer  # noqa: F401
from brewnet.proto.caffe_pb2 import TEST, TRAIN  # noqa: F401
from brewnet.parallel.nccl import NCCL  # noqa: F401
from brewnet.pycaffe import Net, has_nccl, init_log, log, set_mode_gpu, set_precision  # noqa: F401
from brewnet.pycaffe_solver import (AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver,  # noqa: F401
                                    RMSPropSolver, SGDSolver, Solver, Timer, get_solver)

from . import io, proto  # noqa: F401
from .classifier import Classifier  # noqa: F401
from .detector import Detector  # noqa: F401
from .net_spec import NetSpec, layers, params, to_proto  # noqa: F401
