"""Pooling and SPP: hand-computed values, Caffe's window rules, gradient checks, torch oracle, real Caffe."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from brewnet.core.blob import Blob
from brewnet.core.gradient_check import GradientChecker
from brewnet.core.registry import create_layer
from brewnet.errors import LayerError
from brewnet.layers.pooling import FLT_MAX
from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text
from tests.layers.golden_case import golden_cases, run_golden_case
from tests.layers.helpers import assert_matches_autograd, tensor_blob


def make(type_, params, phase="TRAIN"):
    field = "pooling_param" if type_ == "Pooling" else "spp_param"
    text = f'name: "L" type: "{type_}" phase: {phase} {field} {{ {params} }}'
    return create_layer(parse_text(text, caffe_pb2.LayerParameter()))


def run(layer, x, tops=1):
    bottom, top = [tensor_blob(x)], [Blob(dtype=x.dtype) for _ in range(tops)]
    layer.setup(bottom, top)
    layer.Forward(bottom, top)
    return bottom, top


def spaced(shape, dtype=torch.float64):
    """Distinct values at least 0.1 apart (max pooling has no ties, numeric gradients cross no kink)."""
    count = int(np.prod(shape))
    return (torch.randperm(count).to(dtype) * 0.1 - count * 0.05).view(shape)


# --- Caffe's algorithm written out element by element, as the reference -------------------------------------
def caffe_pool_reference(x, kernel, stride, pad, method, ceil=True):
    """Forward (y, argmax) and the backward map, literally as Caffe's CPU loops compute them."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    rnd = math.ceil if ceil else math.floor
    oh, ow = int(rnd((h + 2 * ph - kh) / sh)) + 1, int(rnd((w + 2 * pw - kw) / sw)) + 1
    if ph or pw:
        oh -= (oh - 1) * sh >= h + ph
        ow -= (ow - 1) * sw >= w + pw
    y = np.zeros((n, c, oh, ow))
    arg = -np.ones((n, c, oh, ow), dtype=np.int64)
    windows = {}
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * sh - ph, j * sw - pw
            he, we = min(hs + kh, h + ph), min(ws + kw, w + pw)
            size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            windows[i, j] = (hs, he, ws, we, size)
            for b in range(n):
                for ch in range(c):
                    if method == "MAX":
                        best, where = -FLT_MAX, -1
                        for r in range(hs, he):
                            for q in range(ws, we):
                                if x[b, ch, r, q] > best:
                                    best, where = x[b, ch, r, q], r * w + q
                        y[b, ch, i, j], arg[b, ch, i, j] = best, where
                    else:
                        y[b, ch, i, j] = x[b, ch, hs:he, ws:we].sum() / size

    def backward(dy):
        dx = np.zeros_like(x)
        for (i, j), (hs, he, ws, we, size) in windows.items():
            for b in range(n):
                for ch in range(c):
                    if method == "MAX":
                        if arg[b, ch, i, j] >= 0:
                            dx[b, ch].flat[arg[b, ch, i, j]] += dy[b, ch, i, j]
                    else:
                        dx[b, ch, hs:he, ws:we] += dy[b, ch, i, j] / size
        return dx
    return y, arg, backward


