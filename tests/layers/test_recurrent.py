"""RNN, LSTM and LSTMUnit: golden Caffe cases, hand-computed values, float64 gradient checks and a torch
autograd oracle for the static-input and expose_hidden variants."""
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


def make_layer(text):
    return create_layer(parse_text(text, caffe_pb2.LayerParameter()))


def recurrent(kind, hidden=2, expose=False, filler='type: "uniform" min: -0.5 max: 0.5'):
    return make_layer(f'name: "L" type: "{kind}" recurrent_param {{ num_output: {hidden} '
                      f'expose_hidden: {"true" if expose else "false"} '
                      f'weight_filler {{ {filler} }} bias_filler {{ {filler} }} }}')


def blob(values, name=None):
    b = Blob(values.shape, name=name)
    b.data = values.to(b.dtype)
    return b


def sequence_bottoms(steps, n, dim, cont=None):
    x = blob(torch.randn(steps, n, dim), "x")
    if cont is None:
        cont = torch.ones(steps, n)
        cont[0] = 0           # every stream starts a sequence at t = 0
    return [x, blob(cont, "cont")]


@pytest.mark.parametrize("name", golden_cases("RNN", "LSTM", "LSTMUnit"))
def test_golden(golden, name):
    report = run_golden_case(golden / "layers", name)
    assert any(k.startswith("bottom_diff/") for k in report["compared"])


# --- setup --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, static, expected", [
    ("RNN", False, [(3, 4), (3,), (3, 3), (3, 3), (3,)]),
    ("RNN", True, [(3, 4), (3,), (3, 5), (3, 3), (3, 3), (3,)]),
    ("LSTM", False, [(12, 4), (12,), (12, 3)]),
    ("LSTM", True, [(12, 4), (12,), (12, 5), (12, 3)]),
])
def test_parameter_blobs_follow_caffe(kind, static, expected):
    layer = recurrent(kind, hidden=3)
    bottom = sequence_bottoms(2, 2, 4) + ([blob(torch.randn(2, 5))] if static else [])
    bottom[0] = blob(torch.randn(2, 2, 2, 2))       # axes 2.. flattened: D = 4
    top = [Blob()]
    layer.setup(bottom, top)
    assert [b.shape for b in layer.blobs] == expected
    assert top[0].shape == (2, 2, 3)


def test_fillers_and_exposed_shapes():
    layer = recurrent("LSTM", hidden=3, expose=True, filler='type: "constant" value: 0.25')
    bottom = sequence_bottoms(4, 2, 5) + [blob(torch.zeros(1, 2, 3)), blob(torch.zeros(1, 2, 3))]
    top = [Blob(), Blob(), Blob()]
    layer.setup(bottom, top)
    assert all(torch.all(b.data == 0.25) for b in layer.blobs)
    assert [t.shape for t in top] == [(4, 2, 3), (1, 2, 3), (1, 2, 3)]


def test_loaded_weights_are_kept_and_checked():
    param = parse_text('name: "L" type: "RNN" recurrent_param { num_output: 2 weight_filler { type: "gaussian" } }',
                       caffe_pb2.LayerParameter())
    shapes = [(2, 3), (2,), (2, 2), (2, 2), (2,)]
    for i, shape in enumerate(shapes):
        Blob(shape).to_proto(param.blobs.add())
        param.blobs[i].data[:] = [0.5 + i] * math.prod(shape)
    layer = create_layer(param)
    layer.setup(sequence_bottoms(2, 1, 3), [Blob()])
    assert [float(b.data.flatten()[0]) for b in layer.blobs] == [0.5, 1.5, 2.5, 3.5, 4.5]

    param.blobs[2].shape.dim[:] = [4]
    with pytest.raises(LayerError, match=r"parameter 2 of shape \(2, 2\)"):
        create_layer(param).setup(sequence_bottoms(2, 1, 3), [Blob()])


def test_validation_errors():
    with pytest.raises(LayerError, match="num_output > 0"):
        make_layer('name: "L" type: "RNN"').setup(sequence_bottoms(2, 1, 3), [Blob()])
    with pytest.raises(LayerError, match=r"cont \(bottom\[1\]\) of shape .*\(2, 1\)"):
        recurrent("LSTM").setup([blob(torch.randn(2, 1, 3)), blob(torch.ones(2, 2))], [Blob()])
    with pytest.raises(LayerError, match="number of top blobs == 3"):
        recurrent("LSTM", expose=True).setup(
            sequence_bottoms(2, 1, 3) + [blob(torch.zeros(1, 1, 2))] * 2, [Blob()])
    layer = recurrent("RNN", expose=True)
    with pytest.raises(LayerError, match=r"initial state h .*\(1, 1, 2\).*\(1, 1, 3\)"):
        layer.setup(sequence_bottoms(2, 1, 3) + [blob(torch.zeros(1, 1, 3))], [Blob(), Blob()])

    layer = recurrent("RNN")
    bottom, top = sequence_bottoms(3, 2, 3), [Blob()]
    layer.setup(bottom, top)
    with pytest.raises(LayerError, match="3 timesteps"):
        layer.Forward(sequence_bottoms(4, 2, 3), top)
    layer.Forward(bottom, top)
    with pytest.raises(LayerError, match="sequence indicators"):
        layer.Backward(top, [True, True], bottom)
    assert not layer.allow_force_backward(1) and layer.allow_force_backward(0)


