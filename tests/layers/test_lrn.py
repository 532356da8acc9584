"""LRN: hand-computed values, gradient checks, torch oracle, real Caffe."""
import pytest
import torch
import torch.nn.functional as F

from brewnet.core.blob import Blob
from brewnet.core.gradient_check import GradientChecker
from brewnet.core.registry import create_layer
from brewnet.errors import LayerError
from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text
from tests.layers.golden_case import golden_cases, run_golden_case
from tests.layers.helpers import assert_matches_autograd, tensor_blob


def make(params):
    return create_layer(parse_text(f'name: "L" type: "LRN" lrn_param {{ {params} }}', caffe_pb2.LayerParameter()))


def run(layer, x):
    bottom, top = [tensor_blob(x)], [Blob(dtype=x.dtype)]
    layer.setup(bottom, top)
    layer.Forward(bottom, top)
    return bottom, top


def test_across_channels_hand_computed():
    # alpha / n = 1, k = 1, beta = 1: scale = 1 + sum of squares of the neighbouring channels.
    _, top = run(make("local_size: 3 alpha: 3 beta: 1 k: 1"), torch.tensor([1., 2., 3.]).view(1, 3, 1, 1))
    torch.testing.assert_close(top[0].data.view(-1), torch.tensor([1 / 6, 2 / 15, 3 / 14]))


def test_across_channels_uses_k_and_beta():
    _, top = run(make("local_size: 1 alpha: 2 beta: 0.5 k: 3"), torch.tensor([2.]).view(1, 1, 1, 1))
    assert top[0].data.item() == pytest.approx(2 / (3 + 2 * 4) ** 0.5)


def test_within_channel_hand_computed():
    # 1x1 image, local_size 3, pad 1: Caffe's AVE pooling divides by the 3x3 padded window, 9; k is unused.
    _, top = run(make("local_size: 3 alpha: 0.9 beta: 1 k: 5 norm_region: WITHIN_CHANNEL"),
                 torch.tensor([2.]).view(1, 1, 1, 1))
    assert top[0].data.item() == pytest.approx(2 / (1 + 0.9 * 4 / 9))


def test_within_channel_border_divisor():
    # 1x3 image of ones, local_size 3: every window is clipped to the image but divides by 9.
    _, top = run(make("local_size: 3 alpha: 1 beta: 1 norm_region: WITHIN_CHANNEL"), torch.ones(1, 1, 1, 3))
    expected = 1 / (1 + torch.tensor([2., 3., 2.]) / 9)
    torch.testing.assert_close(top[0].data.view(-1), expected)


@pytest.mark.parametrize("params, shape, message", [
    ("local_size: 4", (1, 3, 2, 2), "odd, positive local_size, Actual: 4"),
    ("local_size: 3", (1, 3, 2), "4-axis"),
])
def test_setup_errors_name_the_layer(params, shape, message):
    with pytest.raises(LayerError, match=message) as info:
        make(params).setup([Blob(shape)], [Blob()])
    assert "layer 'L' (type LRN)" in str(info.value)


@pytest.mark.parametrize("params, shape", [
    ("local_size: 3 alpha: 0.5 beta: 0.75 k: 2", (1, 4, 3, 3)),
    ("local_size: 5 alpha: 2 beta: 0.75", (2, 3, 1, 3)),
    ("local_size: 3 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL", (1, 2, 5, 3)),
    ("local_size: 5 alpha: 2 beta: 0.6 norm_region: WITHIN_CHANNEL", (2, 1, 3, 4)),
])
def test_gradient(float64, params, shape):
    GradientChecker(stepsize=1e-3, threshold=1e-4).check_gradient(
        make(params), [tensor_blob(torch.randn(shape, dtype=torch.float64))], [Blob()])


def within_channel_oracle(x, size, alpha, beta):
    # Caffe's divisor here is always size * size (stride 1, pad (size - 1) / 2): count_include_pad.
    pooled = F.avg_pool2d(x * x, size, 1, (size - 1) // 2, count_include_pad=True)
    return x * (1 + alpha * pooled) ** -beta


@pytest.mark.parametrize("params, oracle", [
    ("local_size: 5 alpha: 0.3 beta: 0.75 k: 2", lambda x: F.local_response_norm(x, 5, 0.3, 0.75, 2.)),
    ("local_size: 3 alpha: 1.5 beta: 0.5", lambda x: F.local_response_norm(x, 3, 1.5, 0.5, 1.)),
    ("local_size: 3 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL",
     lambda x: within_channel_oracle(x, 3, 0.5, 0.75)),
    ("local_size: 5 alpha: 2 beta: 0.6 norm_region: WITHIN_CHANNEL",
     lambda x: within_channel_oracle(x, 5, 2., 0.6)),
])
def test_matches_torch(params, oracle):
    x = torch.randn(2, 7, 6, 5)
    layer = make(params)
    bottom, top = run(layer, x)
    assert_matches_autograd(layer, bottom, top, x, oracle)


@pytest.mark.parametrize("name", golden_cases("LRN"))
def test_golden(golden, name):
    report = run_golden_case(golden / "layers", name)
    assert "bottom_diff/x" in report["compared"]