REFERENCE_CASES = [   # kernel, stride, pad, shape, ceil: covers torch-compatible and general windows
    ((3, 3), (2, 2), (0, 0), (2, 2, 8, 8), True),
    ((3, 3), (2, 2), (1, 1), (1, 2, 7, 6), True),
    ((2, 2), (2, 2), (1, 1), (1, 1, 3, 3), True),      # last-window correction
    ((3, 2), (2, 1), (2, 1), (1, 2, 5, 4), True),      # pad > kernel / 2
    ((1, 1), (3, 3), (0, 0), (1, 2, 5, 5), True),      # windows that start beyond the image
    ((3, 3), (2, 2), (1, 0), (1, 1, 6, 5), True),      # one pad triggers the correction on both axes
    ((4, 4), (3, 3), (0, 0), (1, 1, 2, 3), True),      # kernel larger than the image, clipped
    ((3, 3), (2, 2), (1, 1), (2, 1, 8, 7), False),
    ((2, 3), (3, 2), (0, 1), (1, 2, 7, 8), False),
]


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("kernel, stride, pad, shape, ceil", REFERENCE_CASES)
def test_matches_caffe_reference(float64, method, kernel, stride, pad, shape, ceil):
    params = (f"pool: {method} kernel_h: {kernel[0]} kernel_w: {kernel[1]} stride_h: {stride[0]} "
              f"stride_w: {stride[1]} pad_h: {pad[0]} pad_w: {pad[1]} round_mode: {'CEIL' if ceil else 'FLOOR'}")
    x = spaced(shape)
    tops = 2 if method == "MAX" else 1
    layer = make("Pooling", params)
    bottom, top = run(layer, x, tops)
    y, arg, backward = caffe_pool_reference(x.numpy(), kernel, stride, pad, method, ceil)
    np.testing.assert_allclose(top[0].data.numpy(), y, rtol=1e-12, atol=1e-14)
    if method == "MAX":
        np.testing.assert_array_equal(top[1].data.numpy(), arg.astype(np.float64))
    dy = torch.randn(top[0].shape, dtype=torch.float64)
    top[0].diff.copy_(dy)
    layer.Backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff.numpy(), backward(dy.numpy()), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("kernel, stride, pad, shape, ceil", REFERENCE_CASES)
def test_forward_only_and_results_in_the_blobs_memory(float64, method, kernel, stride, pad, shape, ceil):
    """need_backward False (set by a Net that never runs this layer's backward): MAX skips the argmax, with
    the same values; the results land in the top's and the bottom's existing memory (stale contents there
    are overwritten); a Backward that comes anyway finds the argmax itself."""
    params = (f"pool: {method} kernel_h: {kernel[0]} kernel_w: {kernel[1]} stride_h: {stride[0]} "
              f"stride_w: {stride[1]} pad_h: {pad[0]} pad_w: {pad[1]} round_mode: {'CEIL' if ceil else 'FLOOR'}")
    x = spaced(shape)
    layer = make("Pooling", params)
    layer.need_backward = False
    bottom, top = [tensor_blob(x)], [Blob(dtype=x.dtype)]
    layer.setup(bottom, top)
    y_memory, dx_memory = top[0].data.data_ptr(), bottom[0].diff.data_ptr()
    top[0].data.fill_(123.0)
    layer.Forward(bottom, top)
    y, _, backward = caffe_pool_reference(x.numpy(), kernel, stride, pad, method, ceil)
    np.testing.assert_allclose(top[0].data.numpy(), y, rtol=1e-12, atol=1e-14)
    assert top[0].data.data_ptr() == y_memory
    dy = torch.randn(top[0].shape, dtype=torch.float64)
    top[0].diff.copy_(dy)
    bottom[0].diff.fill_(7.0)
    layer.Backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff.numpy(), backward(dy.numpy()), rtol=1e-12, atol=1e-15)
    assert bottom[0].diff.data_ptr() == dx_memory


def test_geometry_is_rebuilt_only_for_a_new_image_size():
    layer = make("Pooling", "pool: MAX kernel_size: 2 stride: 2")
    bottom, top = run(layer, torch.randn(2, 3, 6, 6))
    first = layer.geometry
    bottom[0].reshape(4, 3, 6, 6)                  # a new batch size: same windows
    layer.Forward(bottom, top)
    assert layer.geometry is first and top[0].shape == (4, 3, 3, 3)
    bottom[0].reshape(4, 3, 8, 8)
    layer.Forward(bottom, top)
    assert layer.geometry is not first and layer.geometry.out == (4, 4) and top[0].shape == (4, 3, 4, 4)


