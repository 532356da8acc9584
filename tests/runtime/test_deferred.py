"""Gathered blob updates (runtime/deferred.py): the same numbers as applying them one by one, in order."""
import pytest
import torch

from brewnet.runtime.net_runtime import NetRuntime
from brewnet.runtime import deferred
from brewnet.core.blob import Blob
from brewnet.core.net import Net
from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text


def sequential(targets, steps):
    """The reference: each (factor, values) step applied at once, scale then add."""
    out = [t.clone() for t in targets]
    for factor, values in steps:
        for o, v in zip(out, values):
            if factor is not None:
                o.mul_(factor)
            o.add_(v)
    return out


def test_outside_a_scope_updates_apply_at_once():
    a = torch.ones(3)
    deferred.scale_add([a], 0.5, [torch.full((3,), 2.0)])
    assert a.tolist() == [2.5, 2.5, 2.5]
    blob = Blob((3,))
    blob.diff.fill_(1.0)
    deferred.add_to_diffs([blob], [torch.ones(3)])
    assert blob.diff.tolist() == [2.0, 2.0, 2.0]


def test_a_cleared_diff_takes_the_gradient_itself():
    blob = Blob((2, 3))
    blob.diff.fill_(7.0)
    assert blob.release_diff()                  # what Net.clear_param_diffs does
    assert blob.diff.abs().sum() == 0           # reads as zeros...
    assert blob.release_diff()
    grad = torch.arange(6.0)
    blob.accumulate_diff(grad)                  # ... and the first gradient becomes the diff: no kernel
    assert blob.diff.data_ptr() == grad.data_ptr() and blob.diff.shape == (2, 3)
    blob.accumulate_diff(torch.ones(6))
    assert blob.diff.view(-1).tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


def test_a_scope_applies_at_its_end_with_the_one_by_one_numbers():
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(5, generator=g) * 1e4 for _ in range(2))
    a0 = a.clone()
    steps = [(0.999, [torch.randn(5, generator=g)] * 2), (None, [torch.randn(5, generator=g) * 1e-3] * 2)]
    expected = sequential([a, b], steps)
    with deferred.gathered():
        deferred.scale_add([a, b], *steps[0])
        assert a.equal(a0)                                    # waits for the end of the scope
        deferred.scale_add([a, b], None, steps[1][1])         # the same tensors again: the first goes first
        assert a.equal(sequential([a0], steps[:1])[0])
    for got, want in zip((a, b), expected):
        assert torch.equal(got, want)


@pytest.fixture
def gathering(monkeypatch):
    """Gradients gathered on the CPU too, as accelerators gather them."""
    monkeypatch.setattr(deferred, "GATHER_CPU_GRADIENTS", True)


def test_gradients_of_one_blob_twice_in_a_pass_add_in_order(gathering):
    # Shared weights: two layers add into one diff.  The first takes the cleared diff, the second adds.
    grads = [torch.tensor([1e8, 1.0]), torch.tensor([-1e8, 1.0]), torch.tensor([0.5, 0.5])]
    blob = Blob((2,))
    blob.release_diff()
    with deferred.gathered():
        for grad in grads:
            deferred.add_to_diffs([blob], [grad.clone()])
    assert blob.diff.tolist() == ((grads[0] + grads[1]) + grads[2]).tolist()


def test_cpu_gradients_are_added_at_once():
    blob = Blob((3,))
    blob.diff.fill_(1.0)
    with deferred.gathered():
        deferred.add_to_diffs([blob], [torch.full((3,), 2.0)])
        assert blob.diff.tolist() == [3.0, 3.0, 3.0]          # at once, in Caffe's order
        cleared = Blob((2,))
        grad = torch.ones(2)
        deferred.add_to_diffs([cleared], [grad])
        assert cleared.diff.data_ptr() == grad.data_ptr()     # a cleared diff takes the gradient, no op


def test_gathered_gradients_wait_for_the_end_of_the_scope(gathering):
    blob = Blob((3,))
    blob.diff.fill_(1.0)
    with deferred.gathered():
        deferred.add_to_diffs([blob], [torch.full((3,), 2.0)])
        assert blob.diff.tolist() == [1.0, 1.0, 1.0]          # pending
        small = Blob((3,))
        deferred.add_to_diffs([small], [torch.ones(3)])
        assert small._diff is None
    assert blob.diff.tolist() == [3.0, 3.0, 3.0] and small.diff.tolist() == [1.0, 1.0, 1.0]


def test_an_error_inside_still_applies_what_the_layers_did():
    a = torch.zeros(2)
    with pytest.raises(RuntimeError, match="boom"):
        with deferred.gathered():
            deferred.scale_add([a], 1.0, [torch.ones(2)])
            raise RuntimeError("boom")
    assert a.tolist() == [1.0, 1.0]


