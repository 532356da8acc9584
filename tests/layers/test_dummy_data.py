"""DummyData: shapes, legacy dims, constant vs refilled fillers."""
import pytest
import torch

from brewnet.errors import LayerError

from ._data_helpers import layer_from_text, setup


def test_shapes_and_fillers():
    layer = layer_from_text('name: "d" type: "DummyData" top: "a" top: "b" dummy_data_param { '
                            'shape { dim: 2 dim: 3 } shape { dim: 4 } '
                            'data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 3 } }')
    top = setup(layer)
    assert top[0].shape == (2, 3) and top[1].shape == (4,)
    assert torch.equal(top[1].data, torch.full((4,), 3.0))
    first = top[0].data.clone()
    layer.Forward([], top)
    assert not torch.equal(first, top[0].data)   # gaussian refilled every forward
    assert torch.equal(top[1].data, torch.full((4,), 3.0))


def test_legacy_dims_and_default_zero():
    layer = layer_from_text('name: "d" type: "DummyData" top: "a" top: "b" dummy_data_param { '
                            'num: 5 channels: 1 channels: 2 height: 3 width: 4 }')
    top = setup(layer)
    assert top[0].shape == (5, 1, 3, 4) and top[1].shape == (5, 2, 3, 4)
    assert float(top[1].data.abs().sum()) == 0.0


def test_bad_counts():
    layer = layer_from_text('name: "d" type: "DummyData" top: "a" top: "b" top: "c" dummy_data_param { '
                            'shape { dim: 1 } shape { dim: 2 } }')
    with pytest.raises(LayerError, match=r"'shape' once or once per top blob \(3\)"):
        setup(layer, 3)
