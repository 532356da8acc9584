"""How the experiments build brewnet nets and solvers: from prototxt text, as a Caffe user writes them."""
import numpy as np
import torch

from brewnet.core.net import Net
from brewnet.log import quiet
from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text
from brewnet.solvers import get_solver


def net_from_text(text, phase="TRAIN", dtype=None):
    """A Net from prototxt text; dtype torch.float64 for the experiments that compare with exact math."""
    param = parse_text(text, caffe_pb2.NetParameter())
    with quiet():
        return Net(param, phase=getattr(caffe_pb2, phase), dtype=dtype)


def solver_from_text(net_text, solver_text):
    param = parse_text(f'{solver_text}\nnet_param {{ {net_text} }}', caffe_pb2.SolverParameter())
    with quiet():
        return get_solver(param)


def step(solver, iters=1):
    with quiet():
        solver.step(iters)


def put(net, name, array):
    """Copy a NumPy array into a blob's data (reshaping the blob when the shape differs)."""
    blob = net.blobs[name]
    tensor = torch.as_tensor(np.asarray(array), dtype=blob.data.dtype)
    if tuple(blob.shape) != tuple(tensor.shape):
        blob.reshape(list(tensor.shape))
    blob.data.copy_(tensor)


def set_diff(net, name, array):
    blob = net.blobs[name]
    blob.diff.copy_(torch.as_tensor(np.asarray(array), dtype=blob.data.dtype))


def set_param(net, layer, index, array):
    blob = net.layer_by_name(layer).blobs[index]
    blob.data.copy_(torch.as_tensor(np.asarray(array), dtype=blob.data.dtype))


def get(blob_or_tensor, diff=False):
    t = blob_or_tensor.diff if diff else blob_or_tensor.data
    return t.detach().cpu().double().numpy().copy()


def params(net, layer):
    """The layer's parameter blobs as float64 arrays (weights, then bias)."""
    return [get(b) for b in net.layer_by_name(layer).blobs]
