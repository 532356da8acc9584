import numpy as np
import pytest
import torch

from brewnet.models import resnet
from brewnet.models.common import ModelSpecError, parameter_count
from brewnet.proto import caffe_pb2

from .helpers import build


def resnet_formula(n, w, c, k, batch_norm=True, shortcuts=True):
    """Learned values of ResNet-(6n+2), written out per stage."""
    bn = 2 if batch_norm else 1            # Scale's gamma and beta, or the convolution's bias
    convs = 9 * c * w + bn * w
    convs += n * (2 * 9 * w * w + 2 * bn * w)
    for cin, cout in ((w, 2 * w), (2 * w, 4 * w)):
        convs += 9 * cin * cout + 9 * cout * cout + 2 * bn * cout
        if shortcuts:
            convs += cin * cout + bn * cout
        convs += (n - 1) * (2 * 9 * cout * cout + 2 * bn * cout)
    return convs + 4 * w * k + k


@pytest.mark.parametrize("depth,width,channels", [(8, 16, 3), (14, 8, 1), (20, 16, 3), (32, 4, 1)])
def test_parameter_count_matches_the_formula(depth, width, channels):
    param = resnet.cifar_resnet(depth, width=width, input_shape=(channels, 16, 16), batch_size=2)
    net = build(param)
    assert parameter_count(net) == resnet_formula((depth - 2) // 6, width, channels, 10)


def test_resnet20_has_the_books_size_and_layout():
    param = resnet.cifar_resnet(20, input_shape=(3, 32, 32), batch_size=2)
    assert parameter_count(build(param)) == 272474
    types = [layer.type for layer in param.layer]
    assert types.count("Convolution") == 19 + 2          # 19 weighted 3x3 layers + 2 projections
    assert types.count("BatchNorm") == types.count("Scale") == 21
    assert types.count("Eltwise") == 9
    proj = {layer.name: layer for layer in param.layer}["res2_1_proj"]
    assert (proj.convolution_param.kernel_size[0], proj.convolution_param.stride[0]) == (1, 2)


@pytest.mark.parametrize("depth", [8, 14])
def test_plain_net_without_bn_counts_biases_and_no_projections(depth):
    param = resnet.cifar_resnet(depth, batch_norm=False, shortcuts=False, input_shape=(1, 28, 28), batch_size=2)
    net = build(param)
    assert "Eltwise" not in [layer.type for layer in param.layer]
    assert parameter_count(net) == resnet_formula((depth - 2) // 6, 16, 1, 10, batch_norm=False, shortcuts=False)


def test_forward_shapes_on_28x28_inputs():
    net = build(resnet.cifar_resnet(8, input_shape=(1, 28, 28), batch_size=3))
    net.blobs["data"].data.copy_(torch.randn(3, 1, 28, 28))
    net.blobs["label"].data.copy_(torch.tensor([0.0, 1.0, 2.0]))
    loss = net.forward()
    assert net.blobs["res1_1"].shape == (3, 16, 28, 28)
    assert net.blobs["res2_1"].shape == (3, 32, 14, 14)
    assert net.blobs["res3_1"].shape == (3, 64, 7, 7)
    assert net.blobs["score"].shape == (3, 10)
    assert np.isfinite(loss) and loss > 0


def test_data_source_gives_a_data_layer_and_deploy_net_ends_in_prob():
    param = resnet.cifar_resnet(8, source="train_lmdb", batch_size=32, transform_param=dict(scale=1 / 256))
    data = param.layer[0]
    assert (data.type, list(data.top), data.data_param.source, data.data_param.batch_size) == \
        ("Data", ["data", "label"], "train_lmdb", 32)
    assert data.data_param.backend == caffe_pb2.DataParameter.LMDB
    assert data.transform_param.scale == pytest.approx(1 / 256)
    deploy = resnet.cifar_resnet(8, input_shape=(3, 32, 32), batch_size=1, label=False)
    assert [layer.name for layer in deploy.layer][-1] == "prob"
    assert "label" not in [top for layer in deploy.layer for top in layer.top]


def test_deleted_block_outputs_its_shortcut_with_the_same_weights():
    kwargs = dict(input_shape=(1, 8, 8), batch_size=2, width=4)
    full = build(resnet.cifar_resnet(8, **kwargs), "TEST")
    param = resnet.cifar_resnet(8, drop_blocks=["res1_1", "res2_1"], **kwargs)
    layers = {layer.name: layer for layer in param.layer}
    assert "res1_1_a" not in layers and "res2_1_a" not in layers and "res2_1" not in layers
    assert list(layers["res2_1_proj"].bottom) == ["conv1"]          # res1_1 gone: its output is its input
    assert list(layers["res3_1_a"].bottom) == ["res2_1_proj"]       # res2_1 gone: ReLU(projection)
    short = build(param, "TEST")
    short.copy_trained_layers_from(full.to_proto())
    short.blobs["data"].data.copy_(torch.randn(2, 1, 8, 8))
    short.blobs["label"].data.zero_()
    short.forward()
    proj = short.layer_by_name("res2_1_proj")
    assert proj.blobs[0].data.equal(full.layer_by_name("res2_1_proj").blobs[0].data)
    assert float(short.blobs["res2_1_proj"].data.min()) >= 0.0 and short.blobs["res2_1_proj"].shape == (2, 8, 4, 4)


def test_bad_depth_and_undeletable_blocks_are_named():
    with pytest.raises(ModelSpecError, match="6n \\+ 2.*got 21"):
        resnet.cifar_resnet(21, input_shape=(1, 8, 8))
    with pytest.raises(ModelSpecError, match="no block res4_1 in ResNet-8"):
        resnet.cifar_resnet(8, input_shape=(1, 8, 8), drop_blocks=["res4_1"])
    with pytest.raises(ModelSpecError, match="res2_1 of the plain net changes the shape"):
        resnet.cifar_resnet(8, shortcuts=False, input_shape=(1, 8, 8), drop_blocks=["res2_1"])
    with pytest.raises(ModelSpecError, match="exactly one of source= .* and input_shape="):
        resnet.cifar_resnet(8)