# --- LSTMUnit -------------------------------------------------------------------------------------------------
def test_lstm_unit_hand_computed():
    layer = make_layer('name: "U" type: "LSTMUnit"')
    c_prev = blob(torch.tensor([[[2.0], [2.0]]]))
    gates = blob(torch.tensor([[[0.0, 0.0, 0.0, math.atanh(0.5)], [0.0, 0.0, 0.0, 0.0]]]))
    cont = blob(torch.tensor([[1.0, 0.0]]))
    top = [Blob(), Blob()]
    layer.setup([c_prev, gates, cont], top)
    layer.Forward([c_prev, gates, cont], top)
    # stream 0: i = f = o = 1/2, g = 1/2 -> c = 1/2 * 2 + 1/4; stream 1: cont 0 forgets, g = 0 -> c = 0
    assert torch.allclose(top[0].data.flatten(), torch.tensor([1.25, 0.0]))
    assert torch.allclose(top[1].data.flatten(), torch.tensor([0.5 * math.tanh(1.25), 0.0]))
    with pytest.raises(LayerError, match="sequence indicators"):
        layer.Backward(top, [True, True, True], [c_prev, gates, cont])


def test_lstm_unit_rejects_bad_gate_width():
    with pytest.raises(LayerError, match=r"4 \* 3 = 12 channels, Actual: 8"):
        make_layer('name: "U" type: "LSTMUnit"').setup(
            [blob(torch.zeros(1, 2, 3)), blob(torch.zeros(1, 2, 8)), blob(torch.ones(1, 2))], [Blob(), Blob()])


@pytest.mark.parametrize("n, cont", [(3, [1.0, 0.0, 1.0]), (1, [0.0]), (1, [1.0])])
def test_lstm_unit_gradient(float64, n, cont):
    layer = make_layer('name: "U" type: "LSTMUnit"')
    bottom = [blob(torch.randn(1, n, 2)), blob(torch.randn(1, n, 8)), blob(torch.tensor([cont]))]
    checker = GradientChecker(stepsize=1e-3, threshold=1e-4)
    top = [Blob(), Blob()]
    layer.setup(bottom, top)
    for i in (0, 1):
        for top_id in (0, 1):
            for index in range(top[top_id].count()):
                checker.check_gradient_single(layer, bottom, top, i, top_id, index)


# --- RNN / LSTM gradients --------------------------------------------------------------------------------------
def check_recurrent_gradient(layer, bottom, top, differentiable):
    checker = GradientChecker(stepsize=1e-3, threshold=1e-4)
    checker.check_gradient(layer, bottom, top, check_bottom=0)     # parameters and x
    for i in differentiable:
        checker.check_gradient_single(layer, bottom, top, i, -1, -1)


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
@pytest.mark.parametrize("steps, n", [(3, 2), (1, 1), (4, 1)])
def test_gradient(float64, kind, steps, n):
    cont = torch.ones(steps, n)
    cont[0] = 0
    if steps > 2:
        cont[2, 0] = 0        # a sequence boundary inside the batch
    layer = recurrent(kind)
    check_recurrent_gradient(layer, sequence_bottoms(steps, n, 3, cont), [Blob()], [])


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_gradient_static_and_exposed(float64, kind):
    states = 2 if kind == "LSTM" else 1
    layer = recurrent(kind, expose=True)
    cont = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    bottom = (sequence_bottoms(3, 2, 3, cont) + [blob(torch.randn(2, 2, 2))]
              + [blob(torch.randn(1, 2, 2)) for _ in range(states)])
    top = [Blob() for _ in range(1 + states)]     # the objective includes hT (and cT): full BPTT
    check_recurrent_gradient(layer, bottom, top, [2] + [3 + j for j in range(states)])


