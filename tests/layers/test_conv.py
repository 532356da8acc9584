"""Convolution, Deconvolution, Im2col: hand-computed values, gradient checks, torch oracle, real Caffe."""
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
from tests.layers.helpers import tensor_blob


def make(type_, conv="", extra=""):
    text = f'name: "L" type: "{type_}" convolution_param {{ {conv} }} {extra}'
    return create_layer(parse_text(text, caffe_pb2.LayerParameter()))


def gaussian_filled(num_output, geometry, bias=True):
    return (f"num_output: {num_output} {geometry} bias_term: {str(bias).lower()} "
            "weight_filler { type: 'gaussian' std: 0.5 } bias_filler { type: 'gaussian' std: 0.5 }")


# --- forward with hand-computed values --------------------------------------------------------------------
def test_forward_hand_computed():
    layer = make("Convolution", "num_output: 1 kernel_size: 2 weight_filler { type: 'constant' value: 1 } "
                 "bias_filler { type: 'constant' value: 0.5 }")
    x = tensor_blob(torch.arange(1., 10.).view(1, 1, 3, 3))
    top = [Blob()]
    layer.setup([x], top)
    layer.Forward([x], top)
    assert top[0].data.tolist() == [[[[12.5, 16.5], [24.5, 28.5]]]]


def test_forward_group_and_stride_pad():
    # group 2, 1x1 kernels 2 and 3, stride 2, pad 1: zero border, every other pixel of each channel scaled.
    layer = make("Convolution", "num_output: 2 kernel_size: 1 group: 2 stride: 2 pad: 1 bias_term: false")
    x = tensor_blob(torch.arange(1., 19.).view(1, 2, 3, 3))
    top = [Blob()]
    layer.setup([x], top)
    layer.blobs[0].data.copy_(torch.tensor([2., 3.]).view(2, 1, 1, 1))
    layer.Forward([x], top)
    assert top[0].shape == (1, 2, 3, 3)
    assert top[0].data[0, 0].tolist() == [[0, 0, 0], [0, 2 * 5., 0], [0, 0, 0]]
    assert top[0].data[0, 1].tolist() == [[0, 0, 0], [0, 3 * 14., 0], [0, 0, 0]]


def test_deconv_forward_hand_computed():
    # A 1x1 input through a 2x2 kernel of stride 2 paints the kernel, scaled by the input.
    layer = make("Deconvolution", "num_output: 1 kernel_size: 2 stride: 2 bias_filler { type: 'constant' value: 1 }")
    x = tensor_blob(torch.tensor([[[[3.]], [[-1.]]]]))
    top = [Blob()]
    layer.setup([x], top)
    assert layer.blobs[0].shape == (2, 1, 2, 2)       # Caffe's layout: C_in x C_out/group x k x k
    layer.blobs[0].data.copy_(torch.tensor([[[[1., 2.], [3., 4.]]], [[[1., 1.], [1., 1.]]]]))
    layer.Forward([x], top)
    assert top[0].data.tolist() == [[[[3., 6.], [9., 12.]]]]


def test_im2col_forward_hand_computed():
    layer = make("Im2col", "kernel_size: 2")
    x = tensor_blob(torch.arange(1., 10.).view(1, 1, 3, 3))
    top = [Blob()]
    layer.setup([x], top)
    layer.Forward([x], top)
    # Row j = kernel offset (row-major), column = output position.
    assert top[0].shape == (1, 4, 2, 2)
    assert top[0].data.view(4, 4).tolist() == [[1, 2, 4, 5], [2, 3, 5, 6], [4, 5, 7, 8], [5, 6, 8, 9]]


def test_im2col_channel_major_layout():
    layer = make("Im2col", "kernel_h: 1 kernel_w: 2")
    x = tensor_blob(torch.tensor([[[[1., 2.]], [[3., 4.]]]]))
    top = [Blob()]
    layer.setup([x], top)
    layer.Forward([x], top)
    assert top[0].data.view(-1).tolist() == [1., 2., 3., 4.]   # (c0,k0) (c0,k1) (c1,k0) (c1,k1)


@pytest.mark.parametrize("conv, shape, expected", [
    ("kernel_size: 3", (2, 3, 7, 6), (2, 4, 5, 4)),
    ("kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 0 pad_w: 1", (1, 3, 7, 6), (1, 4, 3, 7)),
    ("kernel_h: 3 kernel_w: 2 stride_h: 2", (1, 3, 7, 6), None),
    ("kernel_size: 3 dilation: 2 stride: 2", (1, 3, 9, 9), (1, 4, 3, 3)),
    ("kernel_size: 3 kernel_size: 1 pad: 1 pad: 0", (1, 3, 4, 4), (1, 4, 4, 4)),
    ("kernel_size: 2", (2, 3, 5), (2, 4, 4)),
    ("kernel_size: 2 stride: 1 stride: 2 stride: 3", (2, 3, 4, 5, 6), (2, 4, 3, 2, 2)),
])
def test_output_shapes(conv, shape, expected):
    layer = make("Convolution", "num_output: 4 " + conv)
    top = [Blob()]
    if expected is None:
        # As in Caffe, stride_h without stride_w leaves stride_w at 0, which is refused.
        with pytest.raises(LayerError, match=r"stride dimensions > 0, Actual: \(2, 0\)"):
            layer.setup([Blob(shape)], top)
        return
    layer.setup([Blob(shape)], top)
    assert top[0].shape == expected


