"""Accuracy layer: top-1/top-k with Caffe's tie rule, ignore_label, spatial labels, per-class top, errors,
Caffe's golden outputs."""
import pytest
import torch

from brewnet.core.blob import Blob
from brewnet.core.registry import create_layer
from brewnet.errors import LayerError
from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text
from tests.layers.golden_case import golden_cases, run_golden_case


def make(text=""):
    return create_layer(parse_text('name: "acc" type: "Accuracy" bottom: "fc" bottom: "label" ' + text,
                                   caffe_pb2.LayerParameter()))


def blob_of(values):
    t = torch.as_tensor(values, dtype=torch.float32)
    b = Blob(t.shape)
    b.data.copy_(t)
    return b


def accuracy(text, scores, labels, ntop=1):
    bottom, top = [blob_of(scores), blob_of(labels)], [Blob() for _ in range(ntop)]
    layer = make(text)
    layer.setup(bottom, top)
    layer.Forward(bottom, top)
    return [t.data for t in top]


SCORES = [[0.1, 0.7, 0.2],     # argmax 1
          [0.5, 0.3, 0.2],     # argmax 0
          [0.3, 0.3, 0.4],     # argmax 2; classes 0 and 1 tie for second
          [0.2, 0.2, 0.6]]     # argmax 2
LABELS = [1, 1, 0, 2]


def test_top1():
    (acc,) = accuracy("", SCORES, LABELS)
    assert acc.shape == () and float(acc) == pytest.approx(2 / 4)


def test_top2_ties_count_against_the_true_class():
    # Row 2: class 0 scores 0.3, but classes 1 (0.3, a tie) and 2 (0.4) are "at least as good": 2 >= top_k.
    (acc,) = accuracy("accuracy_param { top_k: 2 }", SCORES, LABELS)
    assert float(acc) == pytest.approx(3 / 4)
    (acc,) = accuracy("accuracy_param { top_k: 3 }", SCORES, LABELS)
    assert float(acc) == 1.0


def test_ignore_label_and_per_class():
    acc, per_class = accuracy("accuracy_param { ignore_label: 2 }", SCORES, LABELS, ntop=2)
    assert float(acc) == pytest.approx(1 / 3)               # rows 0, 1, 2 counted; only row 0 right
    assert per_class.shape == (3,)
    # class 0: 1 label, 0 right; class 1: 2 labels, 1 right; class 2: ignored -> 0.
    assert per_class.tolist() == pytest.approx([0.0, 0.5, 0.0])
    (acc,) = accuracy("accuracy_param { ignore_label: 1 }", [[1.0, 0.0]], [1])
    assert float(acc) == 0.0                                  # nothing left to count


def test_spatial_labels_along_axis():
    scores = torch.tensor([[[0.9, 0.1], [0.1, 0.9]]])          # (1, 2 classes, 2 positions)
    (acc,) = accuracy("", scores, [[0, 0]])
    assert float(acc) == pytest.approx(0.5)
    (acc,) = accuracy("accuracy_param { axis: 2 }", scores.transpose(1, 2), [[0, 0]])
    assert float(acc) == pytest.approx(0.5)


def test_errors():
    with pytest.raises(LayerError, match="top_k <= the number of classes"):
        accuracy("accuracy_param { top_k: 4 }", SCORES, LABELS)
    with pytest.raises(LayerError, match="number of labels"):
        accuracy("", SCORES, [0, 1])
    with pytest.raises(LayerError, match=r"layer 'acc'.*label value 3"):
        accuracy("", SCORES, [0, 1, 3, 0])
    layer, bottom, top = make(), [blob_of(SCORES), blob_of(LABELS)], [Blob()]
    layer.setup(bottom, top)
    with pytest.raises(LayerError, match="cannot backpropagate"):
        layer.Backward(top, [True, False], bottom)


@pytest.mark.parametrize("name", golden_cases("Accuracy"))
def test_golden(golden, name):
    assert "top/t0" in run_golden_case(golden / "layers", name)["compared"]