# --- hand-computed values -----------------------------------------------------------------------------------
def test_max_hand_computed_with_mask():
    x = torch.tensor([[[[1., 5., 2., 0.],
                        [3., 4., 8., 1.],
                        [0., 2., 9., 9.],
                        [7., 1., 3., 4.]]]])
    _, top = run(make("Pooling", "pool: MAX kernel_size: 2 stride: 2"), x, tops=2)
    assert top[0].data.tolist() == [[[[5., 8.], [7., 9.]]]]
    # Index h * W + w in the plane; of the tied 9s the first in row-major order wins.
    assert top[1].data.tolist() == [[[[1., 6.], [12., 10.]]]]


def test_ceil_rounding_and_floor():
    x = torch.arange(25.).view(1, 1, 5, 5)
    _, top = run(make("Pooling", "pool: MAX kernel_size: 2 stride: 2"), x)
    assert top[0].data.tolist() == [[[[6., 8., 9.], [16., 18., 19.], [21., 23., 24.]]]]
    _, top = run(make("Pooling", "pool: MAX kernel_size: 2 stride: 2 round_mode: FLOOR"), x)
    assert top[0].data.tolist() == [[[[6., 8.], [16., 18.]]]]


def test_last_window_must_start_inside_padded_image():
    # ceil((3 + 2 - 2) / 2) + 1 = 3 windows, but the third would start at 3 = H + pad: dropped.
    _, top = run(make("Pooling", "pool: MAX kernel_size: 2 stride: 2 pad: 1"), torch.arange(9.).view(1, 1, 3, 3))
    assert top[0].data.tolist() == [[[[0., 2.], [6., 8.]]]]


def test_ave_divisor_counts_padding_but_not_beyond():
    # 4x4 ones, kernel 3, stride 2, pad 1: windows cover rows [-1, 2), [1, 4), [3, 5 (clipped at H + pad)),
    # i.e. 2, 3, 1 image rows over divisors 3, 3, 2.
    _, top = run(make("Pooling", "pool: AVE kernel_size: 3 stride: 2 pad: 1"), torch.ones(1, 1, 4, 4))
    expected = torch.outer(torch.tensor([2 / 3, 1., 1 / 2]), torch.tensor([2 / 3, 1., 1 / 2]))
    torch.testing.assert_close(top[0].data[0, 0], expected)


def test_windows_beyond_the_image_are_empty():
    x = torch.arange(1., 26.).view(1, 1, 5, 5)
    bottom, top = run(make("Pooling", "pool: MAX kernel_size: 1 stride: 3"), x, tops=2)
    assert top[0].data[0, 0, :2, :2].tolist() == [[1., 4.], [16., 19.]]
    assert torch.all(top[0].data[0, 0, 2] == -FLT_MAX) and torch.all(top[1].data[0, 0, :, 2] == -1)


def test_global_pooling():
    x = torch.arange(12.).view(1, 2, 2, 3)
    _, top = run(make("Pooling", "pool: AVE global_pooling: true"), x)
    assert top[0].data.view(-1).tolist() == [2.5, 8.5]
    _, top = run(make("Pooling", "pool: MAX global_pooling: true"), x)
    assert top[0].shape == (1, 2, 1, 1) and top[0].data.view(-1).tolist() == [5., 11.]


def test_stochastic_test_phase_is_weighted_average():
    x = torch.tensor([[[[1., 2.], [3., 4.]]]])
    _, top = run(make("Pooling", "pool: STOCHASTIC kernel_size: 2", phase="TEST"), x)
    assert top[0].data.item() == pytest.approx(30. / 10.)


def test_stochastic_train_samples_proportionally():
    layer = make("Pooling", "pool: STOCHASTIC kernel_size: 2 stride: 2")
    x = torch.tensor([[1., 0., 0., 0.], [0., 3., 0., 6.]]).view(1, 1, 2, 4).repeat(1, 20000, 1, 1)
    bottom, top = run(layer, x)
    left, right = top[0].data[0, :, 0, 0], top[0].data[0, :, 0, 1]
    assert set(left.unique().tolist()) == {1., 3.} and set(right.unique().tolist()) == {6.}
    assert float((left == 3.).double().mean()) == pytest.approx(0.75, abs=0.015)
    # The gradient goes to the sampled element only.
    top[0].diff.fill_(1.0)
    layer.Backward(top, [True], bottom)
    picked3 = left == 3.
    assert torch.equal(bottom[0].diff[0, :, 1, 1], picked3.float())
    assert torch.equal(bottom[0].diff[0, :, 0, 0], (~picked3).float())
    assert torch.all(bottom[0].diff[0, :, 1, 3] == 1.0) and bottom[0].diff.sum() == 40000


