"""Loss layers: hand-computed losses and gradients, normalization modes, label checks, float64 gradient
checks (w.r.t. the prediction), torch autograd as oracle, and Caffe's golden outputs."""
import math

import pytest
import torch
import torch.nn.functional as F

from brewnet.core.blob import Blob
from brewnet.core.gradient_check import GradientChecker
from brewnet.core.registry import create_layer
from brewnet.errors import LayerError
from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text, write_binary
from tests.layers.golden_case import golden_cases, run_golden_case


def make(text):
    return create_layer(parse_text('name: "L" ' + text, caffe_pb2.LayerParameter()))


def blob(values, dtype=None):
    if dtype is None:
        dtype = values.dtype if isinstance(values, torch.Tensor) else torch.float32
    t = torch.as_tensor(values, dtype=dtype)
    b = Blob(t.shape, dtype=t.dtype)
    b.data.copy_(t)
    return b


def run(layer, bottom, ntop=1, weight=None):
    """setup + Forward (+ Backward w.r.t. bottom 0 with the layer's own loss weight); returns the tops."""
    top = [Blob(dtype=bottom[0].dtype) for _ in range(ntop)]
    layer.setup(bottom, top)
    layer.Forward(bottom, top)
    if weight is not None:
        top[0].diff.fill_(weight)
        layer.Backward(top, [True] + [False] * (len(bottom) - 1), bottom)
    return top


def assert_close(actual, expected, rtol=1e-6, atol=1e-7):
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    assert torch.allclose(actual, expected, rtol=rtol, atol=atol), f"got {actual.tolist()}, want {expected.tolist()}"


def checker():
    return GradientChecker(stepsize=1e-3, threshold=1e-4)


# --- LossLayer base --------------------------------------------------------------------------------------

def test_loss_layer_defaults_weight_one_and_refuses_label_backward():
    layer = make('type: "SoftmaxWithLoss"')
    top = run(layer, [blob([[1.0, 2.0]]), blob([1.0])])
    assert layer.loss(0) == 1.0 and float(top[0].diff) == 1.0
    assert top[0].shape == ()
    assert layer.allow_force_backward(0) and not layer.allow_force_backward(1)
    with pytest.raises(LayerError, match="cannot backpropagate to label"):
        layer.Backward(top, [False, True], [blob([[1.0, 2.0]]), blob([1.0])])


def test_loss_layer_first_dimension_mismatch():
    with pytest.raises(LayerError, match=r"same first dimension.*\(2, 3\) vs\. \(3,\)"):
        run(make('type: "EuclideanLoss"'), [blob(torch.zeros(2, 3)), blob(torch.zeros(3))])


def test_explicit_loss_weight_scales_loss_and_gradient():
    layer = make('type: "EuclideanLoss" loss_weight: 2.5')
    a, b = blob([[1.0, 2.0]]), blob([[0.0, 0.0]])
    top = [Blob()]
    layer.setup([a, b], top)
    loss = layer.Forward([a, b], top)
    assert loss == pytest.approx(2.5 * 2.5)                   # 0.5 * (1 + 4) = 2.5, times weight 2.5
    layer.Backward(top, [True, True], [a, b])
    assert_close(a.diff, [[2.5, 5.0]])
    assert_close(b.diff, [[-2.5, -5.0]])


# --- SoftmaxWithLoss ---------------------------------------------------------------------------------------

def test_softmax_loss_hand_computed():
    x = blob([[0.0, 0.0, 0.0], [math.log(2.0), 0.0, 0.0]])
    label = blob([0.0, 1.0])
    top = run(make('type: "SoftmaxWithLoss"'), [x, label], weight=1.0)
    # p(row 0) = 1/3 each; p(row 1) = [1/2, 1/4, 1/4], label 1 -> 1/4.  VALID: divide by 2.
    assert float(top[0].data) == pytest.approx((math.log(3) + math.log(4)) / 2, rel=1e-6)
    assert_close(x.diff, [[(1 / 3 - 1) / 2, 1 / 6, 1 / 6], [0.5 / 2, (0.25 - 1) / 2, 0.25 / 2]])


