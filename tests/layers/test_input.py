"""Input layer: shapes per top, one shape for all, none; no backward."""
import pytest
import torch

from brewnet.core.blob import Blob
from brewnet.core.registry import create_layer
from brewnet.errors import LayerError
from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text


def make(text):
    return create_layer(parse_text(text, caffe_pb2.LayerParameter()))


def test_shape_per_top():
    layer = make('name: "in" type: "Input" top: "data" top: "label" '
                 'input_param { shape { dim: 64 dim: 1 dim: 28 dim: 28 } shape { dim: 64 } }')
    top = [Blob(), Blob()]
    layer.setup([], top)
    assert top[0].shape == (64, 1, 28, 28)
    assert top[1].shape == (64,)


def test_one_shape_for_all_tops():
    layer = make('name: "in" type: "Input" top: "a" top: "b" top: "c" input_param { shape { dim: 2 dim: 3 } }')
    top = [Blob(), Blob(), Blob()]
    layer.setup([], top)
    assert [b.shape for b in top] == [(2, 3)] * 3


def test_no_shape_keeps_user_shape_and_values():
    layer = make('name: "in" type: "Input" top: "a"')
    top = [Blob((2, 2))]
    layer.setup([], top)
    top[0].data.copy_(torch.tensor([[1., 2.], [3., 4.]]))
    assert layer.Forward([], top) == 0.0
    assert top[0].data.tolist() == [[1., 2.], [3., 4.]]
    top[0].reshape(5, 1)
    layer.Forward([], top)
    assert top[0].shape == (5, 1)


def test_wrong_number_of_shapes():
    layer = make('name: "in" type: "Input" top: "a" top: "b" top: "c" '
                 'input_param { shape { dim: 1 } shape { dim: 2 } }')
    with pytest.raises(LayerError, match="3 tops vs. 2 shapes"):
        layer.setup([], [Blob(), Blob(), Blob()])


def test_bottoms_rejected():
    layer = make('name: "in" type: "Input" top: "a" input_param { shape { dim: 1 } }')
    with pytest.raises(LayerError, match="bottom"):
        layer.setup([Blob((1,))], [Blob()])
