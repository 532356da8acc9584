"""pycaffe's Net through `import caffe`, used as scripts use it, checked against Caffe's golden LeNet numbers."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import caffe
from caffe.proto import caffe_pb2
from brewnet.errors import BrewnetError
from .conftest import linear_net

def caffemodel_arrays(path):
    """{layer: [arrays]} read straight from the caffemodel protobuf."""
    param = caffe_pb2.NetParameter()
    param.ParseFromString(open(path, "rb").read())
    return {l.name: [np.array(b.data, np.float32).reshape(tuple(b.shape.dim)) for b in l.blobs]
            for l in param.layer if len(l.blobs)}


# --- construction --------------------------------------------------------------------------------------------
def test_constructor_forms_load_the_same_weights(nets):
    model, weights = str(nets / "lenet_test.prototxt"), str(nets / "lenet_test.caffemodel")
    expected = caffemodel_arrays(weights)
    forms = [caffe.Net(model, caffe.TEST, weights=weights),
             caffe.Net(model, weights, caffe.TEST),
             caffe.Net(model, weights=weights, phase=caffe.TEST),
             caffe.Net(network_file=model, phase=caffe.TEST, weights=weights)]
    for net in forms:
        assert net.phase == caffe.TEST
        assert list(net.params) == ["conv1", "conv2", "ip1", "ip2"]
        for name, arrays in expected.items():
            for blob, array in zip(net.params[name], arrays):
                np.testing.assert_array_equal(blob.data, array)
    fresh = caffe.Net(model, caffe.TEST)            # no weights: the fillers' values, not the caffemodel's
    assert not np.array_equal(fresh.params["conv1"][0].data, expected["conv1"][0])


def test_level_and_stages_filter_layers(tmp_path):
    path = tmp_path / "staged.prototxt"
    path.write_text("""
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
        layer { name: "deployed" type: "Power" bottom: "x" top: "y" include { stage: "deploy" } }
        layer { name: "expert" type: "Power" bottom: "x" top: "z" power_param { scale: 2 } include { min_level: 2 } }
    """)
    assert [l for l in caffe.Net(str(path), caffe.TEST).layer_dict] == ["x"]
    assert list(caffe.Net(str(path), caffe.TEST, stages=["deploy"]).layer_dict) == ["x", "deployed"]
    net = caffe.Net(str(path), caffe.TRAIN, level=2, stages=["deploy"])
    assert [name for name, l in net.layer_dict.items() if l.type != "Split"] == ["x", "deployed", "expert"]
    positional = caffe.Net(str(path), caffe.TRAIN, 2, ["deploy"])       # the boost signature's order
    assert list(positional.layer_dict) == list(net.layer_dict)
    out = net.forward(x=np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(out["z"], 2 * np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(out["y"], np.arange(6.0).reshape(2, 3))


def test_missing_files_and_bad_phase_are_named(nets, tmp_path):
    model = str(nets / "lenet_test.prototxt")
    with pytest.raises(BrewnetError, match="Could not open file .*nope.prototxt"):
        caffe.Net(str(tmp_path / "nope.prototxt"), caffe.TEST)
    with pytest.raises(BrewnetError, match="Could not open file .*missing.caffemodel"):
        caffe.Net(model, caffe.TEST, weights=str(tmp_path / "missing.caffemodel"))
    with pytest.raises(BrewnetError, match="phase"):
        caffe.Net(model, 7)
    with pytest.raises(BrewnetError, match="needs a phase"):
        caffe.Net(model)


# --- structure -------------------------------------------------------------------------------------------------
def test_structure_matches_caffe(nets):
    import json
    spec = json.loads((nets / "lenet_test.json").read_text())
    net = caffe.Net(str(nets / "lenet_test.prototxt"), caffe.TEST)
    assert list(net.blobs) == list(spec["blobs"])
    for name, shape in spec["blobs"].items():
        assert net.blobs[name].shape == tuple(shape) == net.blobs[name].data.shape
    assert net.inputs == ["data", "label"] and net.outputs == ["accuracy", "loss"]
    assert list(net.params) == list(spec["params"])
    assert [len(v) for v in net.params.values()] == [2, 2, 2, 2]
    assert list(net.layer_dict) == net._layer_names and len(net.layers) == len(net._layer_names)
    assert [l.type for l in net.layers][:3] == ["Input", "Input", "Split"]
    assert net.layer_dict["conv1"].blobs[0].data is not None
    assert net.blob_loss_weights["loss"] == 1.0 and net.blob_loss_weights["accuracy"] == 0.0
    assert net.top_names["relu1"] == ["ip1"] and net.bottom_names["relu1"] == ["ip1"]
    assert net.bottom_names["loss"] == ["ip2_ip2_0_split_1", "label_label_0_split_1"]
    conv1 = net.blobs["conv1"]
    assert (conv1.num, conv1.channels, conv1.height, conv1.width, conv1.count) == (64, 20, 24, 24, 64 * 20 * 24 * 24)
    assert net.blobs["ip1"].height == 1 and net.blobs["label"].channels == 1


# --- forward / backward against Caffe ---------------------------------------------------------------------------
def test_forward_with_inputs_matches_caffe(nets, digits):
    ref = np.load(nets / "lenet_test.npz")
    net = caffe.Net(str(nets / "lenet_test.prototxt"), caffe.TEST, weights=str(nets / "lenet_test.caffemodel"))
    out = net.forward(data=digits["data"], label=digits["label"])
    assert set(out) == {"accuracy", "loss"}
    np.testing.assert_allclose(out["loss"], ref["data/loss"], rtol=1e-4)
    np.testing.assert_allclose(out["accuracy"], ref["data/accuracy"], rtol=1e-6)
    np.testing.assert_allclose(net.blobs["ip2"].data, ref["data/ip2"], rtol=1e-4, atol=1e-5)
    extra = net.forward(blobs=["ip1", "conv1"])
    assert set(extra) == {"accuracy", "loss", "ip1", "conv1"}
    np.testing.assert_allclose(extra["conv1"], ref["data/conv1"], rtol=1e-4, atol=1e-5)


def test_backward_matches_caffe(nets):
    ref = np.load(nets / "lenet_train.npz")
    inputs = np.load(nets / "lenet_train.inputs.npz")
    net = caffe.Net(str(nets / "lenet_train.prototxt"), caffe.TRAIN,
                    weights=str(nets / "lenet_train.caffemodel"))
    net.forward(data=inputs["data"], label=inputs["label"])
    grads = net.backward(diffs=["conv1"])
    assert set(grads) == {"data", "label", "conv1"}
    np.testing.assert_allclose(grads["conv1"], ref["diff/conv1"], rtol=1e-4, atol=1e-6)
    for layer, blobs in net.params.items():
        for i, blob in enumerate(blobs):
            np.testing.assert_allclose(blob.diff, ref[f"param_diff/{layer}/{i}"], rtol=1e-3, atol=1e-6)
    net.clear_param_diffs()
    assert all(not b.diff.any() for blobs in net.params.values() for b in blobs)


def test_forward_and_backward_start_end(deploy, nets, digits):
    net = caffe.Net(deploy, caffe.TEST, weights=str(nets / "lenet_test.caffemodel"))
    net.forward(data=digits["data"])
    pool2 = np.random.RandomState(0).rand(*net.blobs["pool2"].shape).astype(np.float32)
    net.blobs["pool2"].data[...] = pool2
    out = net.forward(start="ip1", end="ip1")
    assert list(out) == ["ip1"]
    w, b = net.params["ip1"][0].data, net.params["ip1"][1].data
    np.testing.assert_allclose(out["ip1"], pool2.reshape(64, -1) @ w.T + b, rtol=1e-4, atol=1e-5)  # relu1 not run
    # backward through ip2 alone: bottom diff = top diff . W
    top_diff = np.random.RandomState(1).randn(64, 10).astype(np.float32)
    net.blobs["ip2"].diff[...] = top_diff
    grads = net.backward(start="ip2", end="ip2")
    assert list(grads) == ["ip1"]
    np.testing.assert_allclose(grads["ip1"], top_diff @ net.params["ip2"][0].data, rtol=1e-4, atol=1e-5)


def test_backward_with_top_diffs(tmp_path):
    net = linear_net(tmp_path, 3, 4)
    x = np.arange(12.0).reshape(3, 4)
    dy = np.array([[1.0, 2.0], [0.0, -1.0], [3.0, 0.5]])
    net.forward(x=x)
    grads = net.backward(y=dy)
    np.testing.assert_allclose(grads["x"], dy @ net.params["ip"][0].data, rtol=1e-6)
    np.testing.assert_allclose(net.params["ip"][0].diff, dy.T @ x, rtol=1e-6)
    with pytest.raises(BrewnetError, match=r"'y' of shape \(3, 2\), Actual: an array of shape \(3, 3\)"):
        net.backward(y=np.zeros((3, 3)))
    with pytest.raises(KeyError, match="'x' is a blob of this net but not one of its output blobs"):
        net.backward(x=np.zeros((3, 4)))


# --- NumPy views write through ---------------------------------------------------------------------------------
def test_numpy_writes_reach_the_net(deploy):
    net = caffe.Net(deploy, caffe.TEST)
    data = net.blobs["data"].data           # a view held across calls, as scripts do
    data[...] = 0.5
    net.params["conv1"][0].data[...] = 1        # deploy net without fillers: zeros until we write
    w = net.params["ip2"][0].data
    w[...] = 0
    net.params["ip2"][1].data[...] = np.arange(10, dtype=np.float32)
    out = net.forward()["prob"]
    expected = np.exp(np.arange(10)) / np.exp(np.arange(10)).sum()
    np.testing.assert_allclose(out, np.tile(expected, (64, 1)), rtol=1e-5)
    np.testing.assert_allclose(net.blobs["conv1"].data, 0.5 * 25)      # 5x5 ones over the 0.5 input
    # in-place writes into a parameter are seen by the next forward as well
    net.layer_dict["ip2"].blobs[1].data[...] = 0
    np.testing.assert_allclose(net.forward()["prob"], 0.1, rtol=1e-6)


def test_blob_reshape_keeps_views_coherent(deploy, nets, digits):
    net = caffe.Net(deploy, caffe.TEST, weights=str(nets / "lenet_test.caffemodel"))
    batch = net.forward(data=digits["data"])["prob"].copy()
    net.blobs["data"].reshape(2, 1, 28, 28)
    net.reshape()
    assert net.blobs["data"].data.shape == (2, 1, 28, 28) and net.blobs["prob"].shape == (2, 10)
    net.blobs["data"].data[...] = digits["data"][5:7]
    np.testing.assert_allclose(net.forward()["prob"], batch[5:7], rtol=1e-4, atol=1e-6)
    net.blobs["data"].reshape((1, 1, 28, 28))       # a tuple works too
    net.reshape()
    np.testing.assert_allclose(net.forward(data=digits["data"][9:10])["prob"], batch[9:10], rtol=1e-4, atol=1e-6)


FEATURES_NET = """
force_backward: %s
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 9 dim: 9 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.3 }
                            bias_filler { type: "constant" value: 0.1 } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "norm1" type: "LRN" bottom: "pool1" top: "norm1" lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 } }
