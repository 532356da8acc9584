"""CenterLoss (brewnet/layers/center_loss.py): forward by hand, the float64 feature gradient, the centers'
update against a NumPy transcription of caffe-face's loops, both parameter dialects, and the user's errors."""
import numpy as np
import pytest
import torch

import brewnet.layers  # noqa: F401  (registers the layer types)
from brewnet.core.registry import create_layer
from brewnet.errors import LayerError
from brewnet.proto import caffe_pb2
from tests.layers.helpers import blob, check_layer, make_layer

CAFFE_FACE = 'type: "CenterLoss" center_loss_param { num_output: 3 center_filler { type: "gaussian" } }'
X = [[1.0, 2.0], [0.0, -1.0], [3.0, 1.0], [2.0, 2.0]]
Y = [0.0, 2.0, 0.0, 1.0]
C = [[1.0, 1.0], [0.0, 0.0], [-1.0, 2.0]]


def caffe_face_center_diff(x, y, centers, alpha=1.0):
    """caffe-face's Backward_cpu for the centers, loop by loop: for class n, sum (c_n - x_m) over the samples
    m of class n, divided by 1 + their count."""
    diff = np.zeros_like(centers)
    for n in range(centers.shape[0]):
        variation, count = np.zeros(centers.shape[1]), 0
        for m in range(x.shape[0]):
            if int(y[m]) == n:
                count += 1
                variation -= x[m] - centers[n]
        diff[n] += alpha * variation / (count + 1.0)
    return diff


def run(text, x=X, y=Y, centers=C, top_diff=None):
    layer = make_layer(text)
    bottom, top = [blob(x), blob(y, "label")], [blob(0.0, "loss")]
    layer.setup(bottom, top)
    layer.blobs[0].data.copy_(torch.tensor(centers))
    loss = layer.Forward(bottom, top)
    if top_diff is not None:
        top[0].diff.fill_(top_diff)
    layer.blobs[0].diff.zero_()
    layer.Backward(top, [True, False], bottom)
    return layer, bottom, top, loss


def test_forward_and_feature_gradient_by_hand():
    layer, bottom, top, loss = run(CAFFE_FACE, top_diff=2.0)
    # x_i - c_{y_i}: (0, 1), (1, -3), (2, 0), (2, 2) -> squares 1 + 10 + 4 + 8 = 23; / (2 * 4)
    assert loss == pytest.approx(2.875) and top[0].data.item() == pytest.approx(2.875)
    np.testing.assert_allclose(bottom[0].diff.numpy(), 2.0 / 4 * np.array([[0, 1], [1, -3], [2, 0], [2, 2]]))
    assert layer.blobs[0].shape == (3, 2) and layer.allow_force_backward(0)
    assert not layer.allow_force_backward(1)


def test_checks_float64_feature_gradient_and_recording():
    x = torch.randn(6, 2, 3, dtype=torch.float64)           # axis 1: D = 6
    labels = torch.tensor([0., 2, 2, 1, 0, 2], dtype=torch.float64)
    check_layer(CAFFE_FACE, [x, labels], [()], grad_bottoms=[0], param_gradients=False,
                oracle=lambda x, y, p: ((x.reshape(6, 6) - p[0][y.long()]) ** 2).sum() / 12)


