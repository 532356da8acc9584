"""`caffe` is a thin alias of brewnet.pycaffe: the same module objects, the same names as Caffe's
python/caffe/__init__.py, whichever of brewnet's packages a program imports first."""
import subprocess
import sys

import pytest

import brewnet.proto.caffe_pb2
import brewnet.pycaffe
import caffe
import caffe.coord_map
import caffe.draw
from caffe.proto import caffe_pb2

# What Caffe's python/caffe/__init__.py imports into `caffe`.
BVLC_NAMES = ["Net", "SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver", "AdaDeltaSolver",
              "AdamSolver", "NCCL", "Timer", "init_log", "log", "set_mode_cpu", "set_mode_gpu", "set_device",
              "Layer", "get_solver", "layer_type_list", "set_random_seed", "solver_count", "set_solver_count",
              "solver_rank", "set_solver_rank", "set_multiprocess", "has_nccl", "__version__", "TRAIN", "TEST",
              "Classifier", "Detector", "io", "layers", "params", "NetSpec", "to_proto"]


@pytest.mark.parametrize("name", ["io", "net_spec", "draw", "classifier", "detector", "coord_map"])
def test_caffe_submodule_is_the_pycaffe_module(name):
    assert getattr(caffe, name) is sys.modules[f"brewnet.pycaffe.{name}"]
    assert sys.modules[f"caffe.{name}"] is sys.modules[f"brewnet.pycaffe.{name}"]


def test_caffe_exposes_what_bvlc_caffe_exposes_from_brewnet_pycaffe():
    missing = [name for name in BVLC_NAMES if not hasattr(caffe, name)]
    assert missing == []
    assert all(getattr(caffe, name) is getattr(brewnet.pycaffe, name) for name in BVLC_NAMES)
    assert caffe.Layer.__name__ == "PythonLayerBase" and caffe.pycaffe is brewnet.pycaffe
    assert caffe_pb2 is brewnet.proto.caffe_pb2 and caffe.TRAIN == caffe_pb2.TRAIN


@pytest.mark.parametrize("first", ["brewnet.layers", "brewnet.layers.python_layer", "brewnet.pycaffe.blob",
                                   "brewnet.tools.cli", "caffe"])
def test_import_order_does_not_matter(first):
    """brewnet.layers.python_layer imports the blob views from brewnet.pycaffe, whose package exposes the
    Python-layer base: a fresh interpreter importing either side first gets both."""
    code = (f"import {first}, caffe, brewnet.pycaffe as p; "
            "print(caffe.Layer is p.Layer, p.Layer.__module__, 'Python' in caffe.layer_type_list())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "brewnet.layers.python_layer", "True"]
