"""BatchNorm, Scale, Bias, MVN: hand-computed values, BatchNorm's running statistics from TRAIN to TEST,
parameter handling, in place, float64 gradient checks, torch autograd as oracle, Caffe's golden outputs."""
import math

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


def make(text, phase=caffe_pb2.TRAIN):
    param = parse_text('name: "L" ' + text, caffe_pb2.LayerParameter())
    param.phase = phase
    return create_layer(param)


def blob_of(values, dtype=torch.float32):
    t = torch.as_tensor(values, dtype=dtype)
    b = Blob(t.shape, dtype=dtype)
    b.data.copy_(t)
    return b


def forward(layer, bottom, in_place=False):
    top = [bottom[0]] if in_place else [Blob(dtype=bottom[0].dtype)]
    layer.setup(bottom, top)
    layer.Forward(bottom, top)
    return top


def backward(layer, top, bottom, dy, propagate_down=None):
    top[0].diff.copy_(torch.as_tensor(dy, dtype=top[0].dtype).view(top[0].shape))
    layer.Backward(top, propagate_down or [True] * len(bottom), bottom)


def checker():
    return GradientChecker(stepsize=1e-3, threshold=1e-4)


def assert_close(actual, expected, rtol=1e-5, atol=1e-6):
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    assert torch.allclose(actual, expected, rtol=rtol, atol=atol), f"got {actual.tolist()}, want {expected.tolist()}"


# --- BatchNorm ---------------------------------------------------------------------------------------------

def test_batchnorm_train_forward_and_running_stats():
    x = blob_of([[[1.0, 3.0]], [[5.0, 7.0]]])                  # N=2, C=1, 2 positions: mean 4, var 5
    layer = make('type: "BatchNorm" batch_norm_param { moving_average_fraction: 0.5 eps: 0 }')
    top = forward(layer, [x])
    assert_close(top[0].data, (x.data - 4) / math.sqrt(5))
    # s = 0.5 * 0 + 1; sums of mean / unbiased variance (m = 4 values: 5 * 4/3).
    assert_close(layer.blobs[2].data, [1.0])
    assert_close(layer.blobs[0].data, [4.0])
    assert_close(layer.blobs[1].data, [20 / 3])
    x.data.copy_(x.data * 2)                                   # mean 8, var 20
    layer.Forward([x], top)
    assert_close(layer.blobs[2].data, [1.5])
    assert_close(layer.blobs[0].data, [0.5 * 4 + 8])
    assert_close(layer.blobs[1].data, [0.5 * 20 / 3 + 80 / 3])


def test_batchnorm_train_then_test_uses_running_stats():
    train = make('type: "BatchNorm"')
    x = blob_of(torch.randn(4, 3, 2, 2) * 2 + 1)
    forward(train, [x])
    test = make('type: "BatchNorm"', phase=caffe_pb2.TEST)
    probe = blob_of(torch.randn(2, 3, 2, 2))
    top = [Blob()]
    test.setup([probe], top)
    for mine, theirs in zip(test.blobs, train.blobs):
        mine.data.copy_(theirs.data)
    test.Forward([probe], top)
    s = float(train.blobs[2].data)
    mean = train.blobs[0].data / s
    var = train.blobs[1].data / s
    # After one step from zeros the stored statistics are the batch mean and the unbiased batch variance.
    assert_close(mean, x.data.mean(dim=(0, 2, 3)))
    assert_close(var, x.data.transpose(0, 1).reshape(3, -1).var(dim=1, unbiased=True))
    expected = (probe.data - mean.view(1, 3, 1, 1)) / torch.sqrt(var.view(1, 3, 1, 1) + 1e-5)
    assert_close(top[0].data, expected)
    before = [b.data.clone() for b in test.blobs]
    test.Forward([probe], top)
    assert all(torch.equal(a, b.data) for a, b in zip(before, test.blobs))   # TEST never updates them
    backward(test, top, [probe], torch.ones(2, 3, 2, 2))
    assert_close(probe.diff, (1 / torch.sqrt(var + 1e-5)).view(1, 3, 1, 1).expand(2, 3, 2, 2))