def test_centers_update_equals_caffe_face_loops_and_accumulates():
    rng = np.random.RandomState(0)
    x, centers = rng.randn(9, 4), rng.randn(5, 4)
    y = np.array([0, 3, 3, 1, 0, 3, 4, 1, 3], dtype=np.float64)      # class 2 absent: no update
    text = 'type: "CenterLoss" center_loss_param { cluster_num: 5 alpha: 0.5 }'
    layer, bottom, top, _ = run(text, x, y, centers, top_diff=7.0)  # the loss weight does not scale it
    expected = caffe_face_center_diff(x, y, centers, alpha=0.5)
    np.testing.assert_allclose(layer.blobs[0].diff.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert not expected[2].any()
    layer.Backward(top, [False, False], bottom)                      # parameter diffs add up (iter_size)
    np.testing.assert_allclose(layer.blobs[0].diff.numpy(), 2 * expected, rtol=1e-5, atol=1e-6)


def test_book_and_caffe_face_dialects_mean_the_same():
    book = 'type: "CenterLoss" center_loss_param { loss_weight: 0.003 alpha: 0.5 cluster_num: 3 }'
    face = 'type: "CenterLoss" loss_weight: 0.003 center_loss_param { num_output: 3 alpha: 0.5 }'
    a, b = run(book, top_diff=None), run(face, top_diff=None)
    assert a[0].loss_weights == b[0].loss_weights == [pytest.approx(0.003)]
    assert a[3] == pytest.approx(b[3]) == pytest.approx(0.003 * 2.875)
    np.testing.assert_array_equal(a[0].blobs[0].diff.numpy(), b[0].blobs[0].diff.numpy())
    np.testing.assert_allclose(a[1][0].diff.numpy(), b[1][0].diff.numpy())
    same = 'type: "CenterLoss" loss_weight: 0.5 center_loss_param { num_output: 3 cluster_num: 3 loss_weight: 0.5 }'
    assert run(same)[0].loss_weights == [0.5]


def test_default_filler_is_zero_centers():
    layer = make_layer('type: "CenterLoss" center_loss_param { num_output: 4 }')
    layer.setup([blob(X), blob(Y)], [blob(0.0)])
    assert layer.blobs[0].shape == (4, 2) and not layer.blobs[0].data.any()


@pytest.mark.parametrize("text, message", [
    ('center_loss_param { num_output: 3 cluster_num: 4 }',
     r"num_output and cluster_num to agree .*num_output 3, cluster_num 4"),
    ('center_loss_param { alpha: 0.5 }', r"num_output \(caffe-face\) or cluster_num \(the book\)"),
    ('center_loss_param { num_output: 0 }', r"number of classes > 0, Actual: 0"),
    ('center_loss_param { num_output: 3 alpha: -1 }', r"alpha >= 0, Actual: -1"),
    ('loss_weight: 1 center_loss_param { num_output: 3 loss_weight: 0.01 }',
     r"loss_weight and center_loss_param.loss_weight to agree.*Actual: 1 and 0.01$"),
])
def test_contradictory_or_missing_parameters_name_the_layer(text, message):
    layer = make_layer('type: "CenterLoss" ' + text)
    with pytest.raises(LayerError, match=message) as info:
        layer.setup([blob(X), blob(Y)], [blob(0.0)])
    assert "'L'" in str(info.value) and "CenterLoss" in str(info.value)


def test_label_out_of_range_names_the_layer_and_the_value():
    with pytest.raises(LayerError, match=r"label values in \[0, 3\), Actual: label value 3 \(bottom 1\)"):
        run(CAFFE_FACE, y=[0.0, 3.0, 1.0, 1.0])
    with pytest.raises(LayerError, match=r"Actual: label value -1"):
        run(CAFFE_FACE, y=[0.0, 1.0, -1.0, 1.0])


def test_shapes_and_label_backward_are_refused():
    layer, bottom, top, _ = run(CAFFE_FACE)
    with pytest.raises(LayerError, match=r"cannot backpropagate to label inputs \(bottom 1\)"):
        layer.Backward(top, [True, True], bottom)
    with pytest.raises(LayerError, match=r"one label per feature \(4\), Actual: 3"):
        layer.Forward([blob(X), blob(Y[:3])], top)
    with pytest.raises(LayerError, match=r"features of 2 values .*Actual: 3"):
        layer.Forward([blob([[1.0, 2, 3]] * 4), blob(Y)], top)
    loaded = make_layer(CAFFE_FACE)
    loaded.blobs = [blob(np.zeros((4, 2)))]
    with pytest.raises(LayerError, match=r"one centers blob of shape \(3, 2\), Actual: 1 blob\(s\), the "
                                         r"first of shape \(4, 2\)"):
        loaded.setup([blob(X), blob(Y)], [blob(0.0)])


def test_a_caffe_face_binary_net_field_147_is_read_as_center_loss_param():
    face = caffe_pb2.CenterLossParameter(num_output=3, axis=1)
    face.center_filler.type = "constant"
    face.center_filler.value = 0.25
    payload = face.SerializeToString()
    tag = bytes([(147 << 3 | 2) & 0x7F | 0x80, (147 << 3 | 2) >> 7])      # field 147, length-delimited
    head = caffe_pb2.LayerParameter(name="L", type="CenterLoss").SerializeToString()
    param = caffe_pb2.LayerParameter.FromString(head + tag + bytes([len(payload)]) + payload)
    assert param.HasField("swish_param") and not param.HasField("center_loss_param")   # what protobuf sees
    layer = create_layer(param)
    layer.setup([blob(X), blob(Y)], [blob(0.0)])
    assert layer.num_classes == 3 and not layer.param.HasField("swish_param")
    np.testing.assert_array_equal(layer.blobs[0].data.numpy(), np.full((3, 2), 0.25))
