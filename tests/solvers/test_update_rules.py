"""The update rules against hand-written NumPy versions of Caffe's formulas, on a linear layer whose gradient
is known in closed form (float64, so that only the formulas can make a difference)."""
import numpy as np
import pytest
import torch

from brewnet.core import common
from brewnet.errors import SolverError
from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text
from brewnet.solvers import get_solver, update_pipeline

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
    solver.add_callback(None, lambda: seen.append(solver.net.learnable_params[0].diff.cpu().numpy().copy()))
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
    np.testing.assert_allclose(layer_a.blobs[0].data.cpu().numpy(), w, rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(layer_b.blobs[0].data.cpu().numpy(), layer_a.blobs[0].data.cpu().numpy())


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


# Each rule is written once over lists of tensors; update_pipeline cuts the parameters into Parts three ways.
# The linear net's weights (6 values) go in slices of CHUNK = 3, its biases (2 values) batched.
WAYS = {
    "per_parameter": dict(batched_update=False),
    "batched": dict(batched_update=True),
    "chunked": dict(batched_update=None, CHUNK=3),
}
GROUPS = "param { lr_mult: 2 decay_mult: 0.5 } param { lr_mult: 0.5 decay_mult: 0 }"
# Per rule: weight decay with iter_size 2 or L1 under lr_mult / decay_mult groups; and the plain rule (one
# group of all parameters).
GROUPED_CASES = [(kind, extra, GROUPS) for kind, extra in sorted({
    "SGD": "weight_decay: 0.2 iter_size: 2", "Nesterov": 'weight_decay: 0.1 regularization_type: "L1"',
    "AdaGrad": "weight_decay: 0.1 iter_size: 2", "RMSProp": 'weight_decay: 0.1 regularization_type: "L1"',
    "AdaDelta": "weight_decay: 0.1 iter_size: 2",
    "Adam": 'weight_decay: 0.1 regularization_type: "L1" iter_size: 2',
}.items())]
WAY_CASES = GROUPED_CASES + [(kind, "", "") for kind in sorted(CASES)]


def case_id(case):
    kind, extra, params = case
    return "-".join([kind] + [name for name, here in (("L1", "L1" in extra), ("iter_size2", "iter_size" in extra),
                                                     ("groups", params)) if here])


def solver_text(kind, extra):
    return (BASE_TEXT + f'type: "{kind}" base_lr: 0.1 ' + extra + " "
            + " ".join(f"{k}: {v!r}" for k, v in CASES[kind].items()))


def trained(kind, extra, params, way, steps=4):
    """Parameters and history blobs after `steps` steps from the same initial weights, iterated `way`."""
    common.set_random_seed(7)
    solver = linear_solver(solver_text(kind, extra), params=params)
    for name, value in WAYS[way].items():
        setattr(solver, name, value)
    solver.step(steps)
    return params_of(solver.net) + [h.data.cpu().numpy().copy() for h in solver.history]


@pytest.mark.parametrize("kind, extra, params", WAY_CASES, ids=[case_id(c) for c in WAY_CASES])
def test_batched_update_equals_the_per_parameter_loop(float64, kind, extra, params):
    """The three ways of iterating (Caffe's loop, all batched as on an accelerator, slices of CHUNK values as
    large parameters on the CPU) compute exactly the same numbers."""
    looped = trained(kind, extra, params, "per_parameter")
    for way in ("batched", "chunked"):
        for got, expected in zip(trained(kind, extra, params, way), looped, strict=True):
            np.testing.assert_array_equal(got, expected, err_msg=f"{kind} {extra!r}, {way}")


def test_the_cpu_default_batches_small_parameters_and_slices_large_ones():
    solver = linear_solver(BASE_TEXT + "base_lr: 0.1")
    assert solver.batched_update is None and not update_pipeline._on_accelerator(solver.net.device)
    solver.CHUNK = 3
    parts = list(update_pipeline.parts(solver))
    assert [(part.ids, [tuple(w.shape) for w in part.weights]) for part in parts] == [
        ((1,), [(2,)]), ((0,), [(3,)]), ((0,), [(3,)])]        # the bias batched, the 2x3 weights in 2 slices
    solver.batched_update = False
    assert [part.ids for part in update_pipeline.parts(solver)] == [(0,), (1,)]
    solver.batched_update = True
    assert [part.ids for part in update_pipeline.parts(solver)] == [(0, 1)]


# --- the numbers of the rules before they were written over lists: Caffe's loop as single-tensor ops -----------
def _sgd(F, p, g, hs, lr, it):
    (h,) = hs
    h.mul_(float(F(p.momentum))).add_(g, alpha=lr)
    g.copy_(h)


def _nesterov(F, p, g, hs, lr, it):
    (h,) = hs
    momentum = F(p.momentum)
    previous = h.clone()
    h.mul_(float(momentum)).add_(g, alpha=lr)
    g.copy_(previous.mul_(float(-momentum)).add_(h, alpha=float(F(1) + momentum)))


def _adagrad(F, p, g, hs, lr, it):
    (h,) = hs
    h.add_(g * g)
    g.copy_((g / h.sqrt().add_(p.delta)).mul_(lr))


def _rmsprop(F, p, g, hs, lr, it):
    (h,) = hs
    decay = F(p.rms_decay)
    h.mul_(float(decay)).add_(g * g, alpha=float(F(1) - decay))
    g.copy_((g / h.sqrt().add_(p.delta)).mul_(lr))


def _adadelta(F, p, g, hs, lr, it):
    h, u = hs
    momentum, delta = F(p.momentum), float(F(p.delta))
    h.mul_(float(momentum)).add_(g * g, alpha=float(F(1) - momentum))
    g.mul_(((u + delta) / (h + delta)).sqrt_())
    u.mul_(float(momentum)).add_(g * g, alpha=float(F(1) - momentum))
    g.mul_(lr)


def _adam(F, p, g, hs, lr, it):
    m, v = hs
    beta1, beta2, t = F(p.momentum), F(p.momentum2), it + 1
    correction = np.sqrt(F(1) - np.power(beta2, F(t))) / (F(1) - np.power(beta1, F(t)))
    m.mul_(float(beta1)).add_(g, alpha=float(F(1) - beta1))
    v.mul_(float(beta2)).add_(g * g, alpha=float(F(1) - beta2))
    update = m / v.sqrt().add_(float(F(p.delta)))
    g.copy_(update.mul_(float(F(lr) * F(correction))))


PER_PARAMETER_RULES = dict(SGD=_sgd, Nesterov=_nesterov, AdaGrad=_adagrad, RMSProp=_rmsprop, AdaDelta=_adadelta,
                           Adam=_adam)


def trained_by_the_loop(kind, extra, params, steps=4):
    """`steps` steps of the solver's nets and learning rate, updated by Caffe's loop written as single-tensor
    torch ops (normalize, regularize, the rule, w -= g; each scalar rounded in the blobs' precision F)."""
    common.set_random_seed(7)
    solver = linear_solver(solver_text(kind, extra), params=params)
    F, p, net = solver.F, solver.param, solver.net
    n = len(net.learnable_params)
    for it in range(steps):
        net.clear_param_diffs()
        for _ in range(p.iter_size):
            solver.forward_backward()
        rate = solver.get_learning_rate()
        for i, param in enumerate(net.learnable_params):
            w, g = param.data, param.diff
            if p.iter_size != 1:
                g.mul_(float(F(1) / F(p.iter_size)))
            decay = float(F(p.weight_decay) * F(net.params_weight_decay[i]))
            if decay:
                g.add_(w if p.regularization_type == "L2" else torch.sign(w), alpha=decay)
            lr = float(F(rate) * F(net.params_lr[i]))
            histories = [solver.history[k * n + i].data for k in range(solver.history_per_param)]
            PER_PARAMETER_RULES[kind](F, p, g, histories, lr, it)
            w.sub_(g)
    return params_of(net) + [h.data.cpu().numpy().copy() for h in solver.history]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("way", sorted(WAYS))
@pytest.mark.parametrize("kind, extra, params", GROUPED_CASES, ids=[case_id(c) for c in GROUPED_CASES])
def test_every_way_gives_the_numbers_of_the_per_parameter_formulas(kind, extra, params, way, dtype):
    common.set_default_dtype(dtype)
    try:
        expected = trained_by_the_loop(kind, extra, params)
        got = trained(kind, extra, params, way)
    finally:
        common.set_default_dtype(torch.float32)
    assert got[0].dtype == torch.empty(0, dtype=dtype).numpy().dtype
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b, err_msg=f"{kind} {extra!r}, {way}")