def test_batchnorm_use_global_stats_defaults_by_phase():
    x = blob_of(torch.randn(2, 3))
    layers = {
        "train": make('type: "BatchNorm"'),
        "test": make('type: "BatchNorm"', phase=caffe_pb2.TEST),
        "train_global": make('type: "BatchNorm" batch_norm_param { use_global_stats: true }'),
        "test_local": make('type: "BatchNorm" batch_norm_param { use_global_stats: false }', caffe_pb2.TEST),
    }
    for layer in layers.values():
        forward(layer, [x])
    assert not layers["train"].use_global_stats and layers["test"].use_global_stats
    assert layers["train_global"].use_global_stats and not layers["test_local"].use_global_stats


def test_batchnorm_zero_scale_factor_means_zero_statistics():
    x = blob_of([[1.0, -2.0]])
    layer = make('type: "BatchNorm" batch_norm_param { use_global_stats: true eps: 0.25 }')
    top = forward(layer, [x])                                  # fresh blobs: s = 0 -> mean 0, var 0
    assert_close(top[0].data, x.data / 0.5)


def test_batchnorm_statistics_are_not_parameters():
    layer = make('type: "BatchNorm"')
    forward(layer, [blob_of(torch.randn(2, 4, 3))])
    assert [b.shape for b in layer.blobs] == [(4,), (4,), (1,)]
    # Caffe 1.0 writes `param { lr_mult: 0 }` for each statistics blob into its LayerParameter.
    assert [p.lr_mult for p in layer.layer_param.param] == [0.0, 0.0, 0.0]
    assert not any(layer.param_propagate(i) for i in range(3))
    given = make('type: "BatchNorm" param { lr_mult: 0 decay_mult: 0 }')
    forward(given, [blob_of(torch.randn(2, 4))])
    assert [p.lr_mult for p in given.layer_param.param] == [0.0, 0.0, 0.0]
    with pytest.raises(LayerError, match="Cannot configure batch normalization statistics"):
        forward(make('type: "BatchNorm" param { lr_mult: 0 } param { lr_mult: 1 }'), [blob_of(torch.randn(2, 4))])


def test_batchnorm_preloaded_blobs_and_channel_check():
    param = parse_text('name: "L" type: "BatchNorm"', caffe_pb2.LayerParameter())
    for values in ([1.0, 2.0], [4.0, 8.0], [2.0]):
        param.blobs.add().CopyFrom(blob_of(values).to_proto())
    param.phase = caffe_pb2.TEST
    layer = create_layer(param)
    top = forward(layer, [blob_of([[0.5, 1.0]])])
    assert_close(top[0].data, [[(0.5 - 0.5) / math.sqrt(2 + 1e-5), (1.0 - 1.0) / math.sqrt(4 + 1e-5)]])
    with pytest.raises(LayerError, match=r"Expect: 2 channels, Actual: 3"):
        layer.Forward([blob_of(torch.zeros(1, 3))], top)


@pytest.mark.parametrize("shape", [(1, 3, 5), (5, 3), (1, 2, 3, 1)])
def test_batchnorm_train_gradient(float64, shape):
    x = Blob(shape)
    x.data.normal_()
    checker().check_gradient(make('type: "BatchNorm"'), [x], [Blob()])


@pytest.mark.parametrize("phase", [caffe_pb2.TRAIN, caffe_pb2.TEST])
def test_batchnorm_matches_autograd(phase):
    x0 = torch.randn(3, 2, 5, dtype=torch.float64)
    dy = torch.randn(3, 2, 5, dtype=torch.float64)
    mean, var = torch.tensor([0.5, -1.0], dtype=torch.float64), torch.tensor([2.0, 0.5], dtype=torch.float64)
    layer = make('type: "BatchNorm" batch_norm_param { eps: 0.001 }', phase)
    x = blob_of(x0, torch.float64)
    top = [Blob(dtype=torch.float64)]
    layer.setup([x], top)
    layer.blobs[0].data.copy_(mean * 2), layer.blobs[1].data.copy_(var * 2), layer.blobs[2].data.fill_(2)
    layer.Forward([x], top)
    backward(layer, top, [x], dy)
    ref_x = x0.clone().requires_grad_()
    ref = F.batch_norm(ref_x, mean.clone(), var.clone(), training=phase == caffe_pb2.TRAIN, eps=0.001)
    ref.backward(dy)
    assert torch.allclose(top[0].data, ref.detach(), atol=1e-12)
    assert torch.allclose(x.diff, ref_x.grad, atol=1e-12)