def test_deconv_output_shape():
    layer = make("Deconvolution", "num_output: 5 kernel_size: 4 stride: 2 pad: 1 group: 1")
    top = [Blob()]
    layer.setup([Blob((2, 3, 5, 7))], top)
    assert top[0].shape == (2, 5, 10, 14)               # 2 * (in - 1) + 4 - 2
    assert layer.blobs[0].shape == (3, 5, 4, 4)


def test_default_fillers_are_constant_zero():
    layer = make("Convolution", "num_output: 2 kernel_size: 1")
    layer.setup([Blob((1, 3, 2, 2))], [Blob()])
    assert layer.blobs[0].shape == (2, 3, 1, 1) and layer.blobs[1].shape == (2,)
    assert layer.blobs[0].asum_data() == 0 and layer.blobs[1].asum_data() == 0


def test_loaded_weights_are_kept_and_checked():
    param = parse_text('name: "L" type: "Convolution" convolution_param { num_output: 1 kernel_size: 1 '
                       "weight_filler { type: 'constant' value: 9 } }", caffe_pb2.LayerParameter())
    Blob((1, 2, 1, 1)).to_proto(param.blobs.add()).data[:] = [1.5, 2.5]
    Blob((1,)).to_proto(param.blobs.add()).data[:] = [0.25]
    layer = create_layer(param)
    x, top = tensor_blob(torch.ones(1, 2, 1, 1)), [Blob()]
    layer.setup([x], top)
    layer.Forward([x], top)
    assert top[0].data.item() == 4.25
    param.convolution_param.num_output = 2
    with pytest.raises(LayerError, match="parameter 0 of shape"):
        create_layer(param).setup([x], [Blob()])
    param.convolution_param.num_output = 1
    param.convolution_param.bias_term = False
    with pytest.raises(LayerError, match="1 parameter blobs"):
        create_layer(param).setup([x], [Blob()])


# --- setup validation ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("type_, conv, bottoms, tops, message", [
    ("Convolution", "num_output: 2 kernel_size: 5 pad: 1", [(1, 3, 2, 4)], 1, "kernel extent 5 .* > input 2"),
    ("Convolution", "num_output: 2 kernel_size: 3 dilation: 3", [(1, 3, 6, 6)], 1, "kernel extent 7"),
    ("Convolution", "num_output: 2 kernel_size: 1 group: 2", [(1, 3, 2, 2)], 1, "divides the input channels"),
    ("Convolution", "num_output: 3 kernel_size: 1 group: 2", [(1, 4, 2, 2)], 1, "divides num_output"),
    ("Deconvolution", "num_output: 3 kernel_size: 1 group: 3", [(1, 4, 2, 2)], 1, "divides the input"),
    ("Convolution", "num_output: 0 kernel_size: 1", [(1, 4, 2, 2)], 1, "num_output > 0"),
    ("Convolution", "num_output: 2 kernel_size: 1 kernel_h: 1 kernel_w: 1", [(1, 4, 2, 2)], 1, "not both"),
    ("Convolution", "num_output: 2 kernel_h: 1 kernel_w: 1", [(1, 4, 2)], 1, "2-D convolution"),
    ("Convolution", "num_output: 2", [(1, 4, 2, 2)], 1, "kernel_size specified once"),
    ("Convolution", "num_output: 2 kernel_size: 1 stride: 1 stride: 1 stride: 1", [(1, 4, 2, 2)], 1, "stride"),
    ("Convolution", "num_output: 2 kernel_size: 1 stride: 0", [(1, 4, 2, 2)], 1, "stride dimensions > 0"),
    ("Convolution", "num_output: 2 kernel_size: 1", [(1, 4, 2, 2), (1, 4, 2, 2)], 1, "as many top"),
    ("Convolution", "num_output: 2 kernel_size: 1", [(1, 4, 2, 2), (1, 4, 2, 3)], 2, "all bottoms of shape"),
    ("Convolution", "num_output: 2 kernel_size: 1", [], 0, "number of bottom blobs >= 1"),
    ("Im2col", "kernel_size: 4", [(1, 4, 3, 3)], 1, "kernel extent 4"),
    ("Im2col", "kernel_size: 1", [(1, 4, 3, 3)], 2, "number of top blobs == 1"),
])
def test_setup_errors_name_the_layer(type_, conv, bottoms, tops, message):
    layer = make(type_, conv)
    with pytest.raises(LayerError, match=message) as info:
        layer.setup([Blob(s) for s in bottoms], [Blob() for _ in range(tops)])
    assert "layer 'L'" in str(info.value)


