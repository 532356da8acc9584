"""pycaffe: everything `import caffe` exposes, laid out as Caffe's python/caffe.

    net.py         Net (pycaffe.py in Caffe) and the module-level functions of Caffe's _caffe module
    solver.py      SGDSolver & co., get_solver, Timer
    blob.py        PyBlob: the NumPy views of blobs (net.blobs, Python layers)
    io.py          caffe.io: Transformer, image loading, array <-> Datum / BlobProto
    net_spec.py    NetSpec, layers, params, to_proto
    draw.py        net diagrams (caffe.draw, `draw_net`)
    classifier.py  Classifier;  detector.py: Detector;  coord_map.py: crop offsets between blobs

caffe.NCCL lives with the data-parallel machinery it drives (brewnet/parallel/nccl.py) and is re-exported
here.  The top-level `caffe` package only re-exports this one.
"""
import brewnet.layers  # noqa: F401  (registers every layer type, so layer_type_list() is complete)

from .. import __version__
from ..core.common import (multiprocess, set_device, set_mode_cpu, set_multiprocess, set_random_seed,
                           set_solver_count, set_solver_rank, solver_count, solver_rank)
from ..core.registry import layer_type_list
from ..parallel.nccl import NCCL
from ..proto.caffe_pb2 import TEST, TRAIN
from . import io
from .classifier import Classifier
from .detector import Detector
from .functions import has_nccl, init_log, log, set_mode_gpu, set_precision
from .net import Net
from .net_spec import NetSpec, layers, params, to_proto
from .solver import (AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver, RMSPropSolver, SGDSolver,
                     Solver, Timer, get_solver)

__all__ = ["AdaDeltaSolver", "AdaGradSolver", "AdamSolver", "Classifier", "Detector", "Layer", "NCCL",
           "Net", "NesterovSolver", "NetSpec", "RMSPropSolver", "SGDSolver", "Solver", "TEST", "TRAIN", "Timer",
           "__version__", "get_solver", "has_nccl", "init_log", "io", "layer_type_list", "layers", "log",
           "multiprocess", "params", "set_device", "set_mode_cpu", "set_mode_gpu", "set_multiprocess",
           "set_precision", "set_random_seed", "set_solver_count", "set_solver_rank", "solver_count",
           "solver_rank", "to_proto"]


def __getattr__(name):
    # caffe.Layer, the Python layers' base class, is looked up on first use: brewnet.layers.python_layer
    # imports this package's blob views, so importing it from here at start-up would be circular whenever
    # brewnet.layers is imported first.
    if name == "Layer":
        from ..layers.python_layer import PythonLayerBase
        return PythonLayerBase
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