@pytest.mark.parametrize("loss_param, divisor", [
    ("", 2.0),                                   # VALID (default): 2 non-ignored labels
    ("normalization: VALID", 2.0),
    ("normalization: FULL", 3.0),                # every position, ignored ones included
    ("normalization: BATCH_SIZE", 1.0),          # outer_num = 1
    ("normalization: NONE", 1.0),
    ("normalize: true", 2.0),                    # legacy -> VALID
    ("normalize: false", 1.0),                   # legacy -> BATCH_SIZE
])
def test_softmax_loss_normalization(loss_param, divisor):
    # One image, 2 classes, 3 positions; all scores 0 -> p = 1/2 everywhere; the third label is ignored.
    x = blob(torch.zeros(1, 2, 3))
    label = blob([[0.0, 1.0, 255.0]])
    layer = make(f'type: "SoftmaxWithLoss" loss_param {{ ignore_label: 255 {loss_param} }}')
    top = run(layer, [x, label], weight=1.0)
    assert float(top[0].data) == pytest.approx(2 * math.log(2) / divisor, rel=1e-6)
    expected = torch.tensor([[[-0.5, 0.5, 0.0], [0.5, -0.5, 0.0]]]) / divisor
    assert torch.allclose(x.diff, expected)


def test_softmax_loss_all_ignored_is_zero_not_nan():
    x, label = blob(torch.randn(2, 3)), blob([4.0, 4.0])
    top = run(make('type: "SoftmaxWithLoss" loss_param { ignore_label: 4 }'), [x, label], weight=1.0)
    assert float(top[0].data) == 0.0
    assert torch.equal(x.diff, torch.zeros(2, 3))


def test_softmax_loss_label_out_of_range_names_value_and_layer():
    layer = make('type: "SoftmaxWithLoss" bottom: "fc" bottom: "label"')
    x, label = blob(torch.randn(3, 4)), blob([1.0, 7.0, 2.0])
    top = [Blob()]
    layer.setup([x, label], top)
    with pytest.raises(LayerError, match=r"layer 'L'.*\[0, 4\).*label value 7.*'label'"):
        layer.Forward([x, label], top)
    label.data.copy_(torch.tensor([1.0, -1.0, 2.0]))
    with pytest.raises(LayerError, match="label value -1"):
        layer.Forward([x, label], top)


def test_softmax_loss_label_count_mismatch():
    with pytest.raises(LayerError, match="number of labels"):
        run(make('type: "SoftmaxWithLoss"'), [blob(torch.zeros(2, 3, 2)), blob(torch.zeros(2))])


def test_softmax_loss_prob_top():
    x, label = blob(torch.randn(2, 3, 2)), blob([[0.0, 2.0], [1.0, 1.0]])
    top = run(make('type: "SoftmaxWithLoss" loss_weight: 1 loss_weight: 0'), [x, label], ntop=2)
    assert top[1].shape == (2, 3, 2)
    assert torch.allclose(top[1].data, torch.softmax(x.data, dim=1))


@pytest.mark.parametrize("text, shape, labels", [
    ('type: "SoftmaxWithLoss"', (1, 5), [3.0]),
    ('type: "SoftmaxWithLoss" loss_param { ignore_label: 0 }', (1, 3, 5), [[0.0, 1.0, 2.0, 0.0, 2.0]]),
    ('type: "SoftmaxWithLoss" softmax_param { axis: 2 }', (3, 1, 3), [[2.0], [0.0], [1.0]]),
])
def test_softmax_loss_gradient(float64, text, shape, labels):
    x, label = Blob(shape), blob(labels, torch.float64)
    x.data.normal_()
    checker().check_gradient(make(text), [x, label], [Blob()], check_bottom=0)


