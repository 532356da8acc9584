"""brewnet's proximal L1 step (SolverParameter.proximal_l1, brewnet/solvers/proximal.py) against NumPy: the
soft threshold after the update, exact zeros where Caffe's subgradient leaves small values."""
import numpy as np
import pytest
import torch

from brewnet.errors import SolverError
from brewnet.solvers import proximal

from ._nets import BASE_TEXT, linear_grads, linear_solver, params_of

MULTS = 'param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }'


def soft_threshold(w, t):
    return np.sign(w) * np.maximum(np.abs(w) - t, 0)


def test_shrink_gives_exact_zeros_and_the_float32_reference():
    w = np.array([0.3, -0.05, 0.1, -0.2, 0.0999, -0.1, 0.0, 1e-8], dtype=np.float32)
    t = np.float32(0.1)
    tensor = torch.from_numpy(w.copy())
    proximal.shrink([tensor], float(t))
    out = tensor.numpy()
    np.testing.assert_array_equal(out, w - np.clip(w, -t, t))           # bit for bit, float32
    np.testing.assert_allclose(out, [0.2, 0, 0, -0.1, 0, 0, 0, 0], atol=1e-7)
    zeros = out[[1, 2, 4, 5, 6, 7]]
    assert (zeros == 0).all() and not np.signbit(zeros).any()           # exact +0, never -0


@pytest.mark.parametrize("batched", [True, False])
def test_sgd_with_proximal_l1_is_ista(float64, batched):
    """Plain SGD + proximal_l1 is the proximal gradient method: w = S_t(w - lr * grad), t = lr * decay, with
    decay_mult 0 leaving the bias unshrunk and lr_mult 2 doubling its step."""
    solver = linear_solver(BASE_TEXT + 'base_lr: 0.2 weight_decay: 0.5 regularization_type: "L1" '
                                       'proximal_l1: true', MULTS)
    lr, decay = float(np.float32(0.2)), 0.5             # SolverParameter's rates are float fields
    solver.batched_update = batched
    w, b = params_of(solver.net)
    for _ in range(5):
        gw, gb = linear_grads(w, b)
        w = soft_threshold(w - lr * gw, lr * decay)
        b = b - 2 * lr * gb
        solver.step(1)
        got_w, got_b = params_of(solver.net)
        np.testing.assert_allclose(got_w, w, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(got_b, b, rtol=1e-12)
        assert np.array_equal(got_w == 0, w == 0)
    assert (w == 0).sum() >= 2          # the case does reach exact zeros


def test_subgradient_l1_leaves_no_exact_zeros_where_proximal_does(float64):
    def run(extra):
        solver = linear_solver(BASE_TEXT + f'base_lr: 0.2 weight_decay: 0.5 regularization_type: "L1" {extra}')
        solver.step(40)
        return params_of(solver.net)[0]
    caffe_l1, prox = run(""), run("proximal_l1: true")
    assert (caffe_l1 == 0).sum() == 0 and (prox == 0).sum() >= 2
    small = prox == 0
    assert np.abs(caffe_l1[small]).max() <= 0.2 * 0.5      # Caffe's L1 hops across 0 within one step's lr*decay


def test_chunked_update_thresholds_like_the_batched_one():
    text = BASE_TEXT + 'type: "SGD" momentum: 0.9 base_lr: 0.1 weight_decay: 0.3 regularization_type: "L1" ' \
                       'proximal_l1: true'
    results = []
    for batched, chunk in ((True, 1 << 18), (None, 2)):
        torch.manual_seed(3)
        solver = linear_solver(text, MULTS)
        solver.batched_update, solver.CHUNK = batched, chunk
        solver.step(6)
        results.append(params_of(solver.net))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"])
def test_other_rules_threshold_after_their_own_step(kind):
    """For the other rules the data step is the rule's, then the same threshold lr * decay."""
    momentum = "" if kind in ("AdaGrad", "RMSProp") else "momentum: 0.9 "
    text = BASE_TEXT + f'type: "{kind}" base_lr: 0.1 {momentum}weight_decay: 0.3 regularization_type: "L1" '
    torch.manual_seed(4)
    plain = linear_solver(text)          # weight_decay's L1 term would differ: compare with decay_mult 0
    torch.manual_seed(4)
    prox = linear_solver(text + 'proximal_l1: true')
    for solver in (plain, prox):
        solver.net.params_weight_decay[:] = [0.0] * len(solver.net.params_weight_decay)
    plain.step(1)
    prox.net.params_weight_decay[:] = [1.0, 0.0]
    prox.step(1)
    w_plain, b_plain = params_of(plain.net)
    w_prox, b_prox = params_of(prox.net)
    t = np.float32(0.1) * np.float32(0.3)
    np.testing.assert_array_equal(w_prox, w_plain - np.clip(w_plain, -t, t))
    np.testing.assert_array_equal(b_prox, b_plain)


def test_proximal_l1_needs_l1_regularization():
    with pytest.raises(SolverError, match=r"proximal_l1 \(brewnet's solver field\).*regularization_type is 'L2'"):
        linear_solver(BASE_TEXT + 'base_lr: 0.1 weight_decay: 0.1 proximal_l1: true')
