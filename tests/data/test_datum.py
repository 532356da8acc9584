"""Datum <-> array, encoded images, and the batch stacking the Data layer uses."""
import numpy as np
import pytest

from brewnet.data import datum as dm
from brewnet.errors import DataError
from brewnet.proto import caffe_pb2


def test_uint8_round_trip():
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    d = dm.array_to_datum(array, label=7)
    assert (d.channels, d.height, d.width, d.label) == (2, 3, 4, 7)
    assert d.data == array.tobytes() and len(d.float_data) == 0
    back = dm.datum_to_array(dm.parse_datum(d.SerializeToString()))
    assert back.dtype == np.uint8 and np.array_equal(back, array)


def test_float_round_trip_and_2d():
    array = np.array([[0.5, -1.25], [3.0, 4.5]])
    d = dm.array_to_datum(array)
    assert (d.channels, d.height, d.width) == (1, 2, 2) and list(d.float_data) == [0.5, -1.25, 3.0, 4.5]
    assert np.array_equal(dm.datum_to_array(d), array[None].astype(np.float32))


def test_encoded_png_decodes_to_bgr(tmp_path):
    image = np.zeros((3, 5, 3), dtype=np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 10, 20, 30   # B, G, R
    d = dm.image_to_datum(None, 3, encoded_bytes=dm.encode_image(image, "png"))
    assert d.encoded and d.label == 3
    assert np.array_equal(dm.datum_to_array(d), image.transpose(2, 0, 1))
    gray = dm.datum_to_array(d, force_gray=True)
    # gray = 0.299 R + 0.587 G + 0.114 B = 21.85, in the decoder's integer arithmetic (libpng gives 21)
    assert gray.shape == (1, 3, 5) and np.all(np.abs(gray.astype(float) - 21.85) <= 1)
    assert len(np.unique(gray)) == 1
    with pytest.raises(DataError, match="both force_color and force_gray"):
        dm.datum_to_array(d, force_color=True, force_gray=True)


def test_not_a_datum_names_key():
    with pytest.raises(DataError, match="00000042"):
        dm.parse_datum(b"\xff\xff\xff garbage", key="00000042")


def test_stack_datums_and_size_mismatch():
    a = dm.array_to_datum(np.full((1, 2, 2), 1, np.uint8))
    b = dm.array_to_datum(np.full((1, 2, 2), 2, np.uint8))
    stacked = dm.stack_datums([a, b])
    assert stacked.shape == (2, 1, 2, 2) and stacked[1].sum() == 8
    c = dm.array_to_datum(np.zeros((1, 3, 2), np.uint8))
    with pytest.raises(DataError, match=r"record 'k2'.*\(1, 3, 2\)"):
        dm.stack_datums([a, c], keys=["k1", "k2"])


def test_wrong_byte_count():
    d = caffe_pb2.Datum(channels=1, height=2, width=2, data=b"abc")
    with pytest.raises(DataError, match="Expect: 4 bytes"):
        dm.datum_to_array(d)


def test_read_image_missing_file(tmp_path):
    with pytest.raises(DataError, match="nothere.png"):
        dm.read_image(str(tmp_path / "nothere.png"))
