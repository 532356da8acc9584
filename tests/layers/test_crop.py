"""Crop: hand-computed values, offsets, validation, gradient check, torch oracle, real Caffe."""
import pytest
import torch

from brewnet.core.blob import Blob
from brewnet.core.gradient_check import GradientChecker
from brewnet.core.registry import create_layer
from brewnet.errors import LayerError
from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text
from tests.layers.golden_case import golden_cases, run_golden_case
from tests.layers.helpers import tensor_blob


def make(params=""):
    return create_layer(parse_text(f'name: "L" type: "Crop" crop_param {{ {params} }}', caffe_pb2.LayerParameter()))


def run(layer, x, ref_shape):
    bottom, top = [tensor_blob(x), Blob(ref_shape, dtype=x.dtype)], [Blob(dtype=x.dtype)]
    layer.setup(bottom, top)
    layer.Forward(bottom, top)
    return bottom, top


def test_default_axis_2_offset_0():
    x = torch.arange(2 * 2 * 4 * 4.).view(2, 2, 4, 4)
    _, top = run(make(), x, (1, 1, 2, 3))
    assert top[0].shape == (2, 2, 2, 3)     # axes before 2 keep bottom[0]'s sizes
    assert torch.equal(top[0].data, x[:, :, :2, :3])


def test_single_offset_serves_every_axis():
    x = torch.arange(16.).view(1, 1, 4, 4)
    _, top = run(make("offset: 1"), x, (1, 1, 2, 2))
    assert top[0].data.view(-1).tolist() == [5., 6., 9., 10.]


def test_offsets_per_axis_and_negative_axis():
    x = torch.arange(3 * 4 * 5.).view(1, 3, 4, 5)
    _, top = run(make("axis: -3 offset: 1 offset: 0 offset: 2"), x, (7, 2, 3, 2))
    assert top[0].shape == (1, 2, 3, 2)
    assert torch.equal(top[0].data, x[:, 1:3, 0:3, 2:4])


def test_top_is_a_copy():
    x = torch.arange(16.).view(1, 1, 4, 4)
    bottom, top = run(make(), x, (1, 1, 2, 2))
    top[0].data.fill_(-1.0)
    assert torch.equal(bottom[0].data, x)


def test_backward_places_diff_in_the_window_only():
    x = torch.randn(1, 2, 4, 5)
    layer = make("offset: 1 offset: 2")
    bottom, top = run(layer, x, (1, 1, 2, 3))
    top[0].diff.copy_(torch.arange(1., 13.).view(1, 2, 2, 3))
    bottom[1].diff.fill_(5.0)
    layer.Backward(top, [True, True], bottom)
    expected = torch.zeros(1, 2, 4, 5)
    expected[:, :, 1:3, 2:5] = torch.arange(1., 13.).view(1, 2, 2, 3)
    assert torch.equal(bottom[0].diff, expected)
    assert torch.all(bottom[1].diff == 5.0)    # the reference blob gets no gradient (Caffe leaves it alone)


@pytest.mark.parametrize("params, shapes, tops, message", [
    ("offset: 2", [(1, 1, 4, 4), (1, 1, 3, 3)], 1, "axis 2, Actual: offset 2 \\+ size 3 > 4"),
    ("axis: 1 offset: 0 offset: 1 offset: 3", [(1, 2, 4, 4), (1, 2, 3, 2)], 1, "axis 3, Actual: offset 3"),
    ("axis: 1 offset: 0 offset: 1", [(1, 2, 4, 4), (1, 2, 3, 2)], 1, "0, 1 or 3 offsets"),
    ("axis: 4", [(1, 2, 4, 4), (1, 2, 3, 2)], 1, "crop axis in \\[-4, 4\\)"),
    ("", [(1, 2, 4, 4), (2, 4)], 1, "bottom\\[1\\] with at least 4 axes"),
    ("", [(1, 2, 4, 4)], 1, "number of bottom blobs == 2"),
    ("", [(1, 2, 4, 4), (1, 2, 3, 3)], 2, "number of top blobs == 1"),
])
def test_setup_errors_name_the_layer(params, shapes, tops, message):
    with pytest.raises(LayerError, match=message) as info:
        make(params).setup([Blob(s) for s in shapes], [Blob() for _ in range(tops)])
    assert "layer 'L' (type Crop)" in str(info.value)


@pytest.mark.parametrize("params, shape, ref", [
    ("offset: 1", (1, 2, 5, 4), (1, 1, 3, 2)),
    ("axis: 0 offset: 1 offset: 0 offset: 2", (3, 3, 5), (1, 2, 2)),
])
def test_gradient(float64, params, shape, ref):
    bottom = [tensor_blob(torch.randn(shape, dtype=torch.float64)), Blob(ref, dtype=torch.float64)]
    GradientChecker(stepsize=1e-3, threshold=1e-4).check_gradient(make(params), bottom, [Blob()], check_bottom=0)


def test_matches_torch_slicing():
    x = torch.randn(2, 3, 6, 7)
    layer = make("axis: 1 offset: 1 offset: 2 offset: 3")
    bottom, top = run(layer, x, (2, 2, 3, 4))
    dy = torch.randn(top[0].shape)
    top[0].diff.copy_(dy)
    layer.Backward(top, [True, False], bottom)
    leaf = x.clone().requires_grad_()
    y = leaf[:, 1:3, 2:5, 3:7]
    y.backward(dy)
    torch.testing.assert_close(top[0].data, y.detach())
    torch.testing.assert_close(bottom[0].diff, leaf.grad)


@pytest.mark.parametrize("name", golden_cases("Crop"))
def test_golden(golden, name):
    report = run_golden_case(golden / "layers", name)
    assert report["compared"] == ["top/t0", "bottom_diff/x"]
