"""The Step loop: testing, display lines in Caffe's words, smoothed loss, actions, NaN, bad definitions."""
import math
import re

import numpy as np
import pytest
import torch

from brewnet.errors import ProtoError, SolverError
from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text
from brewnet.solvers import SolverAction, get_solver

from ._nets import BASE_TEXT, captured_log, golden_workdir, linear_solver

# The golden tiny net with an Accuracy output in TEST, and a loss weight of 2 there.
CLASSIFIER = """
name: "tiny"
layer { name: "data" type: "HDF5Data" top: "data" top: "label"
        hdf5_data_param { source: "data_list.txt" batch_size: 4 } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        inner_product_param { num_output: 5 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy" include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" loss_weight: 2 }
"""


def classifier_solver(extra):
    text = f'base_lr: 0.1 lr_policy: "fixed" momentum: 0.9 random_seed: 3 {extra} net_param {{ {CLASSIFIER} }}'
    return get_solver(parse_text(text, caffe_pb2.SolverParameter()))


def test_display_lines_are_caffes(golden, tmp_path, monkeypatch):
    golden_workdir(golden, tmp_path, monkeypatch)
    solver = classifier_solver("display: 2 max_iter: 4 snapshot_after_train: false")
    with captured_log() as log:
        solver.solve()
    lines = log.lines()
    assert lines[:2] == ["Solving tiny", "Learning Rate Policy: fixed"]
    shown = [l for l in lines if l.startswith("Iteration")]
    assert re.fullmatch(r"Iteration 0 \([-+.\deE]+ iter/s, [-+.\deE]+s/2 iters\), loss = [.\d]+", shown[0])
    assert shown[1] == "Iteration 0, lr = 0.1"
    assert re.fullmatch(r"Iteration 2 \([-+.\deE]+ iter/s, [-+.\deE]+s/2 iters\), loss = [.\d]+", shown[2])
    # the output line: the raw loss blob, then times its weight
    outputs = [l for l in lines if "Train net output" in l]
    value = float(re.search(r"loss = ([.\d]+) \(", outputs[0]).group(1))
    assert re.fullmatch(r"    Train net output #0: loss = [.\d]+ \(\* 2 = [.\d]+ loss\)", outputs[0])
    assert float(re.search(r"= ([.\d]+) loss", outputs[0]).group(1)) == pytest.approx(2 * value, rel=1e-5)
    assert re.fullmatch(r"Iteration 4, loss = [.\d]+", lines[-2]) and lines[-1] == "Optimization Done."


def test_testing_averages_outputs_as_caffe(golden, tmp_path, monkeypatch):
    golden_workdir(golden, tmp_path, monkeypatch)
    solver = classifier_solver("display: 0 max_iter: 2 test_iter: 3 test_interval: 2 test_initialization: true "
                               "test_compute_loss: true snapshot_after_train: false")
    with captured_log() as log:
        solver.solve()
    # the same weights, batch by batch: what the averages must be
    reference = classifier_solver("display: 0 test_iter: 3 test_interval: 2")
    reference.test_nets[0].share_trained_layers_with(solver.net)
    accuracy, loss = [], []
    for _ in range(3):
        reference.test_nets[0].forward()
        accuracy.append(float(reference.test_nets[0].blobs["accuracy"].data))
        loss.append(float(reference.test_nets[0].blobs["loss"].data))
    lines = log.lines()
    assert lines.count("Iteration 0, Testing net (#0)") == 1 and lines.count("Iteration 2, Testing net (#0)") == 1
    last = lines[lines.index("Iteration 2, Testing net (#0)") + 1:]
    assert last[0] == "Test loss: %g" % (2 * np.mean(loss))
    assert last[1] == "    Test net output #0: accuracy = %g" % np.mean(accuracy)
    assert last[2] == "    Test net output #1: loss = %g (* 2 = %g loss)" % (np.mean(loss), 2 * np.mean(loss))


def test_several_test_nets_with_test_state(golden, tmp_path, monkeypatch):
    golden_workdir(golden, tmp_path, monkeypatch)
    net = CLASSIFIER.replace('include { phase: TEST }', 'include { phase: TEST stage: "acc" }')
    text = ('base_lr: 0.1 lr_policy: "fixed" display: 0 test_iter: 1 test_iter: 2 test_interval: 1 '
            'test_state { stage: "acc" } test_state { } net_param { ' + net + ' }')
    solver = get_solver(parse_text(text, caffe_pb2.SolverParameter()))
    assert [n.output_blob_names for n in solver.test_nets] == [["accuracy", "loss"], ["loss"]]
    with captured_log() as log:
        solver.test_all()
    assert "Iteration 0, Testing net (#1)" in log.lines()


def test_test_net_shares_the_train_weights(golden, tmp_path, monkeypatch):
    golden_workdir(golden, tmp_path, monkeypatch)
    solver = classifier_solver("display: 0 test_iter: 1 test_interval: 1")
    solver.step(1)
    solver.test(0)
    train_w = solver.net.layer_by_name("ip1").blobs[0].data
    test_w = solver.test_nets[0].layer_by_name("ip1").blobs[0].data
    assert torch.equal(train_w, test_w) and train_w.data_ptr() == test_w.data_ptr()


def test_smoothed_loss_is_a_running_mean_over_average_loss(float64):
    losses = []
    solver = linear_solver(BASE_TEXT + "base_lr: 0.05 average_loss: 3")
    solver.add_callback(None, lambda: losses.append(float(solver.net.blobs["loss"].data)))
    smoothed = []
    solver.add_callback(None, lambda: smoothed.append(solver.smoothed_loss))
    solver.step(5)
    expected = [np.mean(losses[max(0, i - 2):i + 1]) for i in range(5)]
    np.testing.assert_allclose(smoothed, expected, rtol=1e-6)