def test_batchnorm_in_place():
    x0, dy = torch.randn(4, 3, 2), torch.randn(4, 3, 2)
    out = []
    for in_place in (False, True):
        x = blob_of(x0)
        layer = make('type: "BatchNorm"')
        top = forward(layer, [x], in_place)
        y = top[0].data.clone()
        backward(layer, top, [x], dy)
        out.append((y, x.diff.clone()))
    assert torch.allclose(out[0][0], out[1][0]) and torch.allclose(out[0][1], out[1][1], atol=1e-6)


# --- Scale -------------------------------------------------------------------------------------------------

def test_scale_learned_defaults_and_hand_computed():
    x = blob_of(torch.arange(12.0).view(2, 3, 2))
    layer = make('type: "Scale" scale_param { bias_term: true bias_filler { type: "constant" value: 0.5 } }')
    top = forward(layer, [x])
    assert [b.shape for b in layer.blobs] == [(3,), (3,)]
    assert_close(top[0].data, x.data + 0.5)                    # default scale filler: constant 1
    layer.blobs[0].data.copy_(torch.tensor([1.0, 2.0, -1.0]))
    layer.Forward([x], top)
    assert_close(top[0].data, x.data * torch.tensor([1.0, 2.0, -1.0]).view(1, 3, 1) + 0.5)
    backward(layer, top, [x], torch.ones(2, 3, 2))
    assert_close(x.diff, torch.tensor([1.0, 2.0, -1.0]).view(1, 3, 1).expand(2, 3, 2))
    assert_close(layer.blobs[0].diff, x.data.sum(dim=(0, 2)))
    assert_close(layer.blobs[1].diff, [4.0, 4.0, 4.0])
    backward(layer, top, [x], torch.ones(2, 3, 2))             # parameter diffs accumulate
    assert_close(layer.blobs[0].diff, 2 * x.data.sum(dim=(0, 2)))
    assert_close(layer.blobs[1].diff, [8.0, 8.0, 8.0])


def test_scale_second_bottom_axis_and_scalar():
    x, s = blob_of(torch.randn(2, 3, 4)), blob_of(torch.randn(3, 4))
    layer = make('type: "Scale"')
    top = forward(layer, [x, s])
    assert layer.blobs == []
    assert_close(top[0].data, x.data * s.data)
    backward(layer, top, [x, s], torch.ones(2, 3, 4))
    assert_close(s.diff, x.data.sum(dim=0))
    assert_close(x.diff, s.data.expand(2, 3, 4))
    scalar = blob_of(3.0)
    top = forward(make('type: "Scale"'), [x, scalar])          # a 0-axis scale multiplies everything
    assert_close(top[0].data, 3 * x.data)
    layer = make('type: "Scale" scale_param { axis: -1 num_axes: 1 filler { type: "constant" value: 2 } }')
    top = forward(layer, [x])
    assert layer.blobs[0].shape == (4,)
    assert_close(top[0].data, 2 * x.data)
    layer = make('type: "Scale" scale_param { axis: 0 num_axes: -1 }')
    forward(layer, [x])
    assert layer.blobs[0].shape == (2, 3, 4)
    with pytest.raises(LayerError, match="scale shape equal"):
        forward(make('type: "Scale"'), [x, blob_of(torch.randn(4, 3))])
    with pytest.raises(LayerError, match="num_axes >= -1"):
        forward(make('type: "Scale" scale_param { num_axes: -2 }'), [x])


