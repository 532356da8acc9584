"""Softmax layer: hand-computed values, axis handling, in place, float64 gradient check, autograd oracle,
Caffe's golden outputs."""
import math

import pytest
import torch

from brewnet.core.blob import Blob
from brewnet.core.gradient_check import GradientChecker
from brewnet.core.registry import create_layer
from brewnet.errors import LayerError
from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text
from tests.layers.golden_case import golden_cases, run_golden_case


def make(text=""):
    return create_layer(parse_text('name: "sm" type: "Softmax" ' + text, caffe_pb2.LayerParameter()))


def blob_of(t):
    b = Blob(t.shape, dtype=t.dtype)
    b.data.copy_(t)
    return b


def test_forward_hand_computed():
    x = blob_of(torch.tensor([[0.0, math.log(3.0)], [1000.0, 1000.0]]))
    top = [Blob()]
    layer = make()
    layer.setup([x], top)
    layer.Forward([x], top)
    # Large equal scores must not overflow: the max is subtracted first.
    assert torch.allclose(top[0].data, torch.tensor([[0.25, 0.75], [0.5, 0.5]]))


def test_axis_and_bad_axis():
    x = blob_of(torch.randn(2, 3, 4))
    top = [Blob()]
    make("softmax_param { axis: -1 }").setup([x], top)
    layer = make("softmax_param { axis: -1 }")
    layer.setup([x], top)
    layer.Forward([x], top)
    assert torch.allclose(top[0].data, torch.softmax(x.data, dim=2))
    with pytest.raises(LayerError, match="axis 3 out of range"):
        make("softmax_param { axis: 3 }").setup([x], [Blob()])


def test_in_place_matches_out_of_place():
    x0, dy = torch.randn(2, 3, 2), torch.randn(2, 3, 2)
    results = []
    for in_place in (False, True):
        x = blob_of(x0)
        top = [x] if in_place else [Blob()]
        layer = make()
        layer.setup([x], top)
        layer.Forward([x], top)
        y = top[0].data.clone()
        top[0].diff.copy_(dy)
        layer.Backward(top, [True], [x])
        results.append((y, x.diff.clone()))
    assert torch.allclose(results[0][0], results[1][0]) and torch.allclose(results[0][1], results[1][1])


@pytest.mark.parametrize("shape, axis", [((1, 5), 1), ((1, 3, 5), 1), ((3, 1, 5), -1)])
def test_gradient(float64, shape, axis):
    x = Blob(shape)
    x.data.normal_()
    GradientChecker(stepsize=1e-3, threshold=1e-4).check_gradient(
        make(f"softmax_param {{ axis: {axis} }}"), [x], [Blob()])


def test_matches_autograd():
    x0, dy = torch.randn(2, 4, 3, dtype=torch.float64), torch.randn(2, 4, 3, dtype=torch.float64)
    x, top = blob_of(x0), [Blob(dtype=torch.float64)]
    layer = make()
    layer.setup([x], top)
    layer.Forward([x], top)
    top[0].diff.copy_(dy)
    layer.Backward(top, [True], [x])
    ref_x = x0.clone().requires_grad_()
    ref = torch.softmax(ref_x, dim=1)
    ref.backward(dy)
    assert torch.allclose(top[0].data, ref.detach(), atol=1e-14)
    assert torch.allclose(x.diff, ref_x.grad, atol=1e-14)


@pytest.mark.parametrize("name", golden_cases("Softmax"))
def test_golden(golden, name):
    assert "bottom_diff/x" in run_golden_case(golden / "layers", name)["compared"]
