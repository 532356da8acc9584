"""pycaffe's solvers through `import caffe`: the book's step(1) training loop equals `caffe train`, and the
calls of Caffe's own python/caffe/test/test_solver.py behave as there."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import caffe

SIMPLE_NET = """name: 'testnet' force_backward: true
layer { type: 'Input' name: 'data' top: 'data' top: 'label'
        input_param { shape { dim: 5 dim: 2 dim: 3 dim: 4 } shape { dim: 5 } } }
layer { type: 'Convolution' name: 'conv' bottom: 'data' top: 'conv'
        convolution_param { num_output: 11 kernel_size: 2 pad: 3
          weight_filler { type: 'gaussian' std: 1 } bias_filler { type: 'constant' value: 2 } }
        param { decay_mult: 1 } param { decay_mult: 0 } }
layer { type: 'InnerProduct' name: 'ip' bottom: 'conv' top: 'ip_blob'
        inner_product_param { num_output: 13
          weight_filler { type: 'gaussian' std: 2.5 } bias_filler { type: 'constant' value: -3 } } }
layer { type: 'SoftmaxWithLoss' name: 'loss' bottom: 'ip_blob' bottom: 'label' top: 'loss' }
"""

SOLVER = """net: '{net}'
test_iter: 2 test_interval: 10 base_lr: 0.01 momentum: {momentum}
weight_decay: 0.0005 lr_policy: 'inv' gamma: 0.0001 power: 0.75
display: 100 max_iter: 10 snapshot_after_train: false random_seed: 3
snapshot_prefix: '{prefix}' {extra}
"""


def write_solver(tmp_path, momentum=0.9, extra=""):
    net = tmp_path / "net.prototxt"
    net.write_text(SIMPLE_NET)
    path = tmp_path / "solver.prototxt"
    path.write_text(SOLVER.format(net=net, momentum=momentum, prefix=tmp_path / "model", extra=extra))
    return str(path)


def fill_inputs(net, seed=0):
    rs = np.random.RandomState(seed)
    net.blobs["data"].data[...] = rs.randn(*net.blobs["data"].shape)
    net.blobs["label"].data[...] = rs.randint(13, size=net.blobs["label"].shape)


@pytest.fixture
def solver(tmp_path):
    solver = caffe.SGDSolver(write_solver(tmp_path))
    for net in [solver.net] + solver.test_nets:
        fill_inputs(net)
    return solver


def test_solve_counts_iterations_and_lowers_the_loss(solver):
    assert solver.iter == 0 and len(solver.test_nets) == 1
    first = float(solver.net.forward()["loss"])
    solver.solve()
    assert solver.iter == 10
    assert float(solver.net.forward()["loss"]) < first


def test_apply_update_writes_through_views(solver):
    net = solver.net
    data = net.layers[1].blobs[0].data          # 'conv' weights, a view kept across the update
    data[...] = 0
    net.layers[1].blobs[0].diff[...] = 1
    solver.apply_update()
    # lr 0.01 at iteration 0; weight decay 0.0005 * 0 adds nothing
    np.testing.assert_allclose(data, -0.01, rtol=1e-6)
    assert solver.iter == 1 and solver.lr == pytest.approx(0.01 * (1 + 0.0001) ** -0.75)


def test_step_matches_hand_computed_sgd(tmp_path):
    """One step without momentum and decay: w <- w - lr * dL/dw, the gradient read back from net.backward."""
    solver = caffe.SGDSolver(write_solver(tmp_path, momentum=0, extra="weight_decay: 0"))
    fill_inputs(solver.net)
    solver.net.forward()
    solver.net.backward()
    grads = {name: [b.diff.copy() for b in blobs] for name, blobs in solver.net.params.items()}
    before = {name: [b.data.copy() for b in blobs] for name, blobs in solver.net.params.items()}
    solver.step(1)
    for name, blobs in solver.net.params.items():
        for b, w0, g in zip(blobs, before[name], grads[name]):
            np.testing.assert_allclose(b.data, w0 - 0.01 * g, rtol=1e-5, atol=1e-7)


def test_callbacks_run_every_iteration_and_may_edit_gradients(tmp_path):
    solver = caffe.SGDSolver(write_solver(tmp_path, momentum=0, extra="weight_decay: 0"))
    fill_inputs(solver.net)
    calls = []
    frozen = solver.net.params["ip"][0].data.copy()
    conv0 = solver.net.params["conv"][0].data.copy()

    def on_gradients_ready():
        calls.append(("grad", solver.iter))
        solver.net.params["ip"][0].diff[...] = 0        # freeze 'ip' weights by editing its gradient
    solver.add_callback(lambda: calls.append(("start", solver.iter)), on_gradients_ready)
    solver.step(3)
    assert calls == [(w, i) for i in range(3) for w in ("start", "grad")]
    np.testing.assert_array_equal(solver.net.params["ip"][0].data, frozen)
    assert np.abs(solver.net.params["conv"][0].data - conv0).max() > 1e-6       # the other layers still learn


def test_net_layer_callbacks_run_inside_solver_steps(tmp_path):
    """BVLC's train.py --timing hangs timers on solver.net.before_forward & co.: a step calls them around every
    layer, forward in order and backward in reverse, and the step still computes the same update."""
    path = write_solver(tmp_path, momentum=0, extra="weight_decay: 0")
    plain, hooked = caffe.SGDSolver(path), caffe.SGDSolver(path)
    fill_inputs(plain.net)
    fill_inputs(hooked.net)
    events = []
    for kind in ("before_forward", "after_forward", "before_backward", "after_backward"):
        getattr(hooked.net, kind)(lambda layer, kind=kind: events.append((kind, layer)))
    # a callback may edit blobs through pycaffe's arrays: this one doubles the ip layer's gradient
    hooked.net.after_backward(lambda layer: layer == 2 and hooked.net.params["ip"][0].diff.__imul__(2))
    plain.net.after_backward(lambda layer: layer == 2 and plain.net.params["ip"][0].diff.__imul__(2))
    for solver in (plain, hooked):
        solver.step(1)
    n = len(hooked.net.layers)
    one_pass = ([(k, i) for i in range(n) for k in ("before_forward", "after_forward")] +
                [(k, i) for i in reversed(range(n)) for k in ("before_backward", "after_backward")])
    assert n == 4 and events == one_pass
    fresh = caffe.SGDSolver(path)
    fill_inputs(fresh.net)
    fresh.step(1)
    for name in ("conv", "ip"):
        np.testing.assert_array_equal(hooked.net.params[name][0].data, plain.net.params[name][0].data)
    # the doubled gradient reached the update: ip moved twice as far as in a run without callbacks, conv alike
    start = caffe.SGDSolver(path).net.params["ip"][0].data
    np.testing.assert_allclose(hooked.net.params["ip"][0].data - start, 2 * (fresh.net.params["ip"][0].data - start),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(hooked.net.params["conv"][0].data, fresh.net.params["conv"][0].data)


def test_snapshot_restore_and_share_weights(tmp_path):
    path = write_solver(tmp_path)
    solver = caffe.SGDSolver(path)
    fill_inputs(solver.net)
    solver.step(2)
    solver.snapshot()
    for name in ("model_iter_2.caffemodel", "model_iter_2.solverstate"):
        assert (tmp_path / name).is_file()
    solver.step(3)
    after5 = solver.net.params["conv"][0].data.copy()
    resumed = caffe.SGDSolver(path)
    fill_inputs(resumed.net)
    resumed.restore(str(tmp_path / "model_iter_2.solverstate"))
    assert resumed.iter == 2
    resumed.step(3)
    np.testing.assert_allclose(resumed.net.params["conv"][0].data, after5, rtol=1e-6, atol=1e-7)
    other = caffe.Net(str(tmp_path / "net.prototxt"), caffe.TEST)
    resumed.share_weights(other)
    resumed.step(1)
    np.testing.assert_array_equal(other.params["conv"][0].data, resumed.net.params["conv"][0].data)


def test_get_solver_follows_the_type_and_nets_outlive_the_solver(tmp_path):
    path = write_solver(tmp_path, extra="type: 'Adam' momentum2: 0.999")
    solver = caffe.get_solver(path)
    assert isinstance(solver, caffe.AdamSolver) and isinstance(solver, caffe.SGDSolver)
    assert solver.type == "Adam"
    for cls, type_name, momentum in ((caffe.NesterovSolver, "Nesterov", 0.9), (caffe.AdaGradSolver, "AdaGrad", 0),
                                     (caffe.RMSPropSolver, "RMSProp", 0), (caffe.AdaDeltaSolver, "AdaDelta", 0.9)):
        assert cls(write_solver(tmp_path, momentum=momentum)).type == type_name
    assert caffe.SGDSolver(path).type == "SGD"         # pycaffe: the class decides, not the file
    nets = [solver.net] + solver.test_nets
    del solver
    for net in nets:
        fill_inputs(net)
        assert np.isfinite(net.forward()["loss"])


# --- the book's training loop against the command line -------------------------------------------------------------
LENET = """name: "LeNet"
layer {{ name: "mnist" type: "Data" top: "data" top: "label" include {{ phase: TRAIN }}
        transform_param {{ scale: 0.00390625 }} data_param {{ source: "{db}" batch_size: 16 backend: LMDB }} }}
