"""The Net's packed BatchNorm statistics (runtime/running_sums.py): one tensor per net, two ops a pass, and the
very numbers of the layer-by-layer update."""
import pytest
import torch

from brewnet.runtime.net_runtime import NetRuntime
from brewnet.core.net import Net
from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text

# Three BatchNorms in TRAIN; the third averages more slowly, so it gets a group of its own.
NET = """
name: "bns" force_backward: true
layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 4 dim: 3 dim: 5 dim: 5 } } }
layer { name: "bn1" type: "BatchNorm" bottom: "data" top: "a" %(bn1)s }
layer { name: "conv" type: "Convolution" bottom: "a" top: "b"
        convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "bn2" type: "BatchNorm" bottom: "b" top: "b" %(bn2)s }
layer { name: "bn3" type: "BatchNorm" bottom: "b" top: "c" %(bn3)s }
layer { name: "bn4" type: "BatchNorm" bottom: "c" top: "d" batch_norm_param { moving_average_fraction: 0.9 } }
layer { name: "ref" type: "DummyData" top: "target"
        dummy_data_param { shape { dim: 4 dim: 4 dim: 3 dim: 3 } data_filler { type: "constant" value: 0.5 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "d" bottom: "target" top: "loss" }
"""


def make_net(monkeypatch, packed, bn1="", bn2="", bn3="", **kw):
    monkeypatch.setattr(NetRuntime, "pack_running_sums", packed)
    torch.manual_seed(0)
    net = Net(parse_text(NET % dict(bn1=bn1, bn2=bn2, bn3=bn3), caffe_pb2.NetParameter()),
              phase=caffe_pb2.TRAIN, **kw)
    return net


def feed(net, step):
    g = torch.Generator().manual_seed(step)
    net.blobs["data"].data.copy_(torch.randn(4, 3, 5, 5, generator=g) * 3 + step)


def statistics(net):
    return {f"{name}.{i}": blob.data.clone() for name, layer in zip(net.layer_names, net.layers)
            if layer.type == "BatchNorm" for i, blob in enumerate(layer.blobs)}


