"""pycaffe Net's batching helpers (forward_all, forward_backward_all) and MemoryData input arrays."""
import numpy as np
import pytest

import caffe
from brewnet.errors import BrewnetError
from .conftest import linear_net


# --- batching helpers ------------------------------------------------------------------------------------------
def test_forward_all_batches_and_pads(deploy, nets):
    mnist = np.load(nets.parent / "files" / "mnist1000.npz")["images"][:130].astype(np.float32) / 256
    images = mnist[:, None]
    net = caffe.Net(deploy, caffe.TEST, weights=str(nets / "lenet_test.caffemodel"))
    assert net.blobs["data"].shape[0] == 64
    out = net.forward_all(blobs=["ip1"], data=images)
    assert set(out) == {"prob", "ip1"}
    assert out["prob"].shape == (130, 10) and out["ip1"].shape == (130, 500)
    # every row against one forward of all 130 at once, and the batch edges against single-image forwards
    whole = caffe.Net(deploy, caffe.TEST, weights=str(nets / "lenet_test.caffemodel"))
    whole.blobs["data"].reshape(130, 1, 28, 28)
    whole.reshape()
    np.testing.assert_allclose(out["prob"], whole.forward(data=images)["prob"], rtol=1e-4, atol=1e-6)
    single = caffe.Net(deploy, caffe.TEST, weights=str(nets / "lenet_test.caffemodel"))
    single.blobs["data"].reshape(1, 1, 28, 28)
    single.reshape()
    for i in (0, 1, 62, 63, 64, 65, 127, 128, 129):
        row = single.forward(data=images[i:i + 1])
        np.testing.assert_allclose(out["prob"][i], row["prob"][0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out["prob"].sum(axis=1), 1, rtol=1e-5)
    # the book's feature-extraction idiom
    feats = net.forward_all(**{net.inputs[0]: images[:70]})
    np.testing.assert_allclose(feats["prob"], out["prob"][:70], rtol=1e-5, atol=1e-7)


def test_forward_backward_all(tmp_path):
    net = linear_net(tmp_path, 4, 3)
    w = net.params["ip"][0].data.copy()
    x = np.random.RandomState(0).randn(10, 3)
    dy = np.random.RandomState(1).randn(10, 2)
    outs, diffs = net.forward_backward_all(x=x, y=dy)
    assert outs["y"].shape == (10, 2) and diffs["x"].shape == (10, 3)
    np.testing.assert_allclose(outs["y"], x @ w.T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(diffs["x"], dy @ w, rtol=1e-5, atol=1e-6)


def memory_data_net(tmp_path, weight):
    """MemoryData (batch 2 of 1 x 2 x 3, with labels) -> InnerProduct(1) whose weights are all `weight`."""
    path = tmp_path / "mem.prototxt"
    path.write_text(f"""
        layer {{ name: "data" type: "MemoryData" top: "data" top: "label"
                memory_data_param {{ batch_size: 2 channels: 1 height: 2 width: 3 }} }}
        layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
                inner_product_param {{ num_output: 1 weight_filler {{ type: "constant" value: {weight} }} }} }}""")
    return caffe.Net(str(path), caffe.TEST)


def test_set_input_arrays_feeds_memory_data(tmp_path):
    net = memory_data_net(tmp_path, weight=1)
    data = np.arange(24, dtype=np.float32).reshape(4, 1, 2, 3)
    labels = np.array([3, 1, 4, 1], dtype=np.float32)
    net.set_input_arrays(data, labels)
    first = net.forward()
    np.testing.assert_allclose(first["ip"][:, 0], data[:2].reshape(2, -1).sum(1))
    np.testing.assert_array_equal(net.blobs["label"].data.ravel(), [3, 1])
    net.forward()
    np.testing.assert_array_equal(net.blobs["label"].data.ravel(), [4, 1])
    np.testing.assert_array_equal(net.blobs["data"].data, data[2:])
    with pytest.raises(BrewnetError, match=r"blob 'data' of shape \(N, 1, 2, 3\), Actual: .*\(4, 1, 3, 2\)"):
        net.set_input_arrays(data.reshape(4, 1, 3, 2), labels)
    with pytest.raises(BrewnetError, match=r"multiple of the batch size 2, Actual: 3"):
        net.set_input_arrays(data[:3], labels[:3])
    with pytest.raises(BrewnetError, match=r"labels of shape \(4,\)"):
        net.set_input_arrays(data, labels[:3])


def test_underscore_set_input_arrays_serves_the_callers_arrays(tmp_path):
    """pycaffe's binding: float32 C-contiguous N x C x H x W data and N x 1 x 1 x 1 labels, served without a
    copy (a later write to the caller's array is what the next forward sees); anything else is a RuntimeError."""
    net = memory_data_net(tmp_path, weight=0.5)
    data = np.arange(24, dtype=np.float32).reshape(4, 1, 2, 3)
    labels = np.array([3, 1, 4, 1], dtype=np.float32).reshape(4, 1, 1, 1)
    net._set_input_arrays(data, labels)
    np.testing.assert_allclose(net.forward()["ip"][:, 0], [7.5, 25.5])        # 0.5 * (0+..+5), 0.5 * (6+..+11)
    np.testing.assert_array_equal(net.blobs["label"].data.ravel(), [3, 1])
    data[2:] = 1.0
    labels[2:] = 9
    np.testing.assert_allclose(net.forward()["ip"][:, 0], [3.0, 3.0])
    np.testing.assert_array_equal(net.blobs["label"].data.ravel(), [9, 9])
    bad = [(data.astype(np.float64), labels, r"data array must be float32, Actual: float64"),
           (np.asfortranarray(data), labels, r"data array must be a C contiguous NumPy array"),
           (data[:, 0], labels, r"data array must be 4-d, Actual: shape \(4, 2, 3\)"),
           (data.reshape(4, 1, 3, 2), labels, r"data array for blob 'data': Expect: shape \(N, 1, 2, 3\), "
                                              r"Actual: \(4, 1, 3, 2\)"),
           (data, labels.ravel(), r"labels array must be 4-d, Actual: shape \(4,\)"),
           (data, labels[:2], r"same first dimension: Expect: 4 labels, Actual: 2"),
           (data[:3], labels[:3], r"multiple of the batch size 2, Actual: 3")]
    for d, l, message in bad:
        with pytest.raises(RuntimeError, match=message) as info:
            net._set_input_arrays(d, l)
        assert isinstance(info.value, BrewnetError)
