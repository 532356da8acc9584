"""Net assembly rules on small hand-made nets: NetState filtering, Split insertion and diff accumulation,
in-place tops, parameter sharing, lr/decay mults, loss weights, propagate_down, force_backward, errors."""
import pytest
import torch

from brewnet.core.insert_splits import insert_splits
from brewnet.core.net import Net
from brewnet.errors import NetError, ProtoError, UnknownLayerTypeError
from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text

TWO_IP = """
name: "two"
layer { name: "in" type: "Input" top: "x" top: "label" input_param { shape { dim: 4 dim: 3 } shape { dim: 4 } } }
layer { name: "ip_a" type: "InnerProduct" bottom: "x" top: "a"
        param { name: "w" lr_mult: 1 decay_mult: 2 } param { name: "b" lr_mult: 2 decay_mult: 0 }
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" } bias_filler { type: "gaussian" } } }
layer { name: "ip_b" type: "InnerProduct" bottom: "x" top: "b" param { name: "w" } param { name: "b" }
        inner_product_param { num_output: 2 } }
layer { name: "relu" type: "ReLU" bottom: "a" top: "a" }
layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "s" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "s" bottom: "label" top: "loss" }
"""


def net_from(text, **kw):
    return Net(parse_text(text, caffe_pb2.NetParameter()), **kw)


def test_split_insertion_names_and_layers():
    param = insert_splits(parse_text(TWO_IP, caffe_pb2.NetParameter()))
    names = [(l.name, l.type, list(l.bottom), list(l.top)) for l in param.layer]
    assert names[1] == ("x_in_0_split", "Split", ["x"], ["x_in_0_split_0", "x_in_0_split_1"])
    assert names[2][2] == ["x_in_0_split_0"] and names[3][2] == ["x_in_0_split_1"]


def test_loss_top_also_consumed_gets_split_with_the_weight():
    text = """
    layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "e" type: "EuclideanLoss" bottom: "x" bottom: "x" top: "l" loss_weight: 2 }
    layer { name: "p" type: "Power" bottom: "l" top: "l2" loss_weight: 1 }"""
    param = insert_splits(parse_text(text, caffe_pb2.NetParameter()))
    split = [l for l in param.layer if l.name == "l_e_0_split"][0]
    assert list(split.loss_weight) == [2.0, 0.0] and len(param.layer[2].loss_weight) == 0


def test_shared_params_accumulate_and_split_diffs_sum():
    net = net_from("force_backward: true" + TWO_IP, phase=caffe_pb2.TRAIN)
    ip_a, ip_b = net.layer_by_name("ip_a"), net.layer_by_name("ip_b")
    assert ip_a.blobs[0] is ip_b.blobs[0] and len(net.learnable_params) == 2 and len(net.params) == 4
    assert net.params_lr == [1.0, 2.0] and net.params_weight_decay == [2.0, 0.0]
    assert net.param_owners == [-1, -1, 0, 1]
    x = torch.randn(4, 3)
    net.blobs["x"].data.copy_(x)
    net.blobs["label"].data.copy_(torch.tensor([0.0, 1.0, 1.0, 0.0]))
    loss = net.forward()
    net.clear_param_diffs()
    net.backward()
    # Oracle: the same maths with autograd.
    w = ip_a.blobs[0].data.clone().requires_grad_(True)
    b = ip_a.blobs[1].data.clone().requires_grad_(True)
    xg = x.clone().requires_grad_(True)
    s = torch.relu(xg @ w.t() + b) + (xg @ w.t() + b)
    ref = torch.nn.functional.cross_entropy(s, torch.tensor([0, 1, 1, 0]))
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=1e-5)
    assert torch.allclose(ip_a.blobs[0].diff, w.grad, atol=1e-6)
    assert torch.allclose(ip_a.blobs[1].diff, b.grad, atol=1e-6)
    assert torch.allclose(net.blobs["x_in_0_split_0"].diff + net.blobs["x_in_0_split_1"].diff, xg.grad, atol=1e-6)


def test_in_place_top_is_the_bottom_blob():
    net = net_from(TWO_IP, phase=caffe_pb2.TRAIN)
    relu = net.layer_names.index("relu")
    assert net.top_vecs[relu][0] is net.bottom_vecs[relu][0]