# --- setup validation ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("params, shape, tops, message", [
    ("pool: MAX kernel_size: 2 kernel_h: 2 kernel_w: 2", (1, 1, 4, 4), 1, "not both"),
    ("pool: MAX kernel_h: 2", (1, 1, 4, 4), 1, "kernel_size, or kernel_h and kernel_w"),
    ("pool: MAX global_pooling: true kernel_size: 2", (1, 1, 4, 4), 1, "global_pooling"),
    ("pool: MAX global_pooling: true stride: 2", (1, 1, 4, 4), 1, "pad 0 and stride 1"),
    ("pool: STOCHASTIC kernel_size: 3 pad: 1", (1, 1, 4, 4), 1, "padding only with AVE or MAX"),
    ("pool: MAX kernel_size: 2 pad: 2", (1, 1, 4, 4), 1, "pad < kernel"),
    ("pool: MAX kernel_size: 2 pad: 1 pad_h: 1 pad_w: 1", (1, 1, 4, 4), 1, "pad, or pad_h and pad_w"),
    ("pool: MAX kernel_size: 0", (1, 1, 4, 4), 1, "kernel dimensions > 0"),
    ("pool: MAX kernel_size: 5 round_mode: FLOOR", (1, 1, 3, 3), 1, "kernel \\(5, 5\\) fits the padded input"),
    ("pool: MAX kernel_size: 2", (1, 4, 4), 1, "4-axis"),
    ("pool: AVE kernel_size: 2", (1, 1, 4, 4), 2, "number of top blobs <= 1"),
    ("pool: MAX kernel_size: 2", (1, 1, 4, 4), 3, "number of top blobs <= 2"),
])
def test_setup_errors_name_the_layer(params, shape, tops, message):
    with pytest.raises(LayerError, match=message) as info:
        make("Pooling", params).setup([Blob(shape)], [Blob() for _ in range(tops)])
    assert "layer 'L'" in str(info.value)


# --- numeric gradient checks (float64) ----------------------------------------------------------------------
@pytest.mark.parametrize("params, shape, phase", [
    ("pool: MAX kernel_size: 3 stride: 2 pad: 1", (1, 2, 5, 7), "TRAIN"),
    ("pool: MAX kernel_h: 3 kernel_w: 2 stride: 2 pad_h: 2 pad_w: 1", (2, 1, 5, 4), "TRAIN"),
    ("pool: AVE kernel_size: 3 stride: 2 pad: 1", (1, 2, 5, 7), "TRAIN"),
    ("pool: AVE kernel_size: 3 stride: 2 pad: 2", (2, 1, 5, 5), "TRAIN"),
    ("pool: AVE global_pooling: true", (1, 3, 3, 5), "TRAIN"),
    ("pool: STOCHASTIC kernel_size: 3 stride: 2", (1, 2, 5, 5), "TEST"),
])
def test_gradient(float64, params, shape, phase):
    x = spaced(shape)
    if "STOCHASTIC" in params:
        x = x - x.min() + 0.5
    GradientChecker(stepsize=1e-3, threshold=1e-4).check_gradient(
        make("Pooling", params, phase), [tensor_blob(x)], [Blob()])


def test_gradient_stochastic_train(float64):
    x = spaced((1, 2, 5, 5))
    x = x - x.min() + 0.5
    GradientChecker(stepsize=1e-4, threshold=1e-3).check_gradient(
        make("Pooling", "pool: STOCHASTIC kernel_size: 3 stride: 2"), [tensor_blob(x)], [Blob()])