def test_scale_with_bottom_scale_and_bias_term_learns_bias():
    x, s = blob_of(torch.randn(2, 3)), blob_of(torch.randn(3))
    layer = make('type: "Scale" scale_param { bias_term: true bias_filler { type: "constant" value: -1 } }')
    top = forward(layer, [x, s])
    assert len(layer.blobs) == 1 and layer.blobs[0].shape == (3,)
    assert_close(top[0].data, x.data * s.data - 1)


def test_scale_in_place_matches_out_of_place():
    x0, dy = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    out = []
    for in_place in (False, True):
        torch.manual_seed(3)
        x = blob_of(x0)
        layer = make('type: "Scale" scale_param { filler { type: "gaussian" } bias_term: true '
                     'bias_filler { type: "gaussian" } }')
        top = forward(layer, [x], in_place)
        y = top[0].data.clone()
        backward(layer, top, [x], dy)
        out.append([y, x.diff.clone()] + [b.diff.clone() for b in layer.blobs])
    for a, b in zip(*out):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("text, shapes", [
    ('scale_param { bias_term: true filler { type: "gaussian" } bias_filler { type: "gaussian" } }', [(1, 3, 5)]),
    ('scale_param { axis: 0 num_axes: -1 filler { type: "gaussian" } }', [(1, 3)]),
    ('scale_param { axis: 1 }', [(1, 3, 5), (3, 5)]),
    ('scale_param { bias_term: true bias_filler { type: "gaussian" } }', [(3, 1, 2), (1,)]),
])
def test_scale_gradient(float64, text, shapes):
    bottom = [Blob(s) for s in shapes]
    for b in bottom:
        b.data.normal_()
    checker().check_gradient(make('type: "Scale" ' + text), bottom, [Blob()])


def test_scale_matches_autograd():
    x0, s0 = torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    dy = torch.randn(2, 3, 4, dtype=torch.float64)
    x = blob_of(x0, torch.float64)
    layer = make('type: "Scale" scale_param { bias_term: true }')
    top = [Blob(dtype=torch.float64)]
    layer.setup([x], top)
    layer.blobs[0].data.copy_(s0)
    layer.blobs[1].data.fill_(0.25)
    layer.Forward([x], top)
    backward(layer, top, [x], dy)
    rx, rs, rb = x0.clone().requires_grad_(), s0.clone().requires_grad_(), torch.full((3,), 0.25,
                                                                                     dtype=torch.float64,
                                                                                     requires_grad=True)
    ref = rx * rs.view(1, 3, 1) + rb.view(1, 3, 1)
    ref.backward(dy)
    assert torch.allclose(top[0].data, ref.detach())
    for mine, theirs in ((x.diff, rx.grad), (layer.blobs[0].diff, rs.grad), (layer.blobs[1].diff, rb.grad)):
        assert torch.allclose(mine, theirs, atol=1e-12)


# --- Bias --------------------------------------------------------------------------------------------------

def test_bias_hand_computed_and_accumulates():
    x = blob_of(torch.zeros(2, 3, 2))
    layer = make('type: "Bias" bias_param { filler { type: "constant" value: 2 } }')
    top = forward(layer, [x])
    assert layer.blobs[0].shape == (3,)
    assert_close(top[0].data, torch.full((2, 3, 2), 2.0))
    backward(layer, top, [x], torch.arange(12.0).view(2, 3, 2))
    assert_close(x.diff, torch.arange(12.0).view(2, 3, 2))
    assert_close(layer.blobs[0].diff, [0 + 1 + 6 + 7, 2 + 3 + 8 + 9, 4 + 5 + 10 + 11])
    backward(layer, top, [x], torch.arange(12.0).view(2, 3, 2))
    assert_close(layer.blobs[0].diff, [28.0, 44.0, 60.0])


