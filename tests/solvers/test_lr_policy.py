"""Learning-rate policies: Caffe's formulas at chosen iterations, and the fields each policy requires."""
import math

import pytest

from brewnet.errors import SolverError
from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text
from brewnet.solvers import lr_policy


def solver_param(text):
    return parse_text(text, caffe_pb2.SolverParameter())


def rates(param, iters):
    out, step = [], 0
    for it in iters:
        rate, step = lr_policy.learning_rate(param, it, step)
        out.append(rate)
    return out


@pytest.mark.parametrize("text, formula", [
    ('lr_policy: "fixed" base_lr: 0.1', lambda it: 0.1),
    ('lr_policy: "step" base_lr: 0.1 gamma: 0.5 stepsize: 4', lambda it: 0.1 * 0.5 ** (it // 4)),
    ('lr_policy: "exp" base_lr: 0.1 gamma: 0.9', lambda it: 0.1 * 0.9 ** it),
    ('lr_policy: "inv" base_lr: 0.01 gamma: 0.0001 power: 0.75', lambda it: 0.01 * (1 + 1e-4 * it) ** -0.75),
    ('lr_policy: "poly" base_lr: 0.1 power: 2 max_iter: 12', lambda it: 0.1 * (1 - it / 12) ** 2),
    ('lr_policy: "sigmoid" base_lr: 0.1 gamma: 0.5 stepsize: 6',
     lambda it: 0.1 / (1 + math.exp(-0.5 * (it - 6)))),
])
def test_policy_formula(text, formula):
    param = solver_param(text)
    lr_policy.validate(param)
    iters = list(range(13))
    assert rates(param, iters) == pytest.approx([formula(it) for it in iters], rel=1e-6)


def test_lenet_inv_rate_matches_caffe_log():
    # lenet_mnist10k/train.log: "Iteration 100, lr = 0.00992565", "Iteration 9900, lr = 0.00596843"
    param = solver_param('lr_policy: "inv" base_lr: 0.01 gamma: 0.0001 power: 0.75')
    assert "%g" % lr_policy.learning_rate(param, 100, 0)[0] == "0.00992565"
    assert "%g" % lr_policy.learning_rate(param, 9900, 0)[0] == "0.00596843"


def test_multistep_advances_current_step_once_per_stepvalue():
    param = solver_param('lr_policy: "multistep" base_lr: 1 gamma: 0.1 stepvalue: 3 stepvalue: 8')
    step, seen = 0, []
    for it in range(12):
        rate, step = lr_policy.learning_rate(param, it, step)
        seen.append((round(rate, 7), step))
    assert seen[:3] == [(1.0, 0)] * 3
    assert seen[3:8] == [(0.1, 1)] * 5
    assert seen[8:] == [(0.01, 2)] * 4


def test_step_sets_current_step_from_iteration():
    param = solver_param('lr_policy: "step" base_lr: 1 gamma: 0.5 stepsize: 4')
    assert lr_policy.learning_rate(param, 9, 0) == (0.25, 2)


@pytest.mark.parametrize("text, field", [
    ('lr_policy: "step" base_lr: 0.1 gamma: 0.5', "stepsize"),
    ('lr_policy: "step" base_lr: 0.1 stepsize: 3', "gamma"),
    ('lr_policy: "exp" base_lr: 0.1', "gamma"),
    ('lr_policy: "inv" base_lr: 0.1 gamma: 0.1', "power"),
    ('lr_policy: "multistep" base_lr: 0.1 gamma: 0.1', "stepvalue"),
    ('lr_policy: "poly" base_lr: 0.1 max_iter: 10', "power"),
    ('lr_policy: "sigmoid" base_lr: 0.1 gamma: 0.1', "stepsize"),
])
def test_missing_required_field_is_named(text, field):
    with pytest.raises(SolverError, match=f"requires the solver field '{field}'"):
        lr_policy.validate(solver_param(text), "s.prototxt")


def test_unknown_policy_lists_known_ones():
    with pytest.raises(SolverError, match=r"Unknown learning rate policy: 'cosine'.*fixed, inv, multistep"):
        lr_policy.validate(solver_param('lr_policy: "cosine" base_lr: 0.1'))


def test_bad_values():
    with pytest.raises(SolverError, match="stepsize > 0, Actual: 0"):
        lr_policy.validate(solver_param('lr_policy: "step" base_lr: 0.1 gamma: 0.1 stepsize: 0'))
    with pytest.raises(SolverError, match="gamma >= 0, Actual: -0.5"):
        lr_policy.validate(solver_param('lr_policy: "exp" base_lr: 0.1 gamma: -0.5'))
    with pytest.raises(SolverError, match="lr_policy is not set"):
        lr_policy.validate(solver_param('base_lr: 0.1'))