def test_channel_change_after_setup_is_an_error():
    layer = make("Convolution", "num_output: 2 kernel_size: 1")
    x, top = Blob((1, 3, 2, 2)), [Blob()]
    layer.setup([x], top)
    x.reshape(1, 4, 2, 2)
    with pytest.raises(LayerError, match="Expect: 3 input channels"):
        layer.Forward([x], top)


# --- numeric gradient checks (float64) ----------------------------------------------------------------------
GRADIENT_CASES = [
    ("Convolution", gaussian_filled(2, "kernel_size: 3 stride: 2 pad: 1"), [(1, 2, 5, 5)]),
    ("Convolution", gaussian_filled(4, "kernel_h: 2 kernel_w: 3 group: 2 dilation: 2"), [(2, 2, 3, 5)]),
    ("Convolution", gaussian_filled(2, "kernel_size: 2", bias=False), [(1, 3, 3, 3), (1, 3, 3, 3)]),
    ("Convolution", gaussian_filled(2, "kernel_size: 3 pad: 1 stride: 2"), [(1, 2, 7)]),
    ("Convolution", gaussian_filled(2, "kernel_size: 2 stride: 1 stride: 2 stride: 1"), [(1, 2, 3, 4, 3)]),
    ("Convolution", gaussian_filled(2, "kernel_size: 1 axis: 1"), [(3, 4)]),
    ("Convolution", gaussian_filled(2, "kernel_size: 2 axis: 2"), [(2, 1, 3, 3, 3)]),
    ("Deconvolution", gaussian_filled(3, "kernel_size: 3 stride: 2 pad: 1"), [(1, 2, 3, 4)]),
    ("Deconvolution", gaussian_filled(4, "kernel_size: 2 stride: 2 group: 2"), [(2, 4, 3, 3)]),
    ("Im2col", "kernel_size: 3 pad: 1 stride: 2", [(1, 2, 5, 5)]),
    ("Im2col", "kernel_size: 2 dilation: 2 pad: 1", [(2, 1, 5)]),
    ("Im2col", "kernel_size: 2 stride: 2", [(1, 2, 3, 3, 4)]),
]


@pytest.mark.parametrize("type_, conv, shapes", GRADIENT_CASES)
def test_gradient(float64, type_, conv, shapes):
    layer = make(type_, conv)
    bottom = [tensor_blob(torch.randn(s, dtype=torch.float64)) for s in shapes]
    top = [Blob() for _ in shapes]
    GradientChecker(stepsize=1e-3, threshold=1e-4).check_gradient(layer, bottom, top)


# --- torch autograd as the oracle ---------------------------------------------------------------------------
def run_with_oracle(layer, inputs, oracle, params=True):
    """Forward/backward through the layer; the same maths through torch autograd; compare everything."""
    bottom = [tensor_blob(x) for x in inputs]
    top = [Blob() for _ in inputs]
    layer.setup(bottom, top)
    layer.Forward(bottom, top)
    diffs = [torch.randn(t.shape, dtype=inputs[0].dtype) for t in top]
    for t, d in zip(top, diffs):
        t.diff.copy_(d)
    layer.Backward(top, [True] * len(bottom), bottom)

    leaves = [x.clone().requires_grad_() for x in inputs]
    weights = [p.data.clone().requires_grad_() for p in layer.blobs] if params else []
    outputs = [oracle(x, *weights) for x in leaves]
    torch.autograd.backward(outputs, diffs)
    for t, y in zip(top, outputs):
        torch.testing.assert_close(t.data, y.detach(), msg=lambda m: f"top: {m}")
    for b, x in zip(bottom, leaves):
        torch.testing.assert_close(b.diff, x.grad, msg=lambda m: f"bottom diff: {m}")
    for p, w in zip(layer.blobs, weights):
        torch.testing.assert_close(p.diff, w.grad, msg=lambda m: f"param diff: {m}")


