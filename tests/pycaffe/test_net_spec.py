"""caffe.net_spec: the book's LeNet generator prints exactly what Caffe printed; naming and field placement."""
import numpy as np
import pytest

import caffe
from caffe import layers as L, params as P
from caffe.proto import caffe_pb2


class LeNet:
    """The book's generator (section 5.1.2), as a user writes it."""

    def __init__(self, train_lmdb, test_lmdb, num_output):
        self.train_lmdb, self.test_lmdb, self.num_output = train_lmdb, test_lmdb, num_output

    def lenet_proto(self, batch_size):
        n = caffe.NetSpec()
        n.data, n.label = L.Data(batch_size=batch_size, backend=P.Data.LMDB, source=self.train_lmdb,
                                 transform_param=dict(scale=1. / 256, mirror=False), ntop=2)
        n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20, stride=1,
                                weight_filler=dict(type='xavier'), bias_filler=dict(type='constant'))
        n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
        n.conv2 = L.Convolution(n.pool1, kernel_size=5, num_output=50, stride=1,
                                weight_filler=dict(type='xavier'), bias_filler=dict(type='constant'))
        n.pool2 = L.Pooling(n.conv2, kernel_size=2, stride=2, pool=P.Pooling.MAX)
        n.ip1 = L.InnerProduct(n.pool2, num_output=500, weight_filler=dict(type='xavier'),
                               bias_filler=dict(type='constant'))
        n.relu1 = L.ReLU(n.ip1, in_place=True)
        n.ip2 = L.InnerProduct(n.relu1, num_output=self.num_output, weight_filler=dict(type='xavier'),
                               bias_filler=dict(type='constant'))
        n.loss = L.SoftmaxWithLoss(n.ip2, n.label)
        return n.to_proto()


def test_lenet_generator_prints_caffes_text(golden, capsys):
    l = LeNet('123', '234', 10)
    print(l.lenet_proto(128))
    assert capsys.readouterr().out == (golden / "netspec_lenet.prototxt").read_text()


def test_unnamed_tops_are_auto_named_in_caffes_order():
    data = L.Input(shape=dict(dim=[2, 3]))
    a = L.InnerProduct(data, num_output=4)
    b = L.ReLU(a, in_place=True)
    c = L.InnerProduct(b, num_output=2)
    net = c.to_proto()                                   # Top.to_proto: every layer below c
    assert [(l.name, l.type, list(l.bottom), list(l.top)) for l in net.layer] == [
        ("Input1", "Input", [], ["Input1"]),
        ("InnerProduct1", "InnerProduct", ["Input1"], ["InnerProduct1"]),
        ("ReLU1", "ReLU", ["InnerProduct1"], ["InnerProduct1"]),
        ("InnerProduct2", "InnerProduct", ["InnerProduct1"], ["InnerProduct2"]),
    ]
    both = caffe.to_proto(c, L.Silence(a, ntop=0))
    assert [l.name for l in both.layer] == ["Input1", "InnerProduct1", "ReLU1", "InnerProduct2", "Silence1"]
    assert len(both.layer[-1].top) == 0


def test_named_tops_and_multi_top_layers():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 4]))
    n.first, n.second = L.Slice(n.data, slice_param=dict(axis=1, slice_point=[1]), ntop=2)
    n["total"] = L.Eltwise(n.first, L.Power(n.second, power=2))     # item assignment names too
    layers = n.to_proto().layer
    assert [l.name for l in layers] == ["data", "first", "Power1", "total"]
    assert list(layers[1].top) == ["first", "second"] and list(layers[1].slice_param.slice_point) == [1]
    assert list(layers[3].bottom) == ["first", "Power1"]
    assert layers[2].power_param.power == 2


def test_keywords_land_in_the_right_message():
    n = caffe.NetSpec()
    n.data = L.Input(shape=[dict(dim=[2, 1, 5, 5])])
    n.conv = L.Convolution(n.data, num_output=3, kernel_size=[3], pad=1,
                           param=[dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)],
                           include=dict(phase=caffe.TEST), loss_weight=0.5,
                           weight_filler=dict(type='gaussian', std=0.01))
    n.up = L.Deconvolution(n.conv, num_output=3, kernel_size=2, stride=2)
    layer = n.to_proto().layer[1]
    cp = layer.convolution_param
    assert (cp.num_output, list(cp.kernel_size), list(cp.pad)) == (3, [3], [1])
    assert cp.weight_filler.type == "gaussian" and cp.weight_filler.std == pytest.approx(0.01)
    assert [(p.lr_mult, p.decay_mult) for p in layer.param] == [(1, 1), (2, 0)]
    assert layer.include[0].phase == caffe_pb2.TEST and list(layer.loss_weight) == [0.5]
    up = n.to_proto().layer[2].convolution_param
    assert (up.num_output, list(up.kernel_size), list(up.stride)) == (3, [2], [2])
    assert P.Pooling.MAX == caffe_pb2.PoolingParameter.MAX and P.Data.LMDB == caffe_pb2.DataParameter.LMDB


def test_generated_net_runs(tmp_path):
    n = caffe.NetSpec()
    n.x = L.Input(shape=dict(dim=[2, 3]))
    n.y = L.InnerProduct(n.x, num_output=2, weight_filler=dict(type='constant', value=0.5),
                         bias_filler=dict(type='constant', value=1))
    n.z = L.ReLU(n.y, in_place=True)
    path = tmp_path / "gen.prototxt"
    path.write_text(str(n.to_proto()))
    net = caffe.Net(str(path), caffe.TEST)
    x = np.array([[1.0, 2.0, 3.0], [-4.0, -5.0, -6.0]])
    np.testing.assert_allclose(net.forward(x=x)["y"], [[4.0, 4.0], [0.0, 0.0]])


def test_mistakes_are_named():
    with pytest.raises(TypeError, match=r"^InnerProduct input 0 is not a Top \(type is <class 'str'>\)$"):
        L.InnerProduct("data", num_output=2)
    bad = L.InnerProduct(L.Input(shape=dict(dim=[1])), num_outputs=2)
    with pytest.raises(AttributeError, match="InnerProduct layer: 'num_outputs' is not a field of LayerParameter "
                                             "or of inner_product_param"):
        bad.to_proto()
    with pytest.raises(AttributeError, match="PoolingParameter has no constant 'MAXIMUM'"):
        P.Pooling.MAXIMUM
    n = caffe.NetSpec()
    with pytest.raises(AttributeError, match="NetSpec has no top named 'data'"):
        n.data