def test_softmax_loss_matches_autograd():
    x0 = torch.randn(2, 4, 3, dtype=torch.float64)
    labels = torch.tensor([[0, 3, 255], [2, 255, 1]])
    x, label = blob(x0), blob(labels.to(torch.float64))
    top = run(make('type: "SoftmaxWithLoss" loss_param { ignore_label: 255 }'), [x, label], weight=0.7)
    ref_x = x0.clone().requires_grad_()
    ref = F.cross_entropy(ref_x, labels, ignore_index=255, reduction="mean")
    (0.7 * ref).backward()
    assert float(top[0].data) == pytest.approx(ref.item(), rel=1e-10)
    assert torch.allclose(x.diff, ref_x.grad, atol=1e-12)


@pytest.mark.parametrize("shape", [(5, 7), (2, 4, 3)], ids=["one-kernel backward", "spatial"])
def test_softmax_loss_without_ignore_label_matches_autograd(shape):
    # Both backward paths of the all-labels case, a loss weight that is not 1, run twice (the one-kernel path
    # keeps a buffer whose label entries must be cleared between calls).
    layer = make('type: "SoftmaxWithLoss"')
    for seed in (0, 1):
        g = torch.Generator().manual_seed(seed)
        x0 = torch.randn(*shape, dtype=torch.float64, generator=g)
        labels = torch.randint(0, shape[1], (shape[0],) + shape[2:], generator=g)
        x, label = blob(x0), blob(labels.to(torch.float64))
        top = run(layer, [x, label], weight=0.7)
        ref_x = x0.clone().requires_grad_()
        ref = F.cross_entropy(ref_x, labels, reduction="mean")
        (0.7 * ref).backward()
        assert float(top[0].data) == pytest.approx(ref.item(), rel=1e-10)
        assert torch.allclose(x.diff, ref_x.grad, atol=1e-12)


# --- EuclideanLoss -----------------------------------------------------------------------------------------

def test_euclidean_hand_computed():
    a, b = blob([[1.0, 2.0], [3.0, 4.0]]), blob([[1.0, 0.0], [0.0, 4.0]])
    top = run(make('type: "EuclideanLoss"'), [a, b])
    assert float(top[0].data) == pytest.approx((4 + 9) / 2 / 2)


def test_euclidean_dimension_mismatch():
    with pytest.raises(LayerError, match="same dimension"):
        run(make('type: "EuclideanLoss"'), [blob(torch.zeros(2, 3)), blob(torch.zeros(2, 4))])


def test_euclidean_gradient(float64):
    a, b = Blob((1, 3, 1)), Blob((1, 3))
    a.data.normal_(), b.data.normal_()
    layer = make('type: "EuclideanLoss"')
    assert layer.allow_force_backward(1)          # the target may be learned too
    checker().check_gradient(layer, [a, b], [Blob()], check_bottom=0)
    checker().check_gradient(layer, [a, b], [Blob()], check_bottom=1)


# --- SigmoidCrossEntropyLoss -------------------------------------------------------------------------------

def test_sigmoid_ce_hand_computed_and_stable():
    x = blob([[0.0, 100.0], [-100.0, 2.0]])
    t = blob([[1.0, 0.0], [0.0, 1.0]])
    top = run(make('type: "SigmoidCrossEntropyLoss"'), [x, t], weight=1.0)
    # log 2 + 100 (confidently wrong, no overflow) + ~0 + log(1 + e^-2); BATCH_SIZE normalization by 2.
    expected = (math.log(2) + 100 + math.log1p(math.exp(-100)) + math.log1p(math.exp(-2))) / 2
    assert float(top[0].data) == pytest.approx(expected, rel=1e-6)
    sig2 = 1 / (1 + math.exp(-2))
    assert_close(x.diff, [[-0.25, 0.5], [0.0, (sig2 - 1) / 2]])


