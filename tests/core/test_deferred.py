"""Gathered blob updates (core/deferred.py): the same numbers as applying them one by one, in order."""
import pytest
import torch

from brewnet.core import deferred
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
    deferred.add([a], [torch.ones(3)])
    assert a.tolist() == [3.5, 3.5, 3.5]


def test_a_scope_applies_at_its_end_with_the_one_by_one_numbers():
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(5, generator=g) * 1e4 for _ in range(3))
    a0, c0 = a.clone(), c.clone()
    steps = [(0.999, [torch.randn(5, generator=g)] * 2), (None, [torch.randn(5, generator=g) * 1e-3] * 2)]
    expected = sequential([a, b], steps) + [c + steps[1][1][0]]
    with deferred.gathered():
        deferred.scale_add([a, b], *steps[0])
        deferred.add([a, b], steps[1][1])                    # the same blobs again: applied in order
        deferred.add([c], [steps[1][1][0]])
        # The second update of a and b made their first happen; it and c's wait for the end.
        assert a.equal(sequential([a0], steps[:1])[0]) and c.equal(c0)
    for got, want in zip((a, b, c), expected):
        assert torch.equal(got, want)


def test_large_cpu_gradients_are_added_at_once_after_what_is_pending():
    big = torch.zeros(deferred.CPU_HOLD_LIMIT + 1)
    with deferred.gathered():
        deferred.scale_add([big], 2.0, [torch.ones_like(big)])       # pending: big <- 2 * big + 1
        deferred.add([big], [torch.full_like(big, 3.0)])             # large: the pending update, then this
        assert big[0].item() == 4.0
    assert big[0].item() == 4.0


def test_an_error_inside_still_applies_what_the_layers_did():
    a = torch.zeros(2)
    with pytest.raises(RuntimeError, match="boom"):
        with deferred.gathered():
            deferred.add([a], [torch.ones(2)])
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
