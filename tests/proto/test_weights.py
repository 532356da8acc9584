"""Trained weights: Caffe's caffemodel (also V1 ones with legacy 4-D blobs) and HDF5 layouts."""
import json
import types

import h5py
import numpy as np
import pytest
import torch

from brewnet.errors import WeightsError
from brewnet.proto import caffe_pb2, io
from brewnet.proto.weights import (LegacyShapeArray, fill_blob_proto, is_hdf5, load_weights, save_hdf5,
                                   shape_matches)


# --- caffemodel -----------------------------------------------------------------------------------------------

def test_golden_lenet_caffemodel_layers_and_shapes(golden):
    info = json.loads((golden / "nets" / "lenet_train.json").read_text())
    weights = load_weights(golden / "nets" / "lenet_train.caffemodel")
    # Every layer of the net is in the file, in Caffe's order, also those without parameters.
    assert list(weights) == [name for name, _ in info["layers"]]
    for name, arrays in weights.items():
        assert [list(a.shape) for a in arrays] == info["params"].get(name, []), name
        assert all(a.dtype == np.float32 and type(a) is np.ndarray for a in arrays)
    # Caffe's xavier filler drew conv1's weights from U(-sqrt(3/25), sqrt(3/25)); its constant bias filler 0.
    conv1_w, conv1_b = weights["conv1"]
    assert 0 < np.abs(conv1_w).max() <= np.sqrt(3 / 25) and conv1_w.std() > 0.1
    np.testing.assert_array_equal(conv1_b, np.zeros(20, np.float32))


def test_golden_caffemodel_rewritten_byte_for_byte(golden):
    """Arrays loaded and written back through fill_blob_proto give exactly Caffe's file."""
    path = golden / "nets" / "lenet_train.caffemodel"
    weights = load_weights(path)
    net = io.read_binary(path, caffe_pb2.NetParameter())
    for layer in net.layer:
        for proto, array in zip(layer.blobs, weights[layer.name]):
            fill_blob_proto(proto, array)
    assert net.SerializeToString() == path.read_bytes()


def test_v1_caffemodel_is_upgraded_and_keeps_legacy_shapes(tmp_path):
    old = caffe_pb2.NetParameter(name="old")
    old.input.append("data")                       # old caffemodels list inputs without shapes
    ip = old.layers.add(name="ip", type=caffe_pb2.V1LayerParameter.INNER_PRODUCT, bottom=["data"], top=["ip"])
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    ip.blobs.add(num=1, channels=1, height=2, width=3, data=w.ravel().tolist())
    ip.blobs.add(num=1, channels=1, height=1, width=2, data=[0.5, -0.5])
    old.layers.add(name="relu", type=caffe_pb2.V1LayerParameter.RELU, bottom=["ip"], top=["ip"])
    io.write_binary(old, tmp_path / "old.caffemodel")

    weights = load_weights(tmp_path / "old.caffemodel")
    assert list(weights) == ["ip", "relu"] and weights["relu"] == []
    weight, bias = weights["ip"]
    assert isinstance(weight, LegacyShapeArray) and weight.shape == (1, 1, 2, 3)
    np.testing.assert_array_equal(weight.reshape(2, 3), w)
    assert shape_matches((2, 3), weight) and shape_matches((2,), bias) and not shape_matches((3, 2), weight)


def test_load_weights_from_net_parameter_in_memory():
    net = caffe_pb2.NetParameter()
    layer = net.layer.add(name="c", type="Convolution")
    fill_blob_proto(layer.blobs.add(), np.full((2, 1, 1, 1), 3.0, np.float32))
    weights = load_weights(net)
    np.testing.assert_array_equal(weights["c"][0], np.full((2, 1, 1, 1), 3.0))


def test_missing_weights_file(tmp_path):
    with pytest.raises(WeightsError, match=r"nothere\.caffemodel: weights file not found"):
        load_weights(tmp_path / "nothere.caffemodel")


