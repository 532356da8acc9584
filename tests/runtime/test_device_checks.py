"""Checks of device values deferred to where a pass reads its loss (runtime/device_checks.py): on the CPU by
switching the deferred form on, as accelerators run it.  A bad label still raises the loss layer's error,
naming the value, and the solver's step raises it before any weight changes."""
import pytest
import torch

from brewnet.runtime import device_checks
from brewnet.core.net import Net
from brewnet.errors import LayerError
from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text
from brewnet.solvers import get_solver

NET = """
name: "checked"
layer { name: "in" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 4 dim: 5 } shape { dim: 4 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" %(loss)s }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc" %(acc)s }
"""


@pytest.fixture
def deferred_checks(monkeypatch):
    monkeypatch.setattr(device_checks, "DEFER_ON_CPU", True)


def net_param(loss="", acc=""):
    return parse_text(NET % dict(loss=loss, acc=acc), caffe_pb2.NetParameter())


def make_net(labels, **kw):
    torch.manual_seed(0)
    net = Net(net_param(**kw), phase=caffe_pb2.TRAIN)
    net.blobs["data"].data.copy_(torch.linspace(-1, 1, 20).view(4, 5))
    net.blobs["label"].data.copy_(torch.tensor(labels, dtype=torch.float32))
    return net


def test_deferred_form_gives_the_same_numbers(deferred_checks):
    results = []
    for defer in (True, False):
        device_checks.DEFER_ON_CPU = defer
        net = make_net([0, 2, 1, 2])
        loss = net.forward_backward()
        results.append((loss, float(net.blobs["acc"].data), net.blobs["ip"].diff.clone()))
    assert results[0][0] == results[1][0] and results[0][1] == results[1][1]
    assert torch.equal(results[0][2], results[1][2]) and results[0][2].abs().max() > 0


def test_forward_raises_the_loss_layers_error_at_its_end(deferred_checks):
    net = make_net([0, 7, 1, 2])
    with pytest.raises(LayerError, match=r"layer 'loss'.*\[0, 3\).*label value 7 \(bottom 'label"):
        net.forward()
    assert net.runtime.checks.flags == []              # raised once, then cleared
    net.blobs["label"].data.copy_(torch.tensor([0.0, 1, 1, 2]))
    assert net.forward() > 0


def test_forward_loss_leaves_the_check_to_the_caller(deferred_checks):
    net = make_net([0, -1, 1, 2])
    loss = net.forward_loss(check=False)        # no error yet: the labels were clamped for the gathers
    assert torch.isfinite(loss)
    net.backward()
    with pytest.raises(LayerError, match="label value -1"):
        net.check_values()


def test_ignore_label_is_not_an_error_and_accuracy_checks_too(deferred_checks):
    net = make_net([0, 9, 1, 2], loss="loss_param { ignore_label: 9 }", acc="accuracy_param { ignore_label: 9 }")
    assert net.forward() > 0
    net = make_net([0, 5, 1, 2], loss="loss_param { ignore_label: 9 }", acc="accuracy_param { ignore_label: 5 }")
    with pytest.raises(LayerError, match=r"layer 'loss'.*label value 5"):   # the first failed check
        net.forward()
    net = make_net([0, 5, 1, 2], loss="loss_param { ignore_label: 5 }", acc="accuracy_param { ignore_label: 9 }")
    with pytest.raises(LayerError, match=r"layer 'acc'.*label value 5"):
        net.forward()


def test_the_solver_step_raises_before_the_update(deferred_checks):
    sp = caffe_pb2.SolverParameter(base_lr=0.1, momentum=0.9, lr_policy="fixed", display=0, max_iter=10)
    sp.net_param.CopyFrom(net_param())
    solver = get_solver(sp)
    net = solver.net
    net.blobs["data"].data.copy_(torch.linspace(-1, 1, 20).view(4, 5))
    net.blobs["label"].data.copy_(torch.tensor([0.0, 1, 2, 1]))
    solver.step(1)
    before = [b.data.clone() for b in net.learnable_params]
    net.blobs["label"].data.copy_(torch.tensor([0.0, 1, 3, 1]))
    with pytest.raises(LayerError, match="label value 3"):
        solver.step(1)
    assert solver.iter == 1
    assert all(torch.equal(a, b.data) for a, b in zip(before, net.learnable_params))


def test_a_layer_run_on_its_own_checks_at_once(deferred_checks):
    net = make_net([0, 1, 4, 2])
    i = net.layer_index("loss")
    with pytest.raises(LayerError, match="label value 4"):
        net.layers[i].Forward(net.bottom_vecs[i], net.top_vecs[i])
    assert net.runtime.checks.flags == []


def test_the_cpu_checks_at_once_by_default():
    net = make_net([0, 1, 4, 2])
    with pytest.raises(LayerError, match="label value 4"):
        net.forward_loss(check=False)
