"""The update rules against hand-written NumPy versions of Caffe's formulas, on a linear layer whose gradient
is known in closed form (float64, so that only the formulas can make a difference)."""
import numpy as np
import pytest
import torch

from brewnet.core import common
from brewnet.errors import SolverError
from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text
from brewnet.solvers import get_solver

from ._nets import BASE_TEXT, X, Y, linear_grads, linear_solver, params_of


def reference(kind, hp, w, g, state, it, lr):
    """One update of one parameter, written from Caffe's sgd_solvers.hpp comments and the papers."""
    m, d = hp.get("momentum", 0.0), hp.get("delta", 1e-8)
    if kind == "SGD":
        state["h"] = m * state.get("h", 0) + lr * g
        return w - state["h"]
    if kind == "Nesterov":
        old = state.get("h", 0)
        state["h"] = m * old + lr * g
        return w - ((1 + m) * state["h"] - m * old)
    if kind == "AdaGrad":
        state["h"] = state.get("h", 0) + g * g
        return w - lr * g / (np.sqrt(state["h"]) + d)
    if kind == "RMSProp":
        r = hp["rms_decay"]
        state["h"] = r * state.get("h", 0) + (1 - r) * g * g
        return w - lr * g / (np.sqrt(state["h"]) + d)
    if kind == "AdaDelta":
        state["h"] = m * state.get("h", 0) + (1 - m) * g * g
        dx = g * np.sqrt((state.get("u", 0) + d) / (state["h"] + d))
        state["u"] = m * state.get("u", 0) + (1 - m) * dx * dx
        return w - lr * dx
    if kind == "Adam":
        b1, b2, t = m, hp["momentum2"], it + 1
        state["m"] = b1 * state.get("m", 0) + (1 - b1) * g
        state["v"] = b2 * state.get("v", 0) + (1 - b2) * g * g
        return w - lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t) * state["m"] / (np.sqrt(state["v"]) + d)
    raise ValueError(kind)