@pytest.mark.parametrize("shape, conv, oracle", [
    ((2, 4, 9, 8), "kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 2 group: 2",
     lambda x, w, b: F.conv2d(x, w, b, (2, 1), (1, 2), 1, 2)),
    ((1, 3, 11, 11), "kernel_size: 3 dilation: 2 stride: 3",
     lambda x, w, b: F.conv2d(x, w, b, 3, 0, 2)),
    ((3, 2, 10), "kernel_size: 4 pad: 2", lambda x, w, b: F.conv1d(x, w, b, 1, 2)),
    ((2, 2, 4, 5, 3), "kernel_size: 2 pad: 1 stride: 2", lambda x, w, b: F.conv3d(x, w, b, 2, 1)),
    ((5, 3), "kernel_size: 1", lambda x, w, b: x @ w.t() + b),
    ((2, 3, 2, 5, 5), "kernel_size: 3 axis: 2",
     lambda x, w, b: F.conv2d(x.reshape(6, 2, 5, 5), w, b).reshape(2, 3, 4, 3, 3)),
])
def test_convolution_matches_torch(shape, conv, oracle):
    num_output = 4
    layer = make("Convolution", gaussian_filled(num_output, conv))
    run_with_oracle(layer, [torch.randn(shape), torch.randn(shape)], oracle)


@pytest.mark.parametrize("shape, conv, oracle", [
    ((2, 4, 5, 6), "kernel_size: 4 stride: 2 pad: 1 group: 2",
     lambda x, w, b: F.conv_transpose2d(x, w, b, 2, 1, groups=2)),
    ((1, 3, 4, 4), "kernel_size: 3 dilation: 2 stride: 3",
     lambda x, w, b: F.conv_transpose2d(x, w, b, 3, dilation=2)),
    ((2, 3, 3, 2, 4), "kernel_size: 2 stride: 2",
     lambda x, w, b: F.conv_transpose3d(x, w, b, 2)),
])
def test_deconvolution_matches_torch(shape, conv, oracle):
    layer = make("Deconvolution", gaussian_filled(4, conv))
    run_with_oracle(layer, [torch.randn(shape)], oracle)


def im2col_3d_reference(x, kernel, stride, pad):
    """Caffe's column layout written out with slicing: channel c * K + j holds offset j of channel c."""
    n, c = x.shape[:2]
    xp = F.pad(x, sum(((p, p) for p in reversed(pad)), ()))
    out = [(xp.shape[2 + i] - kernel[i]) // stride[i] + 1 for i in range(3)]
    rows = []
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            for k in range(kernel[2]):
                rows.append(xp[:, :, i:i + stride[0] * out[0]:stride[0], j:j + stride[1] * out[1]:stride[1],
                               k:k + stride[2] * out[2]:stride[2]])
    return torch.stack(rows, 2).reshape(n, -1, *out)


@pytest.mark.parametrize("shape, conv, oracle", [
    ((2, 3, 6, 5), "kernel_size: 3 pad: 1 stride: 2",
     lambda x: F.unfold(x, 3, padding=1, stride=2).reshape(2, 27, 3, 3)),
    ((1, 2, 7, 7), "kernel_h: 2 kernel_w: 3 dilation: 2",
     lambda x: F.unfold(x, (2, 3), dilation=2).reshape(1, 12, 5, 3)),
    ((2, 2, 9), "kernel_size: 3 stride: 2 pad: 1",
     lambda x: F.unfold(x.unsqueeze(2), (1, 3), padding=(0, 1), stride=(1, 2)).reshape(2, 6, 5)),
    ((2, 2, 4, 5, 3), "kernel_size: 2 stride: 1 stride: 2 stride: 1 pad: 1",
     lambda x: im2col_3d_reference(x, (2, 2, 2), (1, 2, 1), (1, 1, 1))),
])
def test_im2col_matches_reference(shape, conv, oracle):
    run_with_oracle(make("Im2col", conv), [torch.randn(shape)], oracle, params=False)


# --- Caffe's diff semantics ---------------------------------------------------------------------------------
def test_param_diffs_accumulate_and_bottom_diffs_respect_propagate_down():
    layer = make("Convolution", gaussian_filled(2, "kernel_size: 2"))
    x, top = tensor_blob(torch.randn(1, 2, 3, 3)), [Blob()]
    layer.setup([x], top)
    layer.Forward([x], top)
    top[0].diff.copy_(torch.randn(top[0].shape))
    layer.Backward(top, [True], [x])
    once = [p.diff.clone() for p in layer.blobs]
    x.diff.fill_(7.0)
    layer.Backward(top, [False], [x])
    for p, d in zip(layer.blobs, once):
        torch.testing.assert_close(p.diff, 2 * d)
    assert torch.all(x.diff == 7.0)
    layer.param_propagate_down = [False, True]
    layer.Backward(top, [False], [x])
    torch.testing.assert_close(layer.blobs[0].diff, 2 * once[0])
    torch.testing.assert_close(layer.blobs[1].diff, 3 * once[1])


# --- real Caffe ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", golden_cases("Convolution", "Deconvolution", "Im2col"))
def test_golden(golden, name):
    report = run_golden_case(golden / "layers", name)
    assert any(k.startswith("bottom_diff/") for k in report["compared"])