def test_backward_analysis_lr_zero_propagate_down_and_force_backward():
    text = """
    layer { name: "in" type: "Input" top: "x" top: "y" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "frozen" type: "InnerProduct" bottom: "x" top: "f" param { lr_mult: 0 } param { lr_mult: 0 }
            inner_product_param { num_output: 3 } }
    layer { name: "ip" type: "InnerProduct" bottom: "f" top: "g" inner_product_param { num_output: 3 } }
    layer { name: "loss" type: "EuclideanLoss" bottom: "g" bottom: "y" top: "l" propagate_down: true propagate_down: false }
    layer { name: "side" type: "InnerProduct" bottom: "x" top: "unused" inner_product_param { num_output: 1 } }"""
    # "x" feeds two layers, so there is a split; "side" contributes to no loss.
    net = net_from(text, phase=caffe_pb2.TRAIN)
    need = dict(zip(net.layer_names, net.layer_need_backward))
    assert need == {"in": False, "x_in_0_split": False, "frozen": False, "ip": True, "loss": True, "side": False}
    # each layer is told (layers skip what only backward needs, e.g. MAX pooling's argmax)
    assert {layer.name: layer.need_backward for layer in net.layers} == need
    assert net.bottom_need_backward[net.layer_names.index("loss")] == [True, False]
    assert net.output_blob_names == ["l", "unused"]
    forced = net_from("force_backward: true\n" + text, phase=caffe_pb2.TRAIN)
    assert all(forced.layer_need_backward) and all(layer.need_backward for layer in forced.layers)
    # force_backward overrides propagate_down for bottoms the layer can differentiate (Euclidean: both)
    assert forced.bottom_need_backward[forced.layer_names.index("loss")] == [True, True]


def test_netstate_filtering_by_phase_level_and_stage():
    text = """
    layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 } } }
    layer { name: "train_only" type: "ReLU" bottom: "x" top: "t" include { phase: TRAIN } }
    layer { name: "test_only" type: "ReLU" bottom: "x" top: "u" include { phase: TEST } }
    layer { name: "deep" type: "ReLU" bottom: "x" top: "v" include { min_level: 2 } }
    layer { name: "staged" type: "ReLU" bottom: "x" top: "w" include { stage: "deploy" } }
    layer { name: "not_staged" type: "ReLU" bottom: "x" top: "z" exclude { stage: "deploy" } }"""
    names = lambda **kw: net_from(text, **kw).layer_names
    assert "train_only" in names(phase=caffe_pb2.TRAIN) and "test_only" not in names(phase=caffe_pb2.TRAIN)
    assert "deep" not in names(phase=caffe_pb2.TEST) and "deep" in names(phase=caffe_pb2.TEST, level=2)
    staged = names(phase=caffe_pb2.TEST, stages=["deploy"])
    assert "staged" in staged and "not_staged" not in staged


def test_loss_weight_scales_loss_and_gradient():
    text = """
    layer { name: "in" type: "Input" top: "x" top: "y" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "loss" type: "EuclideanLoss" bottom: "x" bottom: "y" top: "l" loss_weight: 3 }"""
    net = net_from("force_backward: true\n" + text, phase=caffe_pb2.TRAIN)
    net.blobs["x"].data.copy_(torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]))
    loss = net.forward()
    net.backward()
    # Euclidean: sum((x-y)^2) / (2N) = 14 / 4 = 3.5, times 3
    assert loss == pytest.approx(10.5) and net.blob_loss_weights[net.blob_names.index("l")] == 3.0
    assert torch.allclose(net.blobs["x"].diff, 3 * net.blobs["x"].data / 2)


def test_forward_and_backward_ranges_by_name():
    net = net_from(TWO_IP, phase=caffe_pb2.TRAIN)
    net.blobs["x"].data.normal_()
    net.forward(end="ip_b")
    assert float(net.blobs["s"].data.abs().sum()) == 0.0 and float(net.blobs["b"].data.abs().sum()) > 0
    net.forward(start="relu")
    assert float(net.blobs["s"].data.abs().sum()) > 0
    with pytest.raises(NetError, match="no layer named 'nope'"):
        net.forward(start="nope")


def test_errors_name_the_culprit():
    with pytest.raises(NetError, match="Unknown bottom blob 'y' \\(layer 'r', bottom index 0\\)"):
        net_from('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 } } }'
                 'layer { name: "r" type: "ReLU" bottom: "y" top: "z" }')
    with pytest.raises(NetError, match="Top blob 'x' produced by multiple sources"):
        net_from('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 } } }'
                 'layer { name: "in2" type: "Input" top: "x" input_param { shape { dim: 1 } } }')
    with pytest.raises(UnknownLayerTypeError, match="unknown layer type 'Convolutoin'.*did you mean Convolution"):
        net_from('layer { name: "c" type: "Convolutoin" }')
    with pytest.raises(NetError, match="shape mismatch"):
        net_from('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 3 } } }'
                 'layer { name: "a" type: "InnerProduct" bottom: "x" top: "a" param { name: "w" } '
                 'inner_product_param { num_output: 2 } }'
                 'layer { name: "b" type: "InnerProduct" bottom: "x" top: "b" param { name: "w" } '
                 'inner_product_param { num_output: 5 } }')


def test_prototxt_syntax_error_names_file_line_and_column(tmp_path):
    path = tmp_path / "bad.prototxt"
    path.write_text('name: "x"\nlayer {\n  name: "a"\n  type: Input"\n}\n')
    with pytest.raises(ProtoError, match=r"bad\.prototxt:4:\d+"):
        Net(str(path))