layer {{ name: "mnist" type: "Data" top: "data" top: "label" include {{ phase: TEST }}
        transform_param {{ scale: 0.00390625 }} data_param {{ source: "{db}" batch_size: 25 backend: LMDB }} }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1" param {{ lr_mult: 1 }} param {{ lr_mult: 2 }}
        convolution_param {{ num_output: 20 kernel_size: 5 stride: 1 weight_filler {{ type: "xavier" }}
                            bias_filler {{ type: "constant" }} }} }}
layer {{ name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}
layer {{ name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2" param {{ lr_mult: 1 }} param {{ lr_mult: 2 }}
        convolution_param {{ num_output: 50 kernel_size: 5 stride: 1 weight_filler {{ type: "xavier" }}
                            bias_filler {{ type: "constant" }} }} }}
layer {{ name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1" param {{ lr_mult: 1 }} param {{ lr_mult: 2 }}
        inner_product_param {{ num_output: 100 weight_filler {{ type: "xavier" }} bias_filler {{ type: "constant" }} }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }}
layer {{ name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" param {{ lr_mult: 1 }} param {{ lr_mult: 2 }}
        inner_product_param {{ num_output: 10 weight_filler {{ type: "xavier" }} bias_filler {{ type: "constant" }} }} }}
layer {{ name: "accuracy" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy" include {{ phase: TEST }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }}
"""

LENET_SOLVER = """net: "{net}"
test_iter: 2 test_interval: 8
base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005 lr_policy: "inv" gamma: 0.0001 power: 0.75
display: 1 max_iter: 8 snapshot: 0 snapshot_after_train: false random_seed: 1701
snapshot_prefix: "{prefix}" solver_mode: CPU
"""


def test_pycaffe_training_loop_equals_caffe_train(golden, tmp_path):
    net = tmp_path / "lenet.prototxt"
    net.write_text(LENET.format(db=golden / "files" / "mnist1000_lmdb"))
    solver_file = tmp_path / "solver.prototxt"
    solver_file.write_text(LENET_SOLVER.format(net=net, prefix=tmp_path / "lenet"))

    # the command line, in its own process
    run = subprocess.run([sys.executable, "-m", "brewnet.tools.cli", "train", f"-solver={solver_file}"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300,
                         env=dict(os.environ, GLOG_minloglevel="0"))
    assert run.returncode == 0, run.stderr[-3000:]
    cli_losses = [float(v) for v in re.findall(r"Iteration \d+ \(.*\), loss = (\S+)", run.stderr)]
    # the last test (iteration 8) wins; the one at iteration 0 is what made the test net share the weights
    cli_test = dict(re.findall(r"Test net output #\d+: (\w+) = (\S+)", run.stderr))
    assert run.stderr.count("Testing net (#0)") == 2

    # the book's pycaffe loop
    solver = caffe.SGDSolver(str(solver_file))
    losses = []
    for _ in range(8):
        solver.step(1)
        losses.append(float(solver.net.blobs["loss"].data))
    test_net = solver.test_nets[0]
    accuracy = loss = 0.0
    for _ in range(2):
        out = test_net.forward()
        accuracy += float(out["accuracy"]) / 2
        loss += float(out["loss"]) / 2
    for net_ in [solver.net] + solver.test_nets:
        net_.close()

    assert len(cli_losses) == 8
    np.testing.assert_allclose(losses, cli_losses, rtol=2e-5)
    assert losses[-1] < losses[0]
    assert float(cli_test["accuracy"]) == pytest.approx(accuracy, abs=1e-6)
    assert float(cli_test["loss"]) == pytest.approx(loss, rel=2e-5)
