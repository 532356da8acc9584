"""Reading the loss after the update is issued (runtime/late_read.py), run on the CPU by switching it on as
accelerators run it: the same numbers as Caffe's read-first order, and a failed check or a NaN loss takes the
update back -- parameters, history, iter and current_step -- before its error is raised."""
import math

import numpy as np
import pytest
import torch

from brewnet.runtime import device_checks
from brewnet.errors import LayerError, SolverError
from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text
from brewnet.solvers import get_solver
from brewnet.runtime.late_read import READ_FIRST_VARIABLE, reads_late_by_default

from tests.solvers._nets import BASE_TEXT, linear_solver, params_of

NET = """
name: "checked"
layer { name: "in" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 4 dim: 5 } shape { dim: 4 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        inner_product_param { num_output: 6 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""

SOLVERS = {
    "SGD": 'type: "SGD" momentum: 0.9 weight_decay: 0.01 lr_policy: "multistep" gamma: 0.5 stepvalue: 2 '
           'stepvalue: 4',
    "Adam": 'type: "Adam" momentum: 0.9 momentum2: 0.999 delta: 1e-8 lr_policy: "fixed"',
    "AdaDelta": 'type: "AdaDelta" momentum: 0.95 delta: 1e-6 lr_policy: "fixed" weight_decay: 0.001',
    "Nesterov": 'type: "Nesterov" momentum: 0.9 lr_policy: "step" stepsize: 3 gamma: 0.1',
}

LABELS = [[0, 1, 2, 1], [2, 2, 0, 1], [1, 0, 0, 2]]


def make_solver(kind="SGD", display=0, read_after_update=True):
    text = f'{SOLVERS[kind]} base_lr: 0.1 display: {display} average_loss: 3 max_iter: 100 ' \
           f'net_param {{ {NET} }}'
    torch.manual_seed(0)
    solver = get_solver(parse_text(text, caffe_pb2.SolverParameter()))
    solver.read_after_update = read_after_update
    solver.net.blobs["data"].data.copy_(torch.linspace(-1, 1, 20).view(4, 5))
    return solver


def steps(solver, count):
    """`count` iterations, a different batch of labels each."""
    for _ in range(count):
        labels = LABELS[solver.iter % len(LABELS)]
        solver.net.blobs["label"].data.copy_(torch.tensor(labels, dtype=torch.float32))
        solver.step(1)


def state(solver):
    return ([p.data.clone() for p in solver.net.learnable_params], [h.data.clone() for h in solver.history],
            solver.iter, solver.current_step)


def assert_same_state(a, b):
    assert all(torch.equal(x, y) for x, y in zip(a[0], b[0])), "parameters differ"
    assert all(torch.equal(x, y) for x, y in zip(a[1], b[1])), "histories differ"
    assert a[2:] == b[2:]


@pytest.mark.parametrize("kind", sorted(SOLVERS))
def test_reading_after_the_update_gives_the_read_first_numbers(kind):
    results = []
    for late in (True, False):
        solver = make_solver(kind, display=4, read_after_update=late)
        steps(solver, 7)        # iterations 0 and 4 display (read first), the others read late when asked
        results.append((state(solver), solver.smoothed_loss, list(solver.losses)))
        assert (solver.runtime._undo is not None) == late
    assert_same_state(results[0][0], results[1][0])
    assert results[0][1] == results[1][1] and results[0][2] == results[1][2]
    assert results[0][0][2] == 7 and 0 < results[0][1] < 5
    moved = make_solver(kind)
    assert any(not torch.equal(a, p.data) for a, p in zip(results[0][0][0], moved.net.learnable_params))


def test_display_iterations_read_first():
    solver = make_solver(display=1)
    steps(solver, 3)
    assert solver.runtime._undo is None             # every iteration displays: nothing was read late


def test_a_bad_label_takes_the_update_back(monkeypatch):
    monkeypatch.setattr(device_checks, "DEFER_ON_CPU", True)     # the label check as a device flag
    solver, reference = make_solver(), make_solver(read_after_update=False)
    steps(solver, 2)
    steps(reference, 2)
    before = state(solver)
    solver.net.blobs["label"].data.copy_(torch.tensor([0.0, 1, 3, 1]))
    with pytest.raises(LayerError, match=r"layer 'loss'.*label value 3"):
        solver.step(1)
    # The failed update had moved current_step (multistep: stepvalue 2) and the iteration; both are back.
    assert_same_state(state(solver), before)
    assert before[2:] == (2, 0)
    steps(solver, 3)                        # training goes on as if the bad batch had never come
    steps(reference, 3)
    assert_same_state(state(solver), state(reference))
    assert solver.current_step == 2


def test_a_nan_loss_takes_the_update_back_before_the_culprit_is_named():
    solver = linear_solver(BASE_TEXT + "base_lr: 0.1 momentum: 0.9")
    solver.read_after_update = True
    solver.step(2)
    before, history = params_of(solver.net), [h.data.clone() for h in solver.history]
    solver.net.blobs["x"].data[0, 0] = math.nan
    with pytest.raises(SolverError) as error:
        solver.step(1)
    # Restored before the search: the parameters are finite again, so the message blames the input alone.
    assert str(error.value).startswith("Iteration 2: the loss is nan: layer 'x' (type Input) produced a "
                                       "non-finite value in top blob 'x'. Training stopped")
    assert solver.iter == 2
    assert all(np.array_equal(a, b) for a, b in zip(before, params_of(solver.net)))
    assert all(torch.equal(a, h.data) for a, h in zip(history, solver.history))


def test_the_copies_hold_what_the_last_update_started_from():
    solver = make_solver("Adam")
    steps(solver, 1)
    params, history, _, _ = state(solver)
    steps(solver, 1)
    copies = solver.runtime._undo.copies            # 4 parameters, and Adam's two histories of each
    assert len(copies) == 4 + 2 * 4
    assert all(torch.equal(c, t) for c, t in zip(copies, params + history))
    assert not torch.equal(copies[0], solver.net.learnable_params[0].data)


def test_accelerators_read_late_unless_told_to_read_first(monkeypatch):
    monkeypatch.delenv(READ_FIRST_VARIABLE, raising=False)
    assert reads_late_by_default("cuda:0") and not reads_late_by_default("cpu")
    solver = make_solver(read_after_update=None)       # CPU, or a GPU under BREWNET_TEST_MODE=gpu
    assert solver.read_after_update is (solver.net.device.type == "cuda")
    monkeypatch.setenv(READ_FIRST_VARIABLE, "1")
    assert not reads_late_by_default(torch.device("cuda", 1))