SHARED_BN = """
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 4 dim: 3 dim: 2 dim: 2 } } }
layer { name: "bn1" type: "BatchNorm" bottom: "x" top: "y1"
        param { name: "m" lr_mult: 0 } param { name: "v" lr_mult: 0 } param { name: "s" lr_mult: 0 }
        batch_norm_param { moving_average_fraction: 0.9 } }
layer { name: "bn2" type: "BatchNorm" bottom: "y1" top: "y2"
        param { name: "m" lr_mult: 0 } param { name: "v" lr_mult: 0 } param { name: "s" lr_mult: 0 }
        batch_norm_param { moving_average_fraction: 0.9 } }
"""


def test_batchnorms_sharing_statistics_update_them_in_turn():
    # Two BatchNorm layers share their statistics blobs: within one Net pass the second layer's update must
    # see the first's, as it does layer by layer.
    results = []
    for gathered in (True, False):
        net = Net(parse_text(SHARED_BN, caffe_pb2.NetParameter()), phase=caffe_pb2.TRAIN)
        net.blobs["x"].data.copy_(torch.arange(48.0).view(4, 3, 2, 2).sin())
        if gathered:
            net.forward()
        else:
            for i, layer in enumerate(net.layers):
                layer.forward_loss(net.bottom_vecs[i], net.top_vecs[i])
        results.append([b.data.clone() for b in net.layer_by_name("bn1").blobs])
    assert net.layer_by_name("bn2").blobs[2].data.item() == pytest.approx(1.9)      # s = 0.9 * (0.9 * 0 + 1) + 1
    for got, want in zip(*results):
        assert torch.equal(got, want)


CONV_NET = """
force_backward: true
layer { name: "in" type: "Input" top: "x" top: "label"
        input_param { shape { dim: 4 dim: 2 dim: 5 dim: 5 } shape { dim: 4 } } }
layer { name: "conv" type: "Convolution" bottom: "x" top: "y"
        convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "bn" type: "BatchNorm" bottom: "y" top: "y" }
layer { name: "sc" type: "Scale" bottom: "y" top: "y" scale_param { bias_term: true } }
layer { name: "ip" type: "InnerProduct" bottom: "y" top: "z"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "z" bottom: "label" top: "loss" }
"""


def conv_net(lazy):
    torch.manual_seed(0)
    net = Net(parse_text(CONV_NET, caffe_pb2.NetParameter()), phase=caffe_pb2.TRAIN)
    net.runtime.lazy_clear = lazy
    net.blobs["x"].data.copy_(torch.randn(4, 2, 5, 5, generator=torch.Generator().manual_seed(1)))
    net.blobs["label"].data.copy_(torch.tensor([0.0, 1, 2, 1]))
    return net


@pytest.mark.parametrize("gather", [False, True], ids=["cpu", "gathered"])
def test_clearing_drops_the_diffs_nothing_else_holds_and_gives_the_same_gradients(gather, monkeypatch):
    monkeypatch.setattr(deferred, "GATHER_CPU_GRADIENTS", gather)
    results = []
    for lazy in (True, False):
        net = conv_net(lazy)
        bias = net.layer_by_name("sc").blobs[1]          # (conv's own bias has gradient 0 before a BatchNorm)
        held = bias.diff.numpy()                        # a pycaffe-style array on one diff
        grads = []
        for _ in range(2):                              # two iterations: clear, forward, backward
            net.clear_param_diffs()
            weight = net.layer_by_name("conv").blobs[0]
            assert (weight._diff is None) is lazy       # dropped, or zeroed in place
            assert not held.any()                       # the held diff is zeroed where the array sees it
            net.forward()
            net.backward()
            assert held.any() and held.tolist() == bias.diff.tolist()
            grads.append([b.diff.clone() for b in net.learnable_params])
        results.append(grads)
    for lazy_grads, eager_grads in zip(*results):
        for a, b in zip(lazy_grads, eager_grads):
            assert torch.equal(a, b)


def test_on_the_cpu_large_diffs_are_zeroed_in_place(monkeypatch):
    # glibc maps big blocks afresh on every allocation: re-faulting them each iteration costs more than
    # zeroing, so diffs from LAZY_CLEAR_CPU_LIMIT values up keep their memory.
    monkeypatch.setattr(NetRuntime, "LAZY_CLEAR_CPU_LIMIT", 10)
    net = conv_net(True)
    net.forward()
    net.backward()
    conv = net.layer_by_name("conv")
    weight, bias = conv.blobs                       # 3 * 2 * 3 * 3 = 54 values; 3 values
    memory = weight.diff.data_ptr()
    net.clear_param_diffs()
    assert weight.diff.data_ptr() == memory and not weight.diff.any()
    assert bias._diff is None
