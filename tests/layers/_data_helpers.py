"""Helpers for the data-layer tests: build a layer from prototxt text, run it on fresh blobs."""
from brewnet.core.blob import Blob
from brewnet.core.registry import create_layer
from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text, read_net_param


def layer_from_text(text, phase=caffe_pb2.TEST):
    param = parse_text(text, caffe_pb2.LayerParameter())
    param.phase = phase
    return create_layer(param)


def layer_from_file(path, phase=caffe_pb2.TEST):
    param = read_net_param(str(path)).layer[0]
    param.phase = phase
    return create_layer(param)


def setup(layer, num_tops=2):
    top = [Blob() for _ in range(num_tops)]
    layer.setup([], top)
    return top


def take_batches(layer, top, n):
    """n Forward passes -> [[copy of each top's data]]."""
    batches = []
    for _ in range(n):
        layer.Forward([], top)
        batches.append([blob.data.clone() for blob in top])
    return batches


def check_exact_resume(make_layer, num_tops, k, m, close=True):
    """Run k batches, take state_dict, run m more; a fresh layer built under another torch seed (so its own
    generators differ) and given the state must produce those m batches bit for bit.  Returns the state."""
    import torch
    torch.manual_seed(1)
    layer = make_layer()
    top = setup(layer, num_tops)
    try:
        take_batches(layer, top, k)
        state = layer.state_dict()
        expected = take_batches(layer, top, m)
    finally:
        if close:
            layer.close()
    torch.manual_seed(2)
    fresh = make_layer()
    fresh_top = setup(fresh, num_tops)
    try:
        fresh.load_state_dict(state)
        got = take_batches(fresh, fresh_top, m)
    finally:
        if close:
            fresh.close()
    for j, (want, have) in enumerate(zip(expected, got)):
        for i, (a, b) in enumerate(zip(want, have)):
            assert torch.equal(a, b), f"batch {j} after the resume, top {i}: {a.flatten()[:8]} vs {b.flatten()[:8]}"
    return state
