"""Tiny solvers for the solver tests: a linear layer under a Euclidean loss, whose gradient is known in closed
form, and the golden HDF5 net of tests/golden/solvers run from a scratch directory."""
import os

import numpy as np
import torch

from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text
from brewnet.solvers import get_solver

# p = x W^T + b;  loss = 1/(2N) sum (p - y)^2  =>  dL/dW = (p - y)^T x / N,  dL/db = sum_rows (p - y) / N
LINEAR_NET = """
name: "lin"
layer {{ name: "x" type: "Input" top: "x" input_param {{ shape {{ dim: 4 dim: 3 }} }} }}
layer {{ name: "y" type: "Input" top: "y" input_param {{ shape {{ dim: 4 dim: 2 }} }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "x" top: "p" {params}
        inner_product_param {{ num_output: 2 weight_filler {{ type: "gaussian" std: 0.5 }}
                               bias_filler {{ type: "gaussian" std: 0.5 }} }} }}
layer {{ name: "loss" type: "EuclideanLoss" bottom: "p" bottom: "y" top: "loss" }}
"""

BASE_TEXT = 'lr_policy: "fixed" display: 0 max_iter: 100 '

X = np.random.RandomState(0).randn(4, 3)
Y = np.random.RandomState(1).randn(4, 2)


def linear_solver(solver_text, params=""):
    text = f"{solver_text}\nnet_param {{ {LINEAR_NET.format(params=params)} }}"
    solver = get_solver(parse_text(text, caffe_pb2.SolverParameter()))
    set_inputs(solver.net)
    return solver


def set_inputs(net, x=X, y=Y):
    net.blobs["x"].data.copy_(torch.from_numpy(x))
    net.blobs["y"].data.copy_(torch.from_numpy(y))


def linear_grads(w, b, x=X, y=Y):
    dp = (x @ w.T + b - y) / x.shape[0]
    return dp.T @ x, dp.sum(axis=0)


def params_of(net):
    return [p.data.detach().cpu().numpy().copy() for p in net.learnable_params]


def golden_workdir(golden, tmp_path, monkeypatch):
    """A scratch folder holding links to the golden solver net and data, as the working directory: the golden
    prototxts name their files relative to it, and snapshots must not land next to the read-only golden files."""
    source = golden / "solvers"
    for name in ("net.prototxt", "net_mult.prototxt", "data.h5", "data_list.txt"):
        os.symlink(source / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    return source


def set_golden_init(net, arrays, prefix="init"):
    for name, layer in zip(net.layer_names, net.layers):
        for i, blob in enumerate(layer.blobs):
            blob.data.copy_(torch.from_numpy(arrays[f"{prefix}/{name}/{i}"]))


class captured_log:
    """Collect brewnet's glog lines in a string while the block runs: `with captured_log() as text: ...`."""

    def __enter__(self):
        import io
        from brewnet.log import init_log
        self.stream = io.StringIO()
        init_log(stream=self.stream)
        return self

    @property
    def text(self):
        return self.stream.getvalue()

    def lines(self):
        return [line.split("] ", 1)[1] for line in self.text.splitlines() if "] " in line]

    def __exit__(self, *exc):
        from brewnet.log import init_log
        init_log()