layer { name: "pool2" type: "Pooling" bottom: "norm1" top: "pool2" pooling_param { pool: AVE kernel_size: 2 stride: 1 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.3 } } }
"""
FEATURES = ["conv1", "pool1", "norm1", "pool2", "ip1"]


@pytest.mark.parametrize("force_backward", ["false", "true"])     # forward-only net, and one with backward
def test_held_feature_arrays_see_the_next_forward(tmp_path, force_backward):
    """`feat = net.blobs['conv1'].data` held across net.forward(): Caffe computes into the same memory, so the
    array shows the new values (not the first forward's)."""
    path = tmp_path / "features.prototxt"
    path.write_text(FEATURES_NET % force_backward)
    net = caffe.Net(str(path), caffe.TEST)
    rng = np.random.default_rng(3)
    x1, x2 = rng.standard_normal((2, 2, 3, 9, 9)).astype(np.float32)
    net.forward(data=x1)
    held = {name: net.blobs[name].data for name in FEATURES}
    first = {name: array.copy() for name, array in held.items()}
    net.forward(data=x2)
    for name in FEATURES:
        np.testing.assert_array_equal(held[name], net.blobs[name].data)
        assert np.abs(held[name] - first[name]).max() > 1e-3, name
    w, b = (torch.from_numpy(p.data.copy()) for p in net.params["conv1"])
    expected = F.conv2d(torch.from_numpy(x2), w, b)
    np.testing.assert_allclose(held["conv1"], expected.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(held["pool1"], F.max_pool2d(expected, 3, 2, ceil_mode=True).numpy(), rtol=1e-6)


def test_held_diff_arrays_see_the_next_backward(tmp_path):
    path = tmp_path / "features.prototxt"
    path.write_text(FEATURES_NET % "true")
    net = caffe.Net(str(path), caffe.TEST)
    rng = np.random.default_rng(4)
    net.forward(data=rng.standard_normal((2, 3, 9, 9)))
    net.backward(ip1=rng.standard_normal((2, 5)))
    names = ["data"] + FEATURES[:-1]
    held = {name: net.blobs[name].diff for name in names}
    first = {name: array.copy() for name, array in held.items()}
    grads = net.backward(ip1=rng.standard_normal((2, 5)))
    for name in names:
        np.testing.assert_array_equal(held[name], net.blobs[name].diff)
        assert np.abs(held[name] - first[name]).max() > 1e-6, name
    np.testing.assert_array_equal(grads["data"], held["data"])


def test_parameter_top_diff_is_the_parameter_gradient(tmp_path):
    """A Parameter layer's top shares the parameter's data and diff: the consumer's bottom gradient is the
    parameter's diff, in the same memory (Caffe's ShareDiff)."""
    path = tmp_path / "param.prototxt"
    path.write_text("""force_backward: true
        layer { name: "w" type: "Parameter" top: "w" parameter_param { shape { dim: 2 dim: 3 dim: 5 dim: 5 } } }
        layer { name: "conv" type: "Convolution" bottom: "w" top: "y"
                convolution_param { num_output: 2 kernel_size: 3 weight_filler { type: "gaussian" } } }
        layer { name: "loss" type: "Reduction" bottom: "y" top: "loss" reduction_param { operation: SUMSQ }
                loss_weight: 1 }""")
    net = caffe.Net(str(path), caffe.TRAIN)
    values = np.random.default_rng(5).standard_normal((2, 3, 5, 5)).astype(np.float32)
    net.params["w"][0].data[...] = values
    for _ in range(2):          # bottom diffs are overwritten: the same gradient both times
        net.forward()
        net.backward()
    w = torch.from_numpy(values).requires_grad_()
    kernel, bias = (torch.from_numpy(p.data.copy()) for p in net.params["conv"])
    (F.conv2d(w, kernel, bias) ** 2).sum().backward()
    np.testing.assert_allclose(net.params["w"][0].diff, w.grad.numpy(), rtol=1e-5, atol=1e-5)
    assert np.shares_memory(net.blobs["w"].diff, net.params["w"][0].diff)
    assert np.shares_memory(net.blobs["w"].data, net.params["w"][0].data)


# --- bad input ----------------------------------------------------------------------------------------------------
def test_wrong_input_shape_names_blob_and_shapes(deploy):
    net = caffe.Net(deploy, caffe.TEST)
    before = net.blobs["data"].data.copy()
    with pytest.raises(BrewnetError) as error:
        net.forward(data=np.ones((64, 1, 28, 27), np.float32))
    message = str(error.value)
    assert "'data'" in message and "(64, 1, 28, 28)" in message and "(64, 1, 28, 27)" in message
    with pytest.raises(BrewnetError, match=r"\(64, 1, 28, 28\).*\(10, 1, 28, 28\)"):
        net.forward(data=np.ones((10, 1, 28, 28)))
    np.testing.assert_array_equal(net.blobs["data"].data, before)      # nothing written on error


def test_unknown_names_are_clear(deploy):
    net = caffe.Net(deploy, caffe.TEST)
    with pytest.raises(KeyError, match="has no blob named 'fc7'.*known: data, conv1"):
        net.blobs["fc7"]
    with pytest.raises(KeyError, match="has no layer with parameters named 'pool1'"):
        net.params["pool1"]
    with pytest.raises(KeyError, match="'label' is not one of the input blobs of net 'LeNet' \\(data\\)"):
        net.forward(label=np.zeros(64))
    with pytest.raises(KeyError, match="'conv1' is a blob of this net but not one of its input blobs"):
        net.forward(conv1=np.zeros((64, 20, 24, 24)))
    with pytest.raises(KeyError, match="forward\\(blobs=...\\): net 'LeNet' has no blob named 'fc8'"):
        net.forward(blobs=["fc8"])
    with pytest.raises(KeyError, match="forward\\(start=...\\): net 'LeNet' has no layer named 'conv9'"):
        net.forward(start="conv9")
    assert "fc7" not in net.blobs and "conv1" in net.blobs


# --- weights -------------------------------------------------------------------------------------------------------
def test_save_copy_from_hdf5_and_share_with(deploy, nets, tmp_path):
    trained = caffe.Net(deploy, caffe.TEST, weights=str(nets / "lenet_test.caffemodel"))
    trained.params["ip2"][1].data[...] = np.arange(10)
    trained.save(str(tmp_path / "w.caffemodel"))
    trained.save_hdf5(str(tmp_path / "w.caffemodel.h5"))
    for load in ("copy_from", "load_hdf5"):
        net = caffe.Net(deploy, caffe.TEST)
        getattr(net, load)(str(tmp_path / ("w.caffemodel" if load == "copy_from" else "w.caffemodel.h5")))
        for name in trained.params:
            for a, b in zip(trained.params[name], net.params[name]):
                np.testing.assert_array_equal(a.data, b.data)
    shared = caffe.Net(deploy, caffe.TEST)
    shared.share_with(trained)
    trained.params["conv1"][0].data[...] = 0.25
    np.testing.assert_array_equal(shared.params["conv1"][0].data, 0.25)


def test_net_callbacks_see_every_layer(deploy):
    net = caffe.Net(deploy, caffe.TEST)
    seen = []
    net.before_forward(lambda i: seen.append(("before", i)))
    net.after_forward(lambda i: seen.append(("after", i)))
    net.forward()
    n = len(net.layers)
    assert seen == [(w, i) for i in range(n) for w in ("before", "after")]


# --- module-level API ----------------------------------------------------------------------------------------------
def test_module_level_names():
    assert (caffe.TRAIN, caffe.TEST) == (0, 1)
    assert caffe.__version__ == "1.0.0"
    types = caffe.layer_type_list()
    assert {"Convolution", "Python", "MemoryData", "Data", "SoftmaxWithLoss"} <= set(types)
    assert types == sorted(types)
    caffe.set_mode_cpu()
    caffe.set_device(0)
    caffe.set_random_seed(5)
    a = np.random.rand()
    caffe.set_random_seed(5)
    assert np.random.rand() == a
    assert caffe.proto.caffe_pb2.NetParameter is caffe_pb2.NetParameter
    timer = caffe.Timer()
    timer.start()
    sum(range(10000))
    timer.stop()
    assert 0 < timer.ms < 5000 and timer.ms == timer.ms    # stopped: the reading stays fixed
    caffe.init_log(0)
    caffe.log("hello from pycaffe")
    caffe.init_log()            # back to the GLOG_minloglevel default


def test_fillers_are_reproducible_with_set_random_seed(nets):
    model = str(nets / "lenet_test.prototxt")           # xavier fillers
    caffe.set_random_seed(42)
    a = caffe.Net(model, caffe.TEST).params["conv1"][0].data.copy()
    caffe.set_random_seed(42)
    b = caffe.Net(model, caffe.TEST).params["conv1"][0].data
    np.testing.assert_array_equal(a, b)
    caffe.set_random_seed(43)
    assert not np.array_equal(a, caffe.Net(model, caffe.TEST).params["conv1"][0].data)


def vis_square(data):
    """The book's / Caffe notebook's tiling of n feature maps into a sqrt(n) x sqrt(n) grid (1-pixel white gaps)."""
    data = (data - data.min()) / (data.max() - data.min())
    n = int(np.ceil(np.sqrt(data.shape[0])))
    padding = (((0, n ** 2 - data.shape[0]), (0, 1), (0, 1)) + ((0, 0),) * (data.ndim - 3))
    data = np.pad(data, padding, mode='constant', constant_values=1)
    data = data.reshape((n, n) + data.shape[1:]).transpose((0, 2, 1, 3) + tuple(range(4, data.ndim + 1)))
    return data.reshape((n * data.shape[1], n * data.shape[3]) + data.shape[4:])


def test_vis_square_loop_writes_one_png_per_4d_blob(deploy, nets, digits, tmp_path):
    from PIL import Image
    net = caffe.Net(deploy, caffe.TEST, weights=str(nets / "lenet_test.caffemodel"))
    net.forward(data=digits["data"])
    written = []
    for name, blob in net.blobs.items():
        if blob.data.ndim == 4:
            tiles = vis_square(blob.data[0])
            Image.fromarray((tiles * 255).round().astype(np.uint8)).save(tmp_path / f"{name}.png")
            written.append(name)
    assert written == ["data", "conv1", "pool1", "conv2", "pool2"]
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(f"{n}.png" for n in written)
    conv1 = np.asarray(Image.open(tmp_path / "conv1.png"))
    assert conv1.shape == (5 * 25, 5 * 25)                  # 20 maps of 24 x 24 in a 5 x 5 grid
    maps = net.blobs["conv1"].data[0]
    expected = (maps[7] - maps.min()) / (maps.max() - maps.min()) * 255   # map 7: grid row 1, column 2
    np.testing.assert_allclose(conv1[25:49, 50:74], expected, atol=0.51)
    assert (conv1[24, :] == 255).all()                      # the white gap between rows of the grid