@pytest.mark.parametrize("params, shape", [
    ("pyramid_height: 3 pool: MAX", (1, 1, 9, 7)),
    ("pyramid_height: 2 pool: AVE", (2, 1, 7, 6)),
    ("pyramid_height: 1 pool: AVE", (1, 2, 3, 3)),
])
def test_gradient_spp(float64, params, shape):
    GradientChecker(stepsize=1e-3, threshold=1e-4).check_gradient(
        make("SPP", params), [tensor_blob(spaced(shape))], [Blob()])


# --- torch autograd as the oracle ---------------------------------------------------------------------------
@pytest.mark.parametrize("params, oracle", [
    ("pool: MAX kernel_size: 3 stride: 2", lambda x: F.max_pool2d(x, 3, 2, ceil_mode=True)),
    ("pool: MAX kernel_size: 3 stride: 2 pad: 1 round_mode: FLOOR", lambda x: F.max_pool2d(x, 3, 2, 1)),
    ("pool: AVE kernel_size: 3 stride: 2 pad: 1", lambda x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True)),
    ("pool: AVE kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2",
     lambda x: F.avg_pool2d(x, (2, 3), (1, 2), ceil_mode=True)),
    ("pool: MAX global_pooling: true", lambda x: x.amax((2, 3), keepdim=True)),
])
def test_matches_torch(params, oracle):
    x = spaced((2, 3, 9, 8), torch.float32)
    layer = make("Pooling", params)
    bottom, top = run(layer, x)
    assert_matches_autograd(layer, bottom, top, x, oracle)


def test_spp_is_pooling_flattened_and_concatenated():
    x = torch.randn(2, 3, 9, 7)
    _, top = run(make("SPP", "pyramid_height: 3 pool: MAX"), x)
    # Level l: kernel ceil(in / 2^l), stride = kernel, pad (kernel * 2^l - in + 1) // 2, and the last window
    # must start inside image + pad.  Worked out by hand for 9 x 7:
    #   level 1: kernel (5, 4), pad (1, 1), windows start at -1 and 4 (rows), -1 and 3 (columns);
    #   level 2: kernel (3, 2), pad (2, 1), windows start at -2, 1, 4, 7 (rows), -1, 1, 3, 5 (columns).
    levels = [x.amax((2, 3), keepdim=True),
              F.max_pool2d(F.pad(x, (1, 0, 1, 0), value=-math.inf), (5, 4)),
              F.max_pool2d(F.pad(x, (1, 0, 2, 1), value=-math.inf), (3, 2))]
    assert [tuple(level.shape[2:]) for level in levels] == [(1, 1), (2, 2), (4, 4)]
    expected = torch.cat([level.reshape(2, -1) for level in levels], 1)
    assert top[0].shape == (2, 3 * 21)
    torch.testing.assert_close(top[0].data, expected)


def test_spp_image_too_small_for_the_pyramid():
    # 5 rows in 4 bins: kernel 2, pad 2 — Caffe's pooling refuses pad >= kernel, and so do we.
    with pytest.raises(LayerError, match="layer 'L' \\(type SPP\\): pyramid level 2 .* pad < kernel"):
        make("SPP", "pyramid_height: 3").setup([Blob((1, 1, 5, 8))], [Blob()])


def test_spp_pyramid_height_one_is_4d():
    _, top = run(make("SPP", "pyramid_height: 1 pool: AVE"), torch.arange(8.).view(1, 2, 2, 2))
    assert top[0].shape == (1, 2, 1, 1) and top[0].data.view(-1).tolist() == [1.5, 5.5]


def test_spp_follows_a_new_image_size():
    layer = make("SPP", "pyramid_height: 2 pool: MAX")
    x, top = tensor_blob(torch.randn(1, 2, 6, 6)), [Blob()]
    layer.setup([x], top)
    x.reshape(1, 2, 9, 5)
    x.data.normal_()
    layer.Forward([x], top)
    assert top[0].shape == (1, 10)
    torch.testing.assert_close(top[0].data[0, :2], x.data.amax((2, 3))[0])


# --- real Caffe ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", golden_cases("Pooling", "SPP"))
def test_golden(golden, name):
    report = run_golden_case(golden / "layers", name)
    assert "bottom_diff/x" in report["compared"]
