"""Neuron layers: forward values, numeric gradients, in-place use, torch autograd as oracle, golden Caffe data."""
import math

import pytest
import torch

from brewnet.core.blob import Blob
from brewnet.core.registry import create_layer
from brewnet.errors import LayerError
from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text
from tests.layers.golden_case import golden_cases, run_golden_case
from tests.layers.helpers import check_layer

NEURON_TYPES = ("ReLU", "PReLU", "Sigmoid", "TanH", "AbsVal", "BNLL", "ELU", "Exp", "Log", "Power",
                "Threshold", "Swish", "Clip", "Dropout")


def make_layer(text, phase=caffe_pb2.TRAIN):
    param = parse_text('name: "L" ' + text, caffe_pb2.LayerParameter())
    param.phase = phase
    return create_layer(param)


def blob(values, name="x"):
    t = torch.as_tensor(values)
    b = Blob(t.shape, name=name)
    b.data.copy_(t)
    return b


def run(text, x, phase=caffe_pb2.TRAIN):
    layer, bottom, top = make_layer(text, phase), blob(x), Blob(name="y")
    layer.setup([bottom], [top])
    layer.Forward([bottom], [top])
    return layer, bottom, top


X = [[-2.0, -0.5, 0.0, 0.5, 2.0]]


def close(actual, expected, tol=1e-6):
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.allclose(actual, expected, rtol=tol, atol=tol), f"\n{actual}\n!=\n{expected}"


# --- forward with hand-computed values ---------------------------------------------------------------------

def sig(v):
    return 1 / (1 + math.exp(-v))


@pytest.mark.parametrize("text,expected", [
    ('type: "ReLU"', [[0, 0, 0, 0.5, 2]]),
    ('type: "ReLU" relu_param { negative_slope: 0.1 }', [[-0.2, -0.05, 0, 0.5, 2]]),
    ('type: "Sigmoid"', [[sig(v) for v in X[0]]]),
    ('type: "TanH"', [[math.tanh(v) for v in X[0]]]),
    ('type: "AbsVal"', [[2, 0.5, 0, 0.5, 2]]),
    ('type: "BNLL"', [[math.log(1 + math.exp(v)) for v in X[0]]]),
    ('type: "ELU" elu_param { alpha: 0.5 }', [[0.5 * (math.exp(-2) - 1), 0.5 * (math.exp(-0.5) - 1), 0, 0.5, 2]]),
    ('type: "Exp"', [[math.exp(v) for v in X[0]]]),
    ('type: "Exp" exp_param { base: 2 scale: 3 shift: 1 }', [[2 ** (1 + 3 * v) for v in X[0]]]),
    ('type: "Log" log_param { shift: 3 }', [[math.log(3 + v) for v in X[0]]]),
    ('type: "Log" log_param { base: 10 scale: 2 shift: 5 }', [[math.log10(5 + 2 * v) for v in X[0]]]),
    ('type: "Power" power_param { power: 2 scale: 2 shift: 1 }', [[(1 + 2 * v) ** 2 for v in X[0]]]),
    ('type: "Power" power_param { power: 3 }', [[v ** 3 for v in X[0]]]),
    ('type: "Power" power_param { power: 0 shift: 7 }', [[1, 1, 1, 1, 1]]),
    ('type: "Power" power_param { power: 2 scale: 0 shift: 3 }', [[9, 9, 9, 9, 9]]),
    ('type: "Power" power_param { power: 0.5 shift: 4 }', [[math.sqrt(4 + v) for v in X[0]]]),
    ('type: "Threshold" threshold_param { threshold: 0.5 }', [[0, 0, 0, 0, 1]]),
    ('type: "Threshold"', [[0, 0, 0, 1, 1]]),
    ('type: "Swish"', [[v * sig(v) for v in X[0]]]),
    ('type: "Swish" swish_param { beta: 2 }', [[v * sig(2 * v) for v in X[0]]]),
    ('type: "Clip" clip_param { min: -1 max: 0.25 }', [[-1, -0.5, 0, 0.25, 0.25]]),
])
def test_forward_values(text, expected):
    _, _, top = run(text, X)
    close(top.data, expected)


def test_prelu_forward_per_channel_and_default_slope():
    x = [[[-1.0, 2.0], [-4.0, 1.0]]]                       # N=1, C=2, 2 values each
    layer, _, top = run('type: "PReLU" prelu_param { filler { type: "constant" value: 0.5 } }', x)
    close(top.data, [[[-0.5, 2.0], [-2.0, 1.0]]])
    layer.blobs[0].data.copy_(torch.tensor([0.1, 0.2]))
    layer.Forward([blob(x)], [top])
    close(top.data, [[[-0.1, 2.0], [-0.8, 1.0]]])
    default, _, top = run('type: "PReLU"', x)
    assert default.blobs[0].shape == (2,)
    close(default.blobs[0].data, [0.25, 0.25])
    shared, _, top = run('type: "PReLU" prelu_param { channel_shared: true }', x)
    assert shared.blobs[0].shape == ()
    close(top.data, [[[-0.25, 2.0], [-1.0, 1.0]]])