def test_action_function_stop_and_snapshot(tmp_path, float64):
    requests = iter([SolverAction.NONE, SolverAction.SNAPSHOT, SolverAction.STOP])
    solver = linear_solver(BASE_TEXT + f'base_lr: 0.05 max_iter: 10 snapshot_prefix: "{tmp_path}/a"')
    solver.set_action_function(lambda: next(requests))
    solver.solve()
    assert solver.iter == 3 and solver.requested_early_exit
    # the snapshot asked for at iteration 2, and the one solve() writes when stopping early (snapshot_after_train)
    assert sorted(p.name for p in tmp_path.glob("*.solverstate")) == ["a_iter_2.solverstate",
                                                                      "a_iter_3.solverstate"]


def test_diverging_training_stops_with_a_clear_error():
    solver = linear_solver(BASE_TEXT + "base_lr: 1e30")       # float32 overflows within a few steps
    with captured_log() as log, pytest.raises(SolverError) as error:
        solver.step(10)
    message = str(error.value)
    assert re.match(r"Iteration \d+: the loss is (nan|inf): layer '(ip|loss)' \(type \w+\) produced a "
                    r"non-finite value in top blob '(p|loss)'", message)
    assert solver.iter < 10 and "Training stopped" in message
    assert re.search(r"^E\d{4} .*non-finite value", log.text, re.M)


def test_nan_parameter_is_reported_with_its_layer(float64):
    solver = linear_solver(BASE_TEXT + "base_lr: 0.1")
    solver.net.learnable_params[0].data[1, 2] = math.inf
    with pytest.raises(SolverError, match=r"Iteration 0: the loss is (nan|inf): layer 'ip' \(type InnerProduct\) "
                                          r"produced a non-finite value in top blob 'p'; its parameter blob\(s\) 0 "
                                          r"already hold NaN/Inf"):
        solver.step(1)


def test_nan_input_is_blamed_on_the_input_layer(float64):
    solver = linear_solver(BASE_TEXT + "base_lr: 0.1")
    solver.net.blobs["x"].data[0, 0] = math.nan
    with pytest.raises(SolverError, match="layer 'x' \\(type Input\\) produced a non-finite value in top blob 'x'"):
        solver.step(1)


def test_missing_net_file_names_field_and_path(tmp_path):
    path = tmp_path / "s.prototxt"
    path.write_text('net: "missing_net.prototxt" base_lr: 0.1 lr_policy: "fixed"')
    with pytest.raises(SolverError, match=r"s.prototxt: net file 'missing_net.prototxt' \(solver field 'net'\) "
                                          "not found"):
        get_solver(str(path))


def test_relative_net_path_found_next_to_the_solver(golden, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)     # the golden net and data are *not* here; the net file is next to the solver
    (tmp_path / "data_list.txt").write_text(str(golden / "solvers" / "data.h5"))
    solver = get_solver(str(golden / "solvers" / "sgd_fixed.solver.prototxt"))
    assert solver.net.name == "tiny"


def test_misspelled_solver_field_names_field_and_line(tmp_path):
    path = tmp_path / "s.prototxt"
    path.write_text('net: "n.prototxt"\nbase_lr: 0.1\nmomentun: 0.9\n')
    with pytest.raises(ProtoError, match=r"s.prototxt:3:1: .*no field named \"momentun\""):
        get_solver(str(path))


def test_missing_solver_file():
    with pytest.raises(SolverError, match="solver file not found: nowhere.prototxt"):
        get_solver("nowhere.prototxt")


@pytest.mark.parametrize("extra, message", [
    ("test_iter: 2", "test_interval must be > 0"),
    ('test_net: "a.prototxt"', "test_iter must be specified for each test network"),
    ("test_iter: 1 test_interval: 1 test_state { } test_state { }", "test_state must be unspecified or"),
    ("snapshot: 10 snapshot_prefix: '/nonexistent/dir/p'", "Cannot write to snapshot prefix"),
])
def test_bad_testing_and_snapshot_settings(extra, message):
    with pytest.raises(SolverError, match=message):
        linear_solver(BASE_TEXT + "base_lr: 0.1 " + extra)


def test_exactly_one_train_net():
    text = 'base_lr: 0.1 lr_policy: "fixed"'
    with pytest.raises(SolverError, match="must specify exactly one train net.*found none"):
        get_solver(parse_text(text, caffe_pb2.SolverParameter()))


def test_debug_info_lines_on_display_iterations(golden, tmp_path, monkeypatch):
    golden_workdir(golden, tmp_path, monkeypatch)
    solver = classifier_solver("display: 2 debug_info: true")
    with captured_log() as log:
        solver.step(2)
    lines = log.lines()
    first, second = lines.index("Iteration 0, lr = 0.1"), [i for i, l in enumerate(lines) if "Iteration 1" in l]
    assert any(l.startswith("    [Forward] Layer ip1, top blob ip1 data: ") for l in lines[:first])
    assert any(l.startswith("    [Backward] Layer ip2, param blob 0 diff: ") for l in lines[:first])
    assert any(l.startswith("    [Backward] All net params (data, diff): L1 norm = (") for l in lines[:first])
    assert not second and not any("[Forward]" in l for l in lines[first:])     # iteration 1 is not displayed
