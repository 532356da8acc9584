"""Whole nets against the real Caffe: assembly (layers, splits, shapes, needs-backward, log lines), weights,
and every blob's data and diff after one Forward/Backward (tests/golden/nets)."""
import json
import logging
import re

import numpy as np
import pytest
import torch

from brewnet.core.net import Net
from brewnet.proto import caffe_pb2

RTOL, ATOL = 1e-4, 1e-5


def caffe_log_facts(path):
    """Top shapes (in order) and the needs-backward verdict per layer, from Caffe's glog output."""
    shapes, backward = [], {}
    for line in open(path):
        m = re.search(r"\] Top shape: (.*)$", line)
        if m:
            shapes.append(m.group(1).strip())
        m = re.search(r"\] (\S+) (needs|does not need) backward computation\.", line)
        if m:
            backward[m.group(1)] = m.group(2) == "needs"
    return shapes, backward


class LogCapture(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def build(golden, name, phase):
    capture = LogCapture()
    logger = logging.getLogger("brewnet")
    logger.addHandler(capture)
    try:
        net = Net(str(golden / "nets" / f"{name}.prototxt"), phase=phase)
    finally:
        logger.removeHandler(capture)
    return net, capture.lines


def check_assembly(golden, name, net, lines, inputs=None):
    meta = json.load(open(golden / "nets" / f"{name}.json"))
    assert [[n, l.type] for n, l in zip(net.layer_names, net.layers)] == meta["layers"]
    shapes, backward = caffe_log_facts(golden / "nets" / f"{name}.log")
    ours = [l[len("Top shape: "):] for l in lines if l.startswith("Top shape: ")]
    assert ours == shapes
    assert {n: need for n, need in zip(net.layer_names, net.layer_need_backward)} == backward
    assert sum("needs backward computation" in l or "does not need backward" in l for l in lines) == len(backward)
    if inputs is not None:   # the deploy nets were reshaped to a smaller batch after assembly
        for key in inputs.files:
            net.blobs[key].reshape(inputs[key].shape)
        net.reshape()
    assert net.input_blob_names == meta["inputs"] and net.output_blob_names == meta["outputs"]
    for blob, shape in meta["blobs"].items():
        assert net.blobs[blob].shape == tuple(shape), blob
    for layer, shapes in meta["params"].items():
        assert [list(b.shape) for b in net.layer_by_name(layer).blobs] == shapes, layer
    weights = {net.blob_names[i]: w for i, w in enumerate(net.blob_loss_weights) if w}
    assert weights == meta["loss_weights"]


@pytest.mark.parametrize("name,phase", [("lenet_train", caffe_pb2.TRAIN), ("lenet_test", caffe_pb2.TEST),
                                        ("siamese_train", caffe_pb2.TRAIN)])
def test_small_nets_equal_caffe_blob_for_blob(golden, name, phase):
    net, lines = build(golden, name, phase)
    check_assembly(golden, name, net, lines)
    net.copy_trained_layers_from(str(golden / "nets" / f"{name}.caffemodel"))
    inputs = np.load(golden / "nets" / f"{name}.inputs.npz")
    for key in inputs.files:
        net.blobs[key].data.copy_(torch.from_numpy(inputs[key]))
    net.forward()
    net.clear_param_diffs()
    net.backward()
    stored = np.load(golden / "nets" / f"{name}.npz")
    for key in stored.files:
        kind, rest = key.split("/", 1)
        if kind == "param_diff":
            layer, index = rest.rsplit("/", 1)
            ours = net.layer_by_name(layer).blobs[int(index)].diff
        else:
            ours = getattr(net.blobs[rest], kind)
        np.testing.assert_allclose(ours.numpy().reshape(stored[key].shape), stored[key], rtol=RTOL, atol=ATOL,
                                   err_msg=key)


def draw_weights(net):
    """The README's recipe for the deploy nets' weights (NumPy RandomState(0), net.params order)."""
    rs = np.random.RandomState(0)
    for layer in net.layers:
        for i, blob in enumerate(layer.blobs):
            s = blob.shape
            if layer.type == "BatchNorm":
                value = [rs.randn(*s) * 0.1, rs.uniform(0.5, 1.5, s), np.ones(s)][i]
            elif layer.type == "Scale" and i == 0:
                value = 1 + 0.1 * rs.randn(*s)
            elif len(s) > 1:
                value = rs.randn(*s) * np.sqrt(2.0 / np.prod(s[1:]))
            else:
                value = rs.randn(*s) * 0.01
            blob.data.copy_(torch.from_numpy(np.asarray(value, dtype=np.float32)))


@pytest.mark.parametrize("name", ["caffenet_deploy", "googlenet_deploy", "resnet50_deploy"])
def test_deploy_nets_assemble_and_forward_like_caffe(golden, name):
    net, lines = build(golden, name, caffe_pb2.TEST)
    inputs = np.load(golden / "nets" / f"{name}.inputs.npz")
    check_assembly(golden, name, net, lines, inputs)
    draw_weights(net)
    for key in inputs.files:
        net.blobs[key].data.copy_(torch.from_numpy(inputs[key]))
    net.forward()
    stored = np.load(golden / "nets" / f"{name}.npz")
    for key in stored.files:
        blob = key.split("/", 1)[1]
        # Deep nets accumulate float32 rounding over dozens of layers in another summation order than
        # OpenBLAS: the absolute tolerance is relative to the blob's scale (fc7 reaches ~200).
        expected = stored[key]
        np.testing.assert_allclose(net.blobs[blob].data.numpy(), expected, rtol=1e-4,
                                   atol=1e-5 * float(np.abs(expected).max()), err_msg=key)