def assert_identical(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def train(net, passes=3):
    for step in range(passes):
        feed(net, step)
        net.forward_backward()


def test_statistics_live_in_one_tensor_per_group(monkeypatch):
    net = make_net(monkeypatch, True)
    groups = net.runtime.running_sums
    assert [sorted(layer.name for layer in g.layers) for g in groups] == [["bn1", "bn2", "bn3"]]
    assert net.layer_by_name("bn4").running_sums is None       # a group of one stays unpacked
    group = groups[0]
    assert group.sums.numel() == (3 + 3 + 1) + 2 * (4 + 4 + 1)
    for layer in group.layers:
        for blob in layer.blobs:
            assert blob.data.untyped_storage().data_ptr() == group.sums.untyped_storage().data_ptr()
        # the factor's slot of the batch statistics holds the 1 every pass adds
        assert layer._stats_buffers[2].item() == 1.0


def test_packed_passes_give_the_layer_by_layer_numbers(monkeypatch):
    reference, packed = make_net(monkeypatch, False), make_net(monkeypatch, True)
    train(reference)
    ops = []
    real_mul = torch.Tensor.mul_
    monkeypatch.setattr(torch.Tensor, "mul_", lambda self, *a: ops.append(self.numel()) or real_mul(self, *a))
    train(packed)
    stats = statistics(packed)
    assert_identical(statistics(reference), stats)
    assert stats["bn2.2"].item() == pytest.approx(1 + 0.999 + 0.999 ** 2)       # s <- maf * s + 1, 3 passes
    assert stats["bn4.2"].item() == pytest.approx(1 + 0.9 + 0.81)
    # one scaling of the whole group's 25 values per pass
    assert ops.count(25) == 3


def test_a_partial_pass_updates_only_the_layers_it_ran(monkeypatch):
    reference, packed = make_net(monkeypatch, False), make_net(monkeypatch, True)
    for net in (reference, packed):
        train(net, 1)
        feed(net, 5)
        net.forward(start="bn1", end="bn2")
    stats = statistics(packed)
    assert_identical(statistics(reference), stats)
    assert stats["bn3.2"].item() == 1.0 and stats["bn2.2"].item() == pytest.approx(1.999)


def test_values_written_into_a_blob_are_what_the_next_pass_scales(monkeypatch):
    reference, packed = make_net(monkeypatch, False), make_net(monkeypatch, True)
    for net in (reference, packed):
        train(net, 1)
        net.layer_by_name("bn2").blobs[0].data.fill_(100.0)        # in place, as a pycaffe array writes
        train(net, 1)
    assert_identical(statistics(reference), statistics(packed))
    assert net.layer_by_name("bn2").running_sums.packed(net.layer_by_name("bn2"))


def test_a_blob_given_other_memory_leaves_the_group_and_keeps_its_numbers(monkeypatch):
    reference, packed = make_net(monkeypatch, False), make_net(monkeypatch, True)
    for net in (reference, packed):
        train(net, 1)
        net.layer_by_name("bn2").blobs[1].data = torch.full((4,), 7.0)
        train(net, 2)
    assert_identical(statistics(reference), statistics(packed))
    group = packed.runtime.running_sums[0]
    assert not group.packed(packed.layer_by_name("bn2"))
    assert group.packed(packed.layer_by_name("bn1")) and group.packed(packed.layer_by_name("bn3"))


def test_statistics_shared_by_name_are_not_packed(monkeypatch):
    shared = 'param { name: "m" lr_mult: 0 } param { name: "v" lr_mult: 0 } param { name: "s" lr_mult: 0 }'
    reference = make_net(monkeypatch, False, bn2=shared, bn3=shared)
    packed = make_net(monkeypatch, True, bn2=shared, bn3=shared)
    assert packed.layer_by_name("bn2").running_sums is None and packed.layer_by_name("bn3").running_sums is None
    assert packed.runtime.running_sums == []           # bn1 alone is left: a group of one
    train(reference)
    train(packed)
    assert_identical(statistics(reference), statistics(packed))


def test_batchnorms_on_global_statistics_keep_none_and_are_not_packed(monkeypatch):
    net = make_net(monkeypatch, True, bn1="batch_norm_param { use_global_stats: true }")
    assert [layer.keeps_running_statistics() for layer in net.layers if layer.type == "BatchNorm"] == \
        [False, True, True, True]
    assert [sorted(layer.name for layer in g.layers) for g in net.runtime.running_sums] == [["bn2", "bn3"]]
    assert net.layer_by_name("bn1").running_sums is None
    monkeypatch.setattr(NetRuntime, "pack_running_sums", True)
    test_net = Net(parse_text(NET % dict(bn1="", bn2="", bn3=""), caffe_pb2.NetParameter()), phase=caffe_pb2.TEST)
    assert not any(layer.keeps_running_statistics() for layer in test_net.layers)
    assert test_net.runtime.running_sums == []


def test_running_statistics_are_asked_of_the_layer_not_its_type_string(monkeypatch):
    from tests.runtime import capability_layers  # noqa: F401  (registers RenamedBatchNorm)
    renamed = 'type: "RenamedBatchNorm" bottom: "b" top: "b"'
    text = (NET % dict(bn1="", bn2="", bn3="")).replace('type: "BatchNorm" bottom: "b" top: "b"', renamed)
    monkeypatch.setattr(NetRuntime, "pack_running_sums", True)
    net = Net(parse_text(text, caffe_pb2.NetParameter()), phase=caffe_pb2.TRAIN)
    assert net.layer_by_name("bn2").type == "RenamedBatchNorm"
    assert [sorted(layer.name for layer in g.layers) for g in net.runtime.running_sums] == [["bn1", "bn2", "bn3"]]


def test_debug_info_updates_layer_by_layer_with_the_same_numbers(monkeypatch):
    reference, packed = make_net(monkeypatch, False), make_net(monkeypatch, True)
    packed.debug_info = True            # no gathered scope: each layer's part at once
    train(reference)
    train(packed)
    assert_identical(statistics(reference), statistics(packed))


def test_a_test_net_sharing_the_blobs_sees_the_packed_statistics(monkeypatch):
    train_net = make_net(monkeypatch, True)
    test_net = make_net(monkeypatch, True, bn1="batch_norm_param { use_global_stats: true }",
                        bn2="batch_norm_param { use_global_stats: true }",
                        bn3="batch_norm_param { use_global_stats: true }")
    test_net.share_trained_layers_with(train_net)
    train(train_net, 2)
    assert_identical(statistics(train_net), statistics(test_net))


def test_the_fused_batchnorm_scale_of_a_resnet_block_packs_too(monkeypatch):
    from tests.runtime.test_fusion import BLOCK
    text = BLOCK % dict(bn="", scale_top="conv")
    text = text.replace('layer { name: "sc"', 'layer { name: "bn_b" type: "BatchNorm" bottom: "conv" top: "conv" }\n'
                                              'layer { name: "sc"')
    nets = []
    for packed in (False, True):
        monkeypatch.setattr(NetRuntime, "pack_running_sums", packed)
        torch.manual_seed(0)
        net = Net(parse_text(text, caffe_pb2.NetParameter()), phase=caffe_pb2.TRAIN)
        g = torch.Generator().manual_seed(1)
        for _ in range(2):
            net.blobs["data"].data.copy_(torch.randn(4, 3, 6, 6, generator=g))
            net.blobs["label"].data.copy_(torch.tensor([0.0, 1, 2, 1]))
            net.forward_backward()
        nets.append(net)
    assert [layer.name for layer in nets[1].runtime.running_sums[0].layers] == ["bn", "bn_b"]
    assert_identical(statistics(nets[0]), statistics(nets[1]))


def test_pycaffe_arrays_on_packed_statistics_read_and_write_the_net(tmp_path, monkeypatch):
    import caffe
    path = tmp_path / "bns.prototxt"
    path.write_text(NET % dict(bn1="", bn2="", bn3=""))
    nets = []
    for packed in (False, True):
        monkeypatch.setattr(NetRuntime, "pack_running_sums", packed)
        torch.manual_seed(0)
        net = caffe.Net(str(path), caffe.TRAIN)
        held = net.params["bn2"][2].data             # on the CPU, a NumPy array over the blob's memory
        net.params["bn2"][0].data[...] = 100.0          # written through NumPy
        net.blobs["data"].data[...] = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(3)).numpy()
        net.forward()
        assert net.params["bn2"][2].data[0] == 1.0      # read again: the pass's update
        if net._net.device.type == "cpu":
            assert held[0] == 1.0                       # the array itself sees it (a GPU's is a host copy)
        nets.append({name: [p.data.copy() for p in params] for name, params in net.params.items()})
    for name in nets[0]:
        for a, b in zip(nets[0][name], nets[1][name]):
            assert (a == b).all(), name
    assert nets[1]["bn2"][0].min() > 99.0