def test_sigmoid_ce_ignore_label_and_valid_normalization():
    x = blob([[0.0, 3.0, 0.0]])
    t = blob([[1.0, -1.0, 0.0]])
    layer = make('type: "SigmoidCrossEntropyLoss" loss_param { ignore_label: -1 normalization: VALID }')
    top = run(layer, [x, t], weight=1.0)
    assert float(top[0].data) == pytest.approx(math.log(2), rel=1e-6)     # 2 log 2 over 2 valid targets
    assert_close(x.diff, [[-0.25, 0.0, 0.25]])


def test_sigmoid_ce_count_mismatch():
    with pytest.raises(LayerError, match="same count"):
        run(make('type: "SigmoidCrossEntropyLoss"'), [blob(torch.zeros(2, 3)), blob(torch.zeros(2, 2))])


def test_sigmoid_ce_gradient(float64):
    x, t = Blob((1, 5)), Blob((1, 5))
    x.data.normal_(), t.data.uniform_()
    checker().check_gradient(make('type: "SigmoidCrossEntropyLoss"'), [x, t], [Blob()], check_bottom=0)


def test_sigmoid_ce_matches_autograd():
    x0, t0 = torch.randn(3, 5, dtype=torch.float64) * 4, torch.rand(3, 5, dtype=torch.float64)
    x, t = blob(x0), blob(t0)
    top = run(make('type: "SigmoidCrossEntropyLoss"'), [x, t], weight=2.0)
    ref_x = x0.clone().requires_grad_()
    ref = F.binary_cross_entropy_with_logits(ref_x, t0, reduction="sum") / 3
    (2.0 * ref).backward()
    assert float(top[0].data) == pytest.approx(ref.item(), rel=1e-10)
    assert torch.allclose(x.diff, ref_x.grad, atol=1e-12)


# --- HingeLoss ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("norm, loss, grad", [
    # margins: row 0 (label 0): [max(0,1-0.5), 1+(-2) -> 0, 1+0.5] = [0.5, 0, 1.5]
    #          row 1 (label 2): [1+0, 1+1, max(0, 1-3)] = [1, 2, 0]
    ("L1", (0.5 + 1.5 + 1 + 2) / 2, [[-0.5, 0.0, 0.5], [0.5, 0.5, 0.0]]),
    ("L2", (0.25 + 2.25 + 1 + 4) / 2, [[-0.5, 0.0, 1.5], [1.0, 2.0, 0.0]]),
])
def test_hinge_hand_computed(norm, loss, grad):
    x, label = blob([[0.5, -2.0, 0.5], [0.0, 1.0, 3.0]]), blob([0.0, 2.0])
    top = run(make(f'type: "HingeLoss" hinge_loss_param {{ norm: {norm} }}'), [x, label], weight=1.0)
    assert float(top[0].data) == pytest.approx(loss)
    assert_close(x.diff, grad)


def test_hinge_label_errors():
    with pytest.raises(LayerError, match="label value 3"):
        run(make('type: "HingeLoss"'), [blob(torch.zeros(2, 3)), blob([0.0, 3.0])])
    with pytest.raises(LayerError, match="one label per sample"):
        run(make('type: "HingeLoss"'), [blob(torch.zeros(2, 3)), blob(torch.zeros(2, 2))])


@pytest.mark.parametrize("norm", ["L1", "L2"])
def test_hinge_gradient(float64, norm):
    x, label = Blob((1, 5)), blob([3.0], torch.float64)
    x.data.copy_(torch.tensor([[0.3, -1.7, 0.6, 0.2, -0.4]]))   # no margin exactly at its kink
    checker().check_gradient(make(f'type: "HingeLoss" hinge_loss_param {{ norm: {norm} }}'),
                             [x, label], [Blob()], check_bottom=0)


# --- ContrastiveLoss ---------------------------------------------------------------------------------------

def contrastive(legacy, margin=1.0):
    return make(f'type: "ContrastiveLoss" contrastive_loss_param {{ margin: {margin} '
                f'legacy_version: {str(legacy).lower()} }}')