CASES = {
    "SGD": dict(momentum=0.9),
    "Nesterov": dict(momentum=0.9),
    "AdaGrad": dict(delta=1e-6),
    "RMSProp": dict(rms_decay=0.9, delta=1e-6),
    "AdaDelta": dict(momentum=0.95, delta=1e-6),
    "Adam": dict(momentum=0.9, momentum2=0.999, delta=1e-6),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_update_rule_matches_formula(kind, float64):
    hp = {k: float(np.float32(v)) for k, v in CASES[kind].items()}
    text = BASE_TEXT + f'type: "{kind}" base_lr: 0.05 ' + " ".join(f"{k}: {v!r}" for k, v in CASES[kind].items())
    solver = linear_solver(text)
    w, b = params_of(solver.net)
    states = [{}, {}]
    lr = float(np.float32(0.05))
    for it in range(4):
        gw, gb = linear_grads(w, b)
        w = reference(kind, hp, w, gw, states[0], it, lr)
        b = reference(kind, hp, b, gb, states[1], it, lr)
        solver.step(1)
        got_w, got_b = params_of(solver.net)
        np.testing.assert_allclose(got_w, w, rtol=1e-6, atol=1e-12, err_msg=f"{kind} weights, step {it + 1}")
        np.testing.assert_allclose(got_b, b, rtol=1e-6, atol=1e-12, err_msg=f"{kind} bias, step {it + 1}")
    assert solver.iter == 4


def test_l2_weight_decay_and_momentum(float64):
    solver = linear_solver(BASE_TEXT + "base_lr: 0.1 momentum: 0.5 weight_decay: 0.2")
    w, b = params_of(solver.net)
    hw = hb = 0
    for _ in range(3):
        gw, gb = linear_grads(w, b)
        hw = 0.5 * hw + 0.1 * (gw + 0.2 * w)
        hb = 0.5 * hb + 0.1 * (gb + 0.2 * b)
        w, b = w - hw, b - hb
        solver.step(1)
    got_w, got_b = params_of(solver.net)
    np.testing.assert_allclose(got_w, w, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(got_b, b, rtol=1e-6, atol=1e-8)


def test_l1_regularization_adds_decay_times_sign(float64):
    solver = linear_solver(BASE_TEXT + 'base_lr: 0.1 weight_decay: 0.3 regularization_type: "L1"')
    w, b = params_of(solver.net)
    gw, gb = linear_grads(w, b)
    solver.step(1)
    got_w, got_b = params_of(solver.net)
    np.testing.assert_allclose(got_w, w - 0.1 * (gw + 0.3 * np.sign(w)), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(got_b, b - 0.1 * (gb + 0.3 * np.sign(b)), rtol=1e-6, atol=1e-8)


def test_lr_mult_and_decay_mult(float64):
    # weights: lr x 2, decay x 0.5; bias: frozen (lr_mult 0), whatever the decay
    solver = linear_solver(BASE_TEXT + "base_lr: 0.1 weight_decay: 0.2",
                           params="param { lr_mult: 2 decay_mult: 0.5 } param { lr_mult: 0 decay_mult: 1 }")
    w, b = params_of(solver.net)
    gw, _ = linear_grads(w, b)
    solver.step(1)
    got_w, got_b = params_of(solver.net)
    np.testing.assert_allclose(got_w, w - 0.2 * (gw + 0.1 * w), rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(got_b, b)


def test_clip_gradients_scales_by_global_norm(float64):
    solver = linear_solver(BASE_TEXT + "base_lr: 1 clip_gradients: 0.01")
    w, b = params_of(solver.net)
    gw, gb = linear_grads(w, b)
    norm = np.sqrt((gw ** 2).sum() + (gb ** 2).sum())
    assert norm > 0.01
    solver.step(1)
    got_w, got_b = params_of(solver.net)
    np.testing.assert_allclose(got_w, w - gw * 0.01 / norm, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(got_b, b - gb * 0.01 / norm, rtol=1e-6, atol=1e-8)


def test_clip_gradients_leaves_small_gradients_alone(float64):
    solver = linear_solver(BASE_TEXT + "base_lr: 1 clip_gradients: 1000")
    w, b = params_of(solver.net)
    gw, gb = linear_grads(w, b)
    solver.step(1)
    np.testing.assert_allclose(params_of(solver.net)[0], w - gw, rtol=1e-6, atol=1e-8)


def test_iter_size_accumulates_then_normalizes(float64):
    """iter_size 3 over the same batch: the diffs add up to 3 g, Normalize brings them back to g."""
    seen = []
    solver = linear_solver(BASE_TEXT + "base_lr: 0.1 iter_size: 3")
    solver.add_callback(None, lambda: seen.append(solver.net.learnable_params[0].diff.clone().numpy()))
    w, b = params_of(solver.net)
    gw, _ = linear_grads(w, b)
    solver.step(1)
    np.testing.assert_allclose(seen[0], 3 * gw, rtol=1e-6, atol=1e-8)       # accumulated, before ApplyUpdate
    np.testing.assert_allclose(params_of(solver.net)[0], w - 0.1 * gw, rtol=1e-6, atol=1e-8)


def test_shared_parameters_get_the_sum_of_both_gradients(float64):
    net = """
    name: "shared"
    layer { name: "x" type: "Input" top: "x" top: "x2" input_param { shape { dim: 4 dim: 3 } } }
    layer { name: "y" type: "Input" top: "y" input_param { shape { dim: 4 dim: 2 } } }
    layer { name: "a" type: "InnerProduct" bottom: "x" top: "pa" param { name: "W" } param { name: "B" }
            inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } } }
    layer { name: "b" type: "InnerProduct" bottom: "x2" top: "pb" param { name: "W" } param { name: "B" }
            inner_product_param { num_output: 2 } }
    layer { name: "la" type: "EuclideanLoss" bottom: "pa" bottom: "y" top: "la" }
    layer { name: "lb" type: "EuclideanLoss" bottom: "pb" bottom: "y" top: "lb" }
    """
    solver = get_solver(parse_text(BASE_TEXT + "base_lr: 0.1 momentum: 0.9 net_param {" + net + "}",
                                   caffe_pb2.SolverParameter()))
    x2 = np.random.RandomState(5).randn(4, 3)
    solver.net.blobs["x"].data.copy_(torch.from_numpy(X))
    solver.net.blobs["x2"].data.copy_(torch.from_numpy(x2))
    solver.net.blobs["y"].data.copy_(torch.from_numpy(Y))
    assert len(solver.net.learnable_params) == 2 and len(solver.history) == 2
    w, b = params_of(solver.net)
    hw = hb = 0
    for _ in range(2):
        gwa, gba = linear_grads(w, b, X, Y)
        gwb, gbb = linear_grads(w, b, x2, Y)
        hw, hb = 0.9 * hw + 0.1 * (gwa + gwb), 0.9 * hb + 0.1 * (gba + gbb)
        w, b = w - hw, b - hb
        solver.step(1)
    layer_a, layer_b = solver.net.layer_by_name("a"), solver.net.layer_by_name("b")
    np.testing.assert_allclose(layer_a.blobs[0].data.numpy(), w, rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(layer_b.blobs[0].data.numpy(), layer_a.blobs[0].data.numpy())


def test_callbacks_run_in_caffe_order(float64):
    events = []

    class Recorder:
        def on_start(self):
            events.append(("start", solver.iter))

        def on_gradients_ready(self):
            events.append(("ready", solver.iter, bool(solver.net.learnable_params[0].diff.abs().sum() > 0)))

    solver = linear_solver(BASE_TEXT + "base_lr: 0.1")
    solver.add_callback(Recorder())
    solver.step(2)
    assert events == [("start", 0), ("ready", 0, True), ("start", 1), ("ready", 1, True)]


@pytest.mark.parametrize("text, message", [
    ('type: "AdaGrad" base_lr: 0.1 momentum: 0.9', "Momentum cannot be used with AdaGrad"),
    ('type: "RMSProp" base_lr: 0.1 rms_decay: 1.5', "rms_decay should lie between 0 and 1"),
    ('type: "Adamax" base_lr: 0.1', r"Unknown solver type: 'Adamax'.*known types: AdaDelta, AdaGrad, Adam"),
    ('base_lr: 0.1 regularization_type: "L3"', "Unknown regularization type: 'L3'"),
    ('base_lr: 0.1 iter_size: 0', "iter_size should be >= 1"),
    ('base_lr: 0.1 average_loss: 0', "average_loss should be >= 1"),
    ('base_lr: 0.1 solver_type: ADAM type: "Adam"', "cannot both be specified"),
])
def test_bad_solver_definitions(text, message):
    with pytest.raises(SolverError, match=message):
        linear_solver(BASE_TEXT + text)


def test_legacy_solver_type_enum_picks_the_class():
    assert type(linear_solver(BASE_TEXT + "base_lr: 0.1 solver_type: NESTEROV")).__name__ == "NesterovSolver"
    assert type(linear_solver(BASE_TEXT + 'base_lr: 0.1 type: "RMSProp"')).__name__ == "RMSPropSolver"


@pytest.mark.parametrize("text", [
    'momentum: 0.9 weight_decay: 0.2 iter_size: 2',
    'momentum: 0.5 weight_decay: 0.1 regularization_type: "L1"',
    'type: "Adam" momentum: 0.9 momentum2: 0.99 weight_decay: 0.1',
    'type: "Nesterov" momentum: 0.9 weight_decay: 0.1',
])
def test_batched_update_equals_the_per_parameter_loop(float64, text):
    """The torch._foreach_* path (accelerators) computes exactly what Caffe's per-parameter loop (the CPU
    default) does, with per-parameter lr_mult / decay_mult.  Plain SGD on the CPU splits the parameters by
    size: here slices of 3 values, so the 6 weights go slice by slice and the 2 biases batched."""
    params = "param { lr_mult: 2 decay_mult: 0.5 } param { lr_mult: 0.5 decay_mult: 0 }"
    results = []
    for batched in (False, True):
        common.set_random_seed(7)          # the same initial weights for both
        solver = linear_solver(BASE_TEXT + "base_lr: 0.1 " + text, params=params)
        solver.batched_update = batched
        solver.CHUNK = 3
        solver.step(4)
        results.append(params_of(solver.net) + [h.data.clone() for h in solver.history])
    assert linear_solver(BASE_TEXT + "base_lr: 0.1").batched_update is False      # the CPU default: looped
    for looped, batched in zip(*results):
        np.testing.assert_array_equal(np.asarray(batched), np.asarray(looped))
