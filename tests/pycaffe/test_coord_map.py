"""caffe.coord_map: the affine maps between NetSpec tops, and Crop layers that really align the tops in a Net."""
import numpy as np
import pytest

import caffe
from caffe import layers as L, params as P
from caffe.coord_map import (AxisMismatchException, UndefinedMapException, compose, coord_map, coord_map_from_to,
                             crop, inverse)
from brewnet.errors import BrewnetError


def conv_pool_deconv(pad=0, dpad=0, pool=2, dstride=2):
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 20, 20]))
    n.conv = L.Convolution(n.data, num_output=1, kernel_size=3, pad=pad)
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=pool, stride=pool)
    n.deconv = L.Deconvolution(n.pool, num_output=1, kernel_size=2 * dstride, stride=dstride, pad=dpad)
    return n


def test_layer_maps_by_hand():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 8, 8]))
    # Convolution: a = 1/stride, b = (pad - (k_eff - 1) / 2) / stride; k_eff = (3 - 1) * 2 + 1 = 5
    ax, a, b = coord_map(L.Convolution(n.data, kernel_size=3, dilation=2, stride=2, pad=3).fn)
    assert ax == 1 and a.tolist() == [0.5] and b.tolist() == [0.5]
    # the parameters may also come as convolution_param=dict(...), one value per axis
    ax, a, b = coord_map(L.Convolution(n.data, convolution_param=dict(kernel_size=[3, 5], stride=[1, 2])).fn)
    assert a.tolist() == [1.0, 0.5] and b.tolist() == [-1.0, -1.0]
    ax, a, b = coord_map(L.Deconvolution(n.data, kernel_size=4, stride=2, pad=1).fn)
    assert a.tolist() == [2] and b.tolist() == [0.5]
    assert coord_map(L.ReLU(n.data).fn) == (None, 1, 0)
    ax, a, b = coord_map(L.Crop(n.data, n.data, axis=2, offset=[3, 4]).fn)
    assert ax == 1 and a == 1 and b.tolist() == [-3, -4]
    with pytest.raises(UndefinedMapException, match="no coordinate map for a InnerProduct layer"):
        coord_map(L.InnerProduct(n.data, num_output=2).fn)
    with pytest.raises(AssertionError, match="uses kernel_h, kernel_w; .*not supported"):
        coord_map(L.Convolution(n.data, kernel_h=3, kernel_w=3).fn)


def test_compose_and_inverse():
    assert compose((1, 2.0, 1.0), (None, 0.5, -3.0)) == (1, 1.0, -5.0)      # 2 * (0.5 x - 3) + 1
    assert inverse((1, 2.0, 1.0)) == (1, 0.5, -0.5)
    with pytest.raises(AxisMismatchException, match="axes 1 and 2"):
        compose((1, 1, 0), (2, 1, 0))


def test_from_to_through_conv_pool_deconv():
    # conv (pad 2): x -> x + 1; pool 2: x -> x / 2 - 1/4; deconv 4 / 2: x -> 2 x + 3/2; together x -> x + 2
    n = conv_pool_deconv(pad=2)
    ax, a, b = coord_map_from_to(n.deconv, n.data)
    assert ax == 1 and a.tolist() == [1.0] and b.tolist() == [-2.0]
    ax, a, b = coord_map_from_to(n.data, n.deconv)
    assert a.tolist() == [1.0] and b.tolist() == [2.0]
    ax, a, b = coord_map_from_to(n.pool, n.data)          # half resolution: data = 2 pool - 1/2
    assert a.tolist() == [2.0] and b.tolist() == [-0.5]
    layer = crop(n.deconv, n.data).fn
    assert layer.type_name == "Crop" and layer.params["crop_param"] == dict(axis=2, offset=[2])
    assert [t.fn.type_name for t in layer.inputs] == ["Deconvolution", "Input"]


def test_crop_aligns_the_tops_in_a_net():
    """A centred 3x3 identity kernel with pad 2 shifts the image by one pixel: crop() undoes exactly that."""
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 6, 7]))
    n.conv = L.Convolution(n.data, num_output=1, kernel_size=3, pad=2, bias_term=False)
    n.crop = crop(n.conv, n.data)
    assert n.to_proto().layer[2].crop_param.offset == [1]
    net = caffe.Net(n.to_proto(), caffe.TEST)
    net.params["conv"][0].data[...] = 0
    net.params["conv"][0].data[0, 0, 1, 1] = 1
    image = np.arange(42, dtype=np.float32).reshape(1, 1, 6, 7)
    out = net.forward(data=image)
    assert net.blobs["conv"].data.shape == (1, 1, 8, 9)
    np.testing.assert_array_equal(out["crop"], image)


def test_crop_of_a_crop_adds_the_offsets():
    n = conv_pool_deconv(pad=2)
    n.crop = L.Crop(n.deconv, n.data, axis=2, offset=3)
    ax, a, b = coord_map_from_to(n.crop, n.data)
    assert ax == 1 and a.tolist() == [1.0] and b.tolist() == [-2.0 + 3.0]


def test_errors_have_pycaffe_types():
    n = conv_pool_deconv()
    n.ip = L.InnerProduct(n.deconv, num_output=2)
    with pytest.raises(RuntimeError, match="Could not compute map between tops") as info:
        coord_map_from_to(n.ip, n.data)
    assert isinstance(info.value, BrewnetError)
    bad = conv_pool_deconv(pool=3)
    # pool 3, deconv 2: the deconv's pixels are 3/2 of the data's
    with pytest.raises(AssertionError, match=r"scale mismatch on crop \(a = \[1.5\]\): the two tops are not"):
        crop(bad.deconv, bad.data)
    small = conv_pool_deconv(dpad=10)
    with pytest.raises(AssertionError, match=r"cannot crop negative offset \(b = \[10.\]\)"):
        crop(small.deconv, small.data)
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 8, 8]))
    n.conv = L.Convolution(n.data, kernel_size=2, pad=1)         # data x sits at conv x + 1/2
    with pytest.raises(AssertionError, match=r"cannot crop noninteger offset \(b = \[-0.5\]\)") as info:
        crop(n.conv, n.data)
    assert isinstance(info.value, BrewnetError)