def test_contrastive_hand_computed():
    a = blob([[[[0.0]], [[0.0]]], [[[0.0]], [[0.0]]], [[[0.0]], [[0.0]]]])
    b = blob([[[[0.3]], [[0.4]]], [[[0.3]], [[0.4]]], [[[3.0]], [[4.0]]]])   # distances 0.5, 0.5, 5
    sim = blob([[[[1.0]]], [[[0.0]]], [[[0.0]]]])
    top = run(contrastive(False), [a, b, sim])
    # similar: d^2 = 0.25; dissimilar within margin: (1 - 0.5)^2; beyond margin: 0.  Over 2N = 6.
    assert float(top[0].data) == pytest.approx((0.25 + 0.25) / 6)
    top = run(contrastive(True), [a, b, sim])
    assert float(top[0].data) == pytest.approx((0.25 + 0.75) / 6)      # legacy: max(1 - d^2, 0)
    assert not contrastive(False).allow_force_backward(2)


def test_contrastive_bad_shape():
    with pytest.raises(LayerError, match="N x C x 1 x 1"):
        run(contrastive(False), [blob(torch.zeros(2, 3, 2, 1)), blob(torch.zeros(2, 3, 2, 1)),
                                 blob(torch.zeros(2, 1, 1, 1))])


@pytest.mark.parametrize("legacy", [False, True])
def test_contrastive_gradient(float64, legacy):
    a, b = Blob((5, 3, 1, 1)), Blob((5, 3, 1, 1))
    a.data.normal_(std=0.4), b.data.normal_(std=0.4)
    sim = blob([[[[1.0]]], [[[0.0]]], [[[0.0]]], [[[1.0]]], [[[0.0]]]], torch.float64)
    layer = contrastive(legacy, margin=1.5)
    # Caffe divides the dissimilar gradient by (d + 1e-4), not d: the numeric gradient differs by ~1e-4.
    check = checker() if legacy else GradientChecker(stepsize=1e-3, threshold=1e-3)
    check.check_gradient(layer, [a, b, sim], [Blob()], check_bottom=0)
    check.check_gradient(layer, [a, b, sim], [Blob()], check_bottom=1)


# --- InfogainLoss ------------------------------------------------------------------------------------------

def test_infogain_identity_equals_softmax_loss():
    x0 = torch.randn(3, 4)
    label = blob([0.0, 3.0, 1.0])
    x1, x2 = blob(x0), blob(x0)
    info = run(make('type: "InfogainLoss"'), [x1, label, blob(torch.eye(4))], weight=1.0)
    soft = run(make('type: "SoftmaxWithLoss"'), [x2, label], weight=1.0)
    assert float(info[0].data) == pytest.approx(float(soft[0].data), rel=1e-6)
    assert torch.allclose(x1.diff, x2.diff, atol=1e-7)


def test_infogain_matrix_from_source(tmp_path):
    H = torch.tensor([[1.0, 0.5], [0.0, 2.0]])
    proto = Blob((1, 1, 2, 2)).to_proto()
    proto.ClearField("data")
    proto.data.extend(H.reshape(-1).tolist())
    path = tmp_path / "H.binaryproto"
    write_binary(proto, str(path))
    x, label = blob([[0.0, math.log(3.0)]]), blob([0.0])          # p = [1/4, 3/4]
    top = run(make(f'type: "InfogainLoss" infogain_loss_param {{ source: "{path}" }}'), [x, label], weight=1.0)
    assert float(top[0].data) == pytest.approx(-(math.log(0.25) + 0.5 * math.log(0.75)), rel=1e-6)
    # dE/dx = p * rowsum(H[l]) - H[l] = [1/4, 3/4] * 1.5 - [1, 0.5]
    assert_close(x.diff, [[0.375 - 1, 1.125 - 0.5]])