def test_prototxt_given_as_weights_says_so(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text('name: "n"\nlayer { name: "a" type: "ReLU" }\n')
    with pytest.raises(WeightsError, match=r"net\.prototxt: not a valid NetParameter.*looks like a text prototxt"):
        load_weights(path)


# --- HDF5 -----------------------------------------------------------------------------------------------------

def test_hdf5_round_trip_in_caffes_layout(tmp_path):
    rng = np.random.default_rng(0)
    conv = [rng.standard_normal((3, 2, 2, 2)).astype(np.float32), rng.standard_normal(3).astype(np.float32)]
    conv_diff = [rng.standard_normal(a.shape).astype(np.float32) for a in conv]
    tied = rng.standard_normal(3).astype(np.float32)
    layers = {
        "data": [],
        "conv1": [(conv[0], conv_diff[0]), (torch.from_numpy(conv[1]), torch.from_numpy(conv_diff[1]))],
        "inception_3a/1x1": [(conv[1] * 2, conv_diff[1] * 2)],     # names with '/' as in GoogLeNet
        "tied": [(None, tied * 5), (tied, tied * 3)],               # param 0 owned by another layer
    }
    path = tmp_path / "w.caffemodel.h5"
    save_hdf5(layers, path, write_diff=True)
    assert is_hdf5(path) and [p.name for p in tmp_path.iterdir()] == ["w.caffemodel.h5"]

    with h5py.File(path, "r") as f:            # Caffe's layout, read without brewnet
        assert sorted(f) == ["data", "diff"]
        assert sorted(f["data/conv1"]) == ["0", "1"] and f["data/conv1/0"].dtype == np.float32
        np.testing.assert_array_equal(f["data/conv1/0"][()], conv[0])
        np.testing.assert_array_equal(f["diff/conv1/1"][()], conv_diff[1])
        assert list(f["data/tied"]) == ["1"] and sorted(f["diff/tied"]) == ["0", "1"]
        assert len(f["data/data"]) == 0

    weights = load_weights(path)
    assert sorted(weights) == ["conv1", "data", "inception_3a/1x1", "tied"]
    for got, want in zip(weights["conv1"], conv):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(weights["inception_3a/1x1"][0], conv[1] * 2)
    assert weights["tied"][0] is None                      # the Net finds it shared, as Caffe does
    np.testing.assert_array_equal(weights["tied"][1], tied)
    diffs = load_weights(path, diff=True)
    np.testing.assert_array_equal(diffs["conv1"][0], conv_diff[0])
    np.testing.assert_array_equal(diffs["tied"][0], tied * 5)
    np.testing.assert_array_equal(diffs["tied"][1], tied * 3)


def test_hdf5_without_diff_group(tmp_path):
    path = tmp_path / "w.h5"
    save_hdf5({"ip": [np.ones((2, 2), np.float64)]}, path)
    with h5py.File(path, "r") as f:
        assert list(f) == ["data"] and f["data/ip/0"].dtype == np.float64
    assert load_weights(path, diff=True) == {}
    assert load_weights(path)["ip"][0].dtype == np.float64


def test_save_hdf5_from_net_like(tmp_path):
    """A Net (duck-typed here) writes shared parameters only under the owning layer, diffs everywhere."""
    def blob(value):
        return types.SimpleNamespace(data=torch.full((2,), value), diff=torch.full((2,), -value))

    owner, sharer = blob(1.0), blob(1.0)
    net = types.SimpleNamespace(
        layers=[types.SimpleNamespace(blobs=[owner]), types.SimpleNamespace(blobs=[]),
                types.SimpleNamespace(blobs=[sharer])],
        layer_names=["ip_a", "relu", "ip_b"], param_id_vecs=[[0], [], [1]], param_owners=[-1, 0])
    path = tmp_path / "net.h5"
    save_hdf5(net, path, write_diff=True)
    with h5py.File(path, "r") as f:
        assert sorted(f["data"]) == ["ip_a", "ip_b", "relu"]
        assert list(f["data/ip_a"]) == ["0"] and list(f["data/ip_b"]) == []
        np.testing.assert_array_equal(f["diff/ip_b/0"][()], [-1.0, -1.0])


def test_hdf5_missing_layer_is_a_clear_error(tmp_path):
    path = tmp_path / "w.h5"
    save_hdf5({"conv1": [np.zeros(2, np.float32)], "ip1": [np.zeros(3, np.float32)]}, path)
    weights = load_weights(path)
    assert "conv2" not in weights
    with pytest.raises(WeightsError, match=r"w\.h5: the weights have no layer 'conv2' "
                                           r"\(layers with weights: conv1, ip1\)"):
        weights["conv2"]


def test_hdf5_without_data_group_is_a_clear_error(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["label"] = np.zeros(3)
    with pytest.raises(WeightsError, match=r"other\.h5: HDF5 file has no 'data' group"):
        load_weights(path)


def test_hdf5_dataset_with_a_bad_name_is_refused(tmp_path):
    path = tmp_path / "odd.h5"
    with h5py.File(path, "w") as f:
        f["data/ip/weights"] = np.zeros(3)
    with pytest.raises(WeightsError, match=r"layer 'ip' has dataset 'weights'; expected parameter indices"):
        load_weights(path)


def test_save_hdf5_diff_requested_but_absent(tmp_path):
    with pytest.raises(WeightsError, match=r"cannot write the diff of layer 'ip' param 0"):
        save_hdf5({"ip": [np.zeros(2)]}, tmp_path / "x.h5", write_diff=True)
    assert not (tmp_path / "x.h5").exists()
