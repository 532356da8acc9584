"""The modules one training iteration passes through (issue 19: the core reads like the book's 5.5 / 5.6).

An fp32 CPU solver.step(1) of a small net runs Solver.step (solvers/base.py) and its runtime hooks, the Net
(core/net.py) and its runtime hooks, the layers, Blob, and the SGD update; nothing else.  A new module on this
path is a new concept a reader of one iteration must hold: this test names them, so adding one is a decision.
"""
import collections
import sys

import pytest

from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text
from brewnet.solvers import get_solver

NET = """
name: "eight"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 8 dim: 1 dim: 12 dim: 12 } shape { dim: 8 }
    data_filler { type: "gaussian" } data_filler { type: "constant" value: 1 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "relu" type: "ReLU" bottom: "pool" top: "pool" }
layer { name: "ip1" type: "InnerProduct" bottom: "pool" top: "ip1"
  inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "relu2" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""

# The framework's modules of one iteration, in the order the book reads them (layers/ aside).
STEP_MODULES = {
    "solvers/base.py", "runtime/solver_runtime.py",                 # Solver::Step and its hooks
    "core/net.py", "runtime/net_runtime.py",                          # Net::Forward/Backward and its hooks
    "core/layer.py", "core/blob.py", "core/common.py",                # Layer, Blob
    "runtime/deferred.py", "runtime/precision.py",                    # entered from the layers
    "solvers/sgd.py", "solvers/lr_policy.py", "solvers/update_pipeline.py",   # ApplyUpdate
}


def modules_of_one_step(solver):
    root = sys.modules["brewnet"].__path__[0] + "/"
    calls = collections.Counter()

    def profile(frame, event, arg):
        if event == "call" and frame.f_code.co_filename.startswith(root):
            calls[frame.f_code.co_filename[len(root):]] += 1
    sys.setprofile(profile)
    try:
        solver.step(1)
    finally:
        sys.setprofile(None)
    return calls


@pytest.mark.skipif(sys.getprofile() is not None, reason="a profiler (coverage?) is already installed")
def test_one_fp32_cpu_iteration_goes_through_the_books_modules_only():
    param = caffe_pb2.SolverParameter(base_lr=0.01, momentum=0.9, weight_decay=0.0005, lr_policy="fixed",
                                      max_iter=10, display=0, solver_mode=caffe_pb2.SolverParameter.CPU)
    param.net_param.CopyFrom(parse_text(NET, caffe_pb2.NetParameter()))
    solver = get_solver(param)
    solver.step(2)                          # the first iterations build caches
    calls = modules_of_one_step(solver)
    framework = {m for m in calls if not m.startswith("layers/")}
    assert framework == STEP_MODULES
    assert {m for m in calls if m.startswith("layers/")} == {
        "layers/base_data.py", "layers/dummy_data.py", "layers/conv.py", "layers/pooling.py",
        "layers/neuron.py", "layers/common.py", "layers/loss.py"}
