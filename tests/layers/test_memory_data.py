"""MemoryData: arrays from Python, served batch by batch."""
import numpy as np
import pytest

from brewnet.data.datum import array_to_datum
from brewnet.errors import LayerError

from ._data_helpers import layer_from_text, setup

TEXT = ('name: "m" type: "MemoryData" top: "data" top: "label" '
        'memory_data_param { batch_size: 2 channels: 1 height: 2 width: 3 } ')


def test_set_input_arrays_batches_and_wraps():
    layer = layer_from_text(TEXT)
    top = setup(layer)
    assert top[0].shape == (2, 1, 2, 3) and top[1].shape == (2,)
    data = np.arange(4 * 6, dtype=np.float32).reshape(4, 1, 2, 3)
    layer.set_input_arrays(data, np.array([5, 6, 7, 8], np.float32))
    for rows in ([0, 1], [2, 3], [0, 1]):
        layer.Forward([], top)
        assert np.array_equal(top[0].data.numpy(), data[rows])
        assert top[1].shape == (2, 1, 1, 1) and top[1].data.numpy().ravel().tolist() == [5 + r for r in rows]


def test_forward_before_arrays_and_bad_arrays():
    layer = layer_from_text(TEXT)
    top = setup(layer)
    with pytest.raises(LayerError, match="set_input_arrays"):
        layer.Forward([], top)
    with pytest.raises(LayerError, match="multiple of batch_size 2"):
        layer.set_input_arrays(np.zeros((3, 1, 2, 3), np.float32), np.zeros(3, np.float32))
    with pytest.raises(LayerError, match=r"N x 1 x 2 x 3"):
        layer.set_input_arrays(np.zeros((2, 2, 2, 3), np.float32), np.zeros(2, np.float32))


def test_add_datum_vector_transforms():
    layer = layer_from_text(TEXT + 'transform_param { scale: 0.5 }')
    top = setup(layer)
    datums = [array_to_datum(np.full((1, 2, 3), 4 * i, np.uint8), label=i) for i in range(2)]
    layer.add_datum_vector(datums)
    layer.Forward([], top)
    assert top[0].data.numpy()[:, 0, 0, 0].tolist() == [0.0, 2.0]
    assert top[1].data.numpy().ravel().tolist() == [0.0, 1.0]


def test_state_dict_is_the_next_row():
    data = np.arange(6 * 6, dtype=np.float32).reshape(6, 1, 2, 3)
    layer = layer_from_text(TEXT)
    top = setup(layer)
    layer.set_input_arrays(data, np.arange(6, dtype=np.float32))
    layer.Forward([], top)
    state = layer.state_dict()
    assert state == {"pos": 2}
    fresh = layer_from_text(TEXT)
    fresh_top = setup(fresh)
    fresh.set_input_arrays(data, np.arange(6, dtype=np.float32))
    fresh.load_state_dict(state)
    fresh.Forward([], fresh_top)
    assert np.array_equal(fresh_top[0].data.numpy(), data[2:4])
    with pytest.raises(LayerError, match="inside the 6 rows"):
        fresh.load_state_dict({"pos": 6})