def test_infogain_missing_source_and_bad_matrix():
    with pytest.raises(LayerError, match="infogain_loss_param.source"):
        run(make('type: "InfogainLoss"'), [blob(torch.zeros(2, 3)), blob([0.0, 1.0])])
    with pytest.raises(LayerError, match="3 x 3"):
        run(make('type: "InfogainLoss"'), [blob(torch.zeros(2, 3)), blob([0.0, 1.0]), blob(torch.eye(2))])
    with pytest.raises(LayerError, match="cannot load the infogain matrix"):
        run(make('type: "InfogainLoss" infogain_loss_param { source: "/nonexistent/H.binaryproto" }'),
            [blob(torch.zeros(2, 3)), blob([0.0, 1.0])])
    with pytest.raises(LayerError, match="normalize is deprecated"):
        run(make('type: "InfogainLoss" loss_param { normalize: true }'),
            [blob(torch.zeros(2, 3)), blob([0.0, 1.0]), blob(torch.eye(3))])


def test_infogain_gradient_and_autograd(float64):
    x, label, H = Blob((1, 5, 3)), blob([[4.0, 0.0, 2.0]], torch.float64), Blob((5, 5))
    x.data.normal_(), H.data.uniform_()
    layer = make('type: "InfogainLoss" loss_param { ignore_label: 2 }')
    assert not layer.allow_force_backward(1) and not layer.allow_force_backward(2)
    checker().check_gradient(layer, [x, label, H], [Blob()], check_bottom=0)

    x0 = x.data.clone()
    top = run(make('type: "InfogainLoss" loss_param { ignore_label: 2 }'), [x, label, H], weight=1.3)
    ref_x = x0.clone().requires_grad_()
    logp = torch.log_softmax(ref_x, dim=1)                   # (1, 5, 3)
    rows = H.data[torch.tensor([4, 0])]                      # the two non-ignored positions
    ref = -((rows * logp[0, :, [0, 1]].T).sum()) / 2
    (1.3 * ref).backward()
    assert float(top[0].data) == pytest.approx(ref.item(), rel=1e-10)
    assert torch.allclose(x.diff, ref_x.grad, atol=1e-12)


# --- MultinomialLogisticLoss -------------------------------------------------------------------------------

def test_multinomial_logistic_hand_computed_and_clamped():
    p, label = blob([[0.25, 0.75], [1.0, 0.0]]), blob([1.0, 1.0])
    top = run(make('type: "MultinomialLogisticLoss"'), [p, label], weight=1.0)
    # The zero probability is clamped at 1e-20 (Caffe's kLOG_THRESHOLD) instead of giving inf.
    assert float(top[0].data) == pytest.approx((-math.log(0.75) - math.log(1e-20)) / 2, rel=1e-6)
    assert p.diff[0].tolist() == pytest.approx([0.0, -1 / 0.75 / 2])
    assert float(p.diff[1, 1]) == pytest.approx(-0.5 / 1e-20, rel=1e-6) and float(p.diff[1, 0]) == 0.0


def test_multinomial_logistic_label_shape():
    with pytest.raises(LayerError, match="one label per sample"):
        run(make('type: "MultinomialLogisticLoss"'), [blob(torch.full((2, 3), 0.3)), blob(torch.zeros(2, 2))])


def test_multinomial_logistic_gradient(float64):
    p, label = Blob((1, 5, 1, 1)), blob([[[[2.0]]]], torch.float64)
    p.data.uniform_(0.2, 1.0)
    checker().check_gradient(make('type: "MultinomialLogisticLoss"'), [p, label], [Blob()], check_bottom=0)


# --- golden ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", golden_cases("SoftmaxWithLoss", "EuclideanLoss", "SigmoidCrossEntropyLoss",
                                              "HingeLoss", "ContrastiveLoss", "InfogainLoss",
                                              "MultinomialLogisticLoss"))
def test_golden(golden, name):
    report = run_golden_case(golden / "layers", name)
    assert "top/t0" in report["compared"]