def test_prelu_keeps_loaded_slopes_and_checks_their_size():
    param = parse_text('name: "L" type: "PReLU"', caffe_pb2.LayerParameter())
    param.blobs.add().CopyFrom(Blob((2,)).to_proto())
    param.blobs[0].data[:] = [0.3, 0.7]
    layer = create_layer(param)
    layer.setup([blob([[[-1.0], [-1.0]]])], [Blob()])
    close(layer.blobs[0].data, [0.3, 0.7])
    param.prelu_param.channel_shared = True
    with pytest.raises(LayerError, match="inconsistent"):
        create_layer(param).setup([blob([[[-1.0], [-1.0]]])], [Blob()])
    with pytest.raises(LayerError, match=">= 2 axes"):
        make_layer('type: "PReLU"').setup([blob([1.0, 2.0])], [Blob()])


def test_dropout_train_scales_kept_units_and_backward_uses_the_mask():
    x = torch.rand(50, 40) + 1.0
    layer, bottom, top = run('type: "Dropout" dropout_param { dropout_ratio: 0.25 }', x)
    y = top.data
    kept = y != 0
    close(y[kept], x[kept] / 0.75, 1e-6)
    assert abs(kept.double().mean().item() - 0.75) < 0.03        # 2000 draws: 0.75 +- 3 sigma
    top.diff.copy_(torch.full_like(y, 2.0))
    layer.Backward([top], [True], [bottom])
    close(bottom.diff, kept.to(y.dtype) * (2.0 / 0.75))
    layer.Forward([bottom], [top])                                # a fresh mask every forward
    assert not torch.equal(top.data != 0, kept)


def test_dropout_test_phase_is_identity():
    x = torch.randn(3, 4)
    layer, bottom, top = run('type: "Dropout" dropout_param { dropout_ratio: 0.6 }', x, phase=caffe_pb2.TEST)
    close(top.data, x)
    top.diff.copy_(torch.arange(12.0).reshape(3, 4))
    layer.Backward([top], [True], [bottom])
    close(bottom.diff, torch.arange(12.0).reshape(3, 4))


def test_dropout_in_place_keeps_mask():
    x = torch.rand(6, 7) + 0.5
    layer, b = make_layer('type: "Dropout"'), blob(x)
    layer.setup([b], [b])
    layer.Forward([b], [b])
    kept = b.data != 0
    close(b.data[kept], x[kept] * 2)
    b.diff.fill_(1.0)
    layer.Backward([b], [True], [b])
    close(b.diff, kept.to(x.dtype) * 2)


def test_threshold_has_no_backward():
    layer, bottom, top = run('type: "Threshold"', X)
    with pytest.raises(LayerError, match="cannot backpropagate"):
        layer.Backward([top], [True], [bottom])


@pytest.mark.parametrize("text,match", [
    ('type: "Exp" exp_param { base: -2 }', "base > 0"),
    ('type: "Log" log_param { base: 0 }', "base > 0"),
    ('type: "Log" log_param { base: 1 }', "base != 1"),
    ('type: "Dropout" dropout_param { dropout_ratio: 1 }', "dropout_ratio"),
])
def test_bad_parameters_name_the_layer(text, match):
    with pytest.raises(LayerError, match=match) as info:
        make_layer(text).setup([blob(X)], [Blob()])
    assert "layer 'L'" in str(info.value)


def test_wrong_blob_counts():
    with pytest.raises(LayerError, match="number of bottom blobs == 1"):
        make_layer('type: "ReLU"').setup([blob(X), blob(X)], [Blob()])
    with pytest.raises(LayerError, match="number of top blobs == 1"):
        make_layer('type: "TanH"').setup([blob(X)], [])


# --- specs shared by gradient, in-place and autograd checks -----------------------------------------------
# (prototxt, torch function of (x, params) -> y, input maker, kink)

def positive(shape):
    return torch.rand(shape, dtype=torch.float64) + 0.5


def gaussian(shape):
    # keep clear of 0 (kinks) by at least 0.05
    x = torch.randn(shape, dtype=torch.float64)
    return x + 0.1 * torch.sign(x)