# --- autograd oracle --------------------------------------------------------------------------------------------
def oracle(kind, params, x, cont, xs, state0):
    """The unrolled net of Caffe written with torch autograd ops, step by step."""
    steps, n = x.shape[:2]
    params = list(params)
    w_x, b = params[:2]
    pre = x.reshape(steps, n, -1) @ w_x.t() + b
    rest = params[2:]
    if xs is not None:
        pre = pre + (xs.reshape(n, -1) @ rest[0].t())
        rest = rest[1:]
    outs = []
    if kind == "RNN":
        w_hh, w_ho, b_o = rest
        (h,) = state0
        for t in range(steps):
            h = torch.tanh(pre[t] + (cont[t, :, None] * h) @ w_hh.t())
            outs.append(torch.tanh(h @ w_ho.t() + b_o))
        return torch.stack(outs), (h,)
    (w_hc,) = rest
    h, c = state0
    hidden = h.shape[-1]
    for t in range(steps):
        g = pre[t] + (cont[t, :, None] * h) @ w_hc.t()
        i, f, o = torch.sigmoid(g[:, :3 * hidden]).split(hidden, 1)
        f = f * cont[t, :, None]
        c = f * c + i * torch.tanh(g[:, 3 * hidden:])
        h = o * torch.tanh(c)
        outs.append(h)
    return torch.stack(outs), (h, c)


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
@pytest.mark.parametrize("static, expose", [(True, False), (False, True), (True, True)])
def test_matches_autograd_oracle(float64, kind, static, expose):
    states = 2 if kind == "LSTM" else 1
    steps, n, hidden = 4, 3, 3
    cont = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    if not expose:
        cont[0] = 0
    layer = recurrent(kind, hidden=hidden, expose=expose)
    bottom = sequence_bottoms(steps, n, 2, cont)
    bottom[0] = blob(torch.randn(steps, n, 2, 2))
    if static:
        bottom.append(blob(torch.randn(n, 5)))
    if expose:
        bottom += [blob(torch.randn(1, n, hidden)) for _ in range(states)]
    top = [Blob() for _ in range(1 + states * expose)]
    layer.setup(bottom, top)
    layer.Forward(bottom, top)
    top_diffs = [torch.randn(t.shape, dtype=torch.float64) for t in top]
    for t, d in zip(top, top_diffs):
        t.diff.copy_(d)
    layer.Backward(top, [True, False] + [True] * (len(bottom) - 2), bottom)

    params = [b.data.clone().requires_grad_() for b in layer.blobs]
    x = bottom[0].data.clone().requires_grad_()
    xs = bottom[2].data.clone().requires_grad_() if static else None
    first_state = 3 if static else 2
    state0 = ([bottom[first_state + j].data[0].clone().requires_grad_() for j in range(states)] if expose
              else [torch.zeros(n, hidden, dtype=torch.float64) for _ in range(states)])
    out, final = oracle(kind, params, x, cont.to(torch.float64), xs, state0)
    outputs = [out] + ([s.unsqueeze(0) for s in final] if expose else [])
    for t, expected in zip(top, outputs):
        torch.testing.assert_close(t.data, expected.detach())
    objective = sum((o * d).sum() for o, d in zip(outputs, top_diffs))
    objective.backward()
    for i, p in enumerate(params):
        torch.testing.assert_close(layer.blobs[i].diff, p.grad, msg=lambda m: f"param {i}: {m}")
    torch.testing.assert_close(bottom[0].diff, x.grad)
    if static:
        torch.testing.assert_close(bottom[2].diff, xs.grad)
    if expose:
        for j in range(states):
            torch.testing.assert_close(bottom[first_state + j].diff[0], state0[j].grad)


def test_parameter_diffs_accumulate(float64):
    layer = recurrent("LSTM")
    bottom, top = sequence_bottoms(2, 2, 3), [Blob()]
    layer.setup(bottom, top)
    layer.Forward(bottom, top)
    top[0].diff.copy_(torch.randn(top[0].shape))
    layer.Backward(top, [True, False], bottom)
    once = [b.diff.clone() for b in layer.blobs]
    layer.Backward(top, [True, False], bottom)
    for b, d in zip(layer.blobs, once):
        torch.testing.assert_close(b.diff, 2 * d)


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_state_is_carried_between_forwards(float64, kind):
    """Two Forwards of T steps with cont = 1 at the second's start equal one Forward of 2T steps."""
    layer_long, layer_short = recurrent(kind, hidden=3), recurrent(kind, hidden=3)
    x = torch.randn(6, 2, 4)
    cont = torch.ones(6, 2)
    cont[0] = 0
    long_bottom, long_top = [blob(x), blob(cont)], [Blob()]
    layer_long.setup(long_bottom, long_top)
    layer_long.Forward(long_bottom, long_top)

    first, second = [blob(x[:3]), blob(cont[:3])], [blob(x[3:]), blob(cont[3:])]
    top = [Blob()]
    layer_short.setup(first, top)
    for b_short, b_long in zip(layer_short.blobs, layer_long.blobs):
        b_short.data.copy_(b_long.data)
    layer_short.Forward(first, top)
    torch.testing.assert_close(top[0].data, long_top[0].data[:3])
    layer_short.Forward(second, top)
    torch.testing.assert_close(top[0].data, long_top[0].data[3:])

    # After reset() the second half starts from a zero state, as if cont were 0 at its first step.
    layer_short.reset()
    layer_short.Forward(second, top)
    restarted = top[0].data.clone()
    second[1].data[0] = 0
    layer_short.Forward(second, top)
    torch.testing.assert_close(restarted, top[0].data)
    assert not torch.allclose(restarted, long_top[0].data[3:])