def test_bias_second_bottom_in_place():
    x0, b = torch.randn(2, 3, 4), blob_of(torch.randn(4))
    x = blob_of(x0)
    layer = make('type: "Bias" bias_param { axis: -1 }')
    top = forward(layer, [x, b], in_place=True)
    assert_close(top[0].data, x0 + b.data)
    backward(layer, top, [x, b], torch.ones(2, 3, 4))
    assert_close(x.diff, torch.ones(2, 3, 4))
    assert_close(b.diff, [6.0, 6.0, 6.0, 6.0])
    with pytest.raises(LayerError, match="bias shape equal"):
        forward(make('type: "Bias"'), [blob_of(torch.randn(2, 3)), blob_of(torch.randn(2))])


@pytest.mark.parametrize("text, shapes", [
    ('bias_param { filler { type: "gaussian" } }', [(1, 3, 5)]),
    ('bias_param { axis: 0 num_axes: 2 filler { type: "gaussian" } }', [(1, 3, 2)]),
    ('', [(3, 5, 1), (5, 1)]),
])
def test_bias_gradient(float64, text, shapes):
    bottom = [Blob(s) for s in shapes]
    for b in bottom:
        b.data.normal_()
    checker().check_gradient(make('type: "Bias" ' + text), bottom, [Blob()])


# --- MVN ---------------------------------------------------------------------------------------------------

def test_mvn_hand_computed_eps_added_to_std():
    x = blob_of([[[[1.0, 3.0]], [[10.0, 10.0]]]])             # (1, 2, 1, 2): channel stds 1 and 0
    top = forward(make('type: "MVN" mvn_param { eps: 1 }'), [x])
    # Caffe divides by (std + eps) -- not sqrt(var + eps), which would give 1/sqrt(2).
    assert_close(top[0].data, [[[[-0.5, 0.5]], [[0.0, 0.0]]]])
    top = forward(make('type: "MVN" mvn_param { normalize_variance: false }'), [x])
    assert_close(top[0].data, [[[[-1.0, 1.0]], [[0.0, 0.0]]]])
    top = forward(make('type: "MVN" mvn_param { across_channels: true eps: 0 }'), [x])
    values = x.data.view(-1)
    assert_close(top[0].data.view(-1), (values - values.mean()) / values.std(unbiased=False))


def test_mvn_top_is_four_dimensional():
    top = forward(make('type: "MVN"'), [blob_of(torch.randn(2, 3))])
    assert top[0].shape == (2, 3, 1, 1)
    with pytest.raises(LayerError, match="at most 4 axes"):
        forward(make('type: "MVN"'), [blob_of(torch.randn(1, 1, 1, 1, 2))])


@pytest.mark.parametrize("param", ["", "normalize_variance: false", "across_channels: true",
                                   "across_channels: true normalize_variance: false"])
def test_mvn_gradient(float64, param):
    x = Blob((1, 3, 5, 1))
    x.data.normal_()
    checker().check_gradient(make(f'type: "MVN" mvn_param {{ {param} }}'), [x], [Blob()])


def test_mvn_matches_autograd_and_in_place():
    x0, dy = torch.randn(2, 3, 2, 2, dtype=torch.float64), torch.randn(2, 3, 2, 2, dtype=torch.float64)
    rx = x0.clone().requires_grad_()
    centered = rx - rx.mean(dim=(2, 3), keepdim=True)
    ref = centered / (centered.pow(2).mean(dim=(2, 3), keepdim=True).sqrt() + 1e-9)
    ref.backward(dy)
    for in_place in (False, True):
        x = blob_of(x0, torch.float64)
        layer = make('type: "MVN"')
        top = forward(layer, [x], in_place)
        assert torch.allclose(top[0].data, ref.detach(), atol=1e-12)
        backward(layer, top, [x], dy)
        assert torch.allclose(x.diff, rx.grad, atol=1e-7)      # Caffe's formula drops an O(eps) term


# --- golden ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", golden_cases("BatchNorm", "Scale", "Bias", "MVN"))
def test_golden(golden, name):
    report = run_golden_case(golden / "layers", name)
    assert "bottom_diff/x" in report["compared"]
    if name.startswith("batchnorm"):
        assert "param_after_forward/0" in report["compared"]