SPECS = {
    "relu": ('type: "ReLU"', lambda x, p: torch.relu(x), gaussian),
    "relu_leaky": ('type: "ReLU" relu_param { negative_slope: 0.3 }',
                   lambda x, p: torch.where(x > 0, x, 0.3 * x), gaussian),
    "prelu": ('type: "PReLU" prelu_param { filler { type: "uniform" min: -0.5 max: 0.5 } }',
              lambda x, p: torch.where(x > 0, x, x * p[0].reshape(1, -1, *[1] * (x.dim() - 2))), gaussian),
    "prelu_shared": ('type: "PReLU" prelu_param { channel_shared: true }',
                     lambda x, p: torch.where(x > 0, x, x * p[0]), gaussian),
    "sigmoid": ('type: "Sigmoid"', lambda x, p: torch.sigmoid(x), gaussian),
    "tanh": ('type: "TanH"', lambda x, p: torch.tanh(x), gaussian),
    "absval": ('type: "AbsVal"', lambda x, p: x.abs(), gaussian),
    "bnll": ('type: "BNLL"', lambda x, p: torch.nn.functional.softplus(x), gaussian),
    "elu": ('type: "ELU" elu_param { alpha: 0.7 }', lambda x, p: torch.nn.functional.elu(x, 0.7), gaussian),
    "exp": ('type: "Exp" exp_param { base: 3 scale: 0.5 shift: -1 }',
            lambda x, p: 3 ** (0.5 * x - 1), gaussian),
    "log": ('type: "Log" log_param { base: 2 scale: 1.5 shift: 0.2 }',
            lambda x, p: torch.log2(1.5 * x + 0.2), positive),
    "power_cube": ('type: "Power" power_param { power: 3 scale: 0.5 shift: 1 }',
                   lambda x, p: (0.5 * x + 1) ** 3, gaussian),
    "power_sq": ('type: "Power" power_param { power: 2 scale: -2 shift: 0.5 }',
                 lambda x, p: (-2 * x + 0.5) ** 2, gaussian),
    "power_sqrt": ('type: "Power" power_param { power: 0.5 scale: 2 }', lambda x, p: (2 * x) ** 0.5, positive),
    "power_linear": ('type: "Power" power_param { power: 1 scale: 3 shift: 2 }', lambda x, p: 3 * x + 2, gaussian),
    "power_const": ('type: "Power" power_param { power: 2 scale: 0 shift: 2 }',
                    lambda x, p: torch.full_like(x, 4.0) + 0 * x, gaussian),
    "swish": ('type: "Swish" swish_param { beta: 1.5 }', lambda x, p: x * torch.sigmoid(1.5 * x), gaussian),
    "clip": ('type: "Clip" clip_param { min: -0.6 max: 0.4 }', lambda x, p: x.clamp(-0.6, 0.4), gaussian),
    "dropout_test": ('type: "Dropout"', lambda x, p: x, gaussian),
}

SHAPE = (2, 3, 4, 3)


@pytest.mark.parametrize("key", sorted(SPECS))
def test_gradient_autograd_in_place_and_recording(key):
    text, fn, maker = SPECS[key]
    x = maker(SHAPE)
    if key == "clip":  # keep clear of the clip bounds
        x = torch.tensor([-0.9, -0.3, 0.1, 0.2, 0.8, -0.7] * 12, dtype=torch.float64).reshape(SHAPE)
    # tol 1e-6: the layer parameters are float32 in the proto (0.3 -> 0.30000001192...), the oracle's are exact.
    check_layer(text, [x], [SHAPE], oracle=fn, tol=1e-6, in_place=True,
                phase=caffe_pb2.TEST if key == "dropout_test" else caffe_pb2.TRAIN)


def test_parameter_diffs_accumulate_and_respect_param_propagate_down():
    layer, bottom, top = run('type: "PReLU"', [[[-1.0, 2.0], [-3.0, -1.0]]])
    top.diff.fill_(1.0)
    layer.Backward([top], [False], [bottom])
    layer.Backward([top], [False], [bottom])
    close(layer.blobs[0].diff, [-2.0, -8.0])                     # twice (-1) and twice (-3 - 1)
    close(bottom.diff, torch.zeros(1, 2, 2))                     # propagate_down False: untouched
    layer.set_param_propagate_down(0, False)
    layer.Backward([top], [True], [bottom])
    close(layer.blobs[0].diff, [-2.0, -8.0])
    close(bottom.diff, [[[0.25, 1.0], [0.25, 0.25]]])


@pytest.mark.parametrize("name", golden_cases(*NEURON_TYPES))
def test_golden(golden, name):
    run_golden_case(golden / "layers", name)


@pytest.mark.parametrize("in_place", [False, True])
def test_relu_forward_only_keeps_no_mask_and_backward_still_works(in_place):
    x = torch.tensor([[-1.0, 0.0, 2.0], [3.0, -0.5, 0.25]])
    layer = make_layer('type: "ReLU"')
    layer.need_backward = False          # what a Net sets for a layer whose backward it never runs
    bottom = [blob(x)]
    top = bottom if in_place else [Blob()]
    layer.setup(bottom, top)
    layer.Forward(bottom, top)
    assert layer.positive is None
    assert torch.equal(top[0].data, x.clamp(min=0))
    top[0].diff.copy_(torch.arange(6.0).view(2, 3) + 1)
    layer.Backward(top, [True], bottom)
    assert torch.equal(bottom[0].diff, torch.tensor([[0.0, 0.0, 3.0], [4.0, 0.0, 6.0]]))
