"""caffe.io: Datum/BlobProto conversion on Caffe's own files, Transformer, image loading, resizing, oversampling."""
import lmdb
import numpy as np
import pytest
from PIL import Image

import caffe
import caffe.io
from caffe.proto import caffe_pb2
from brewnet.errors import BrewnetError


# --- the book's LMDB reading loop ------------------------------------------------------------------------------
def test_lmdb_cursor_datum_to_array(golden):
    files = golden / "files"
    expected = np.load(files / "mnist1000.npz")
    env = lmdb.open(str(files / "mnist1000_lmdb"), readonly=True, lock=False)
    images, labels, keys = [], [], []
    with env.begin() as txn:
        cursor = txn.cursor()
        for key, value in cursor:
            datum = caffe_pb2.Datum()
            datum.ParseFromString(value)
            array = caffe.io.datum_to_array(datum)
            images.append(array)
            labels.append(datum.label)
            keys.append(key)
    env.close()
    assert len(images) == 1000 and keys[0] == b"00000000" and keys[-1] == b"00000999"
    assert images[0].shape == (1, 28, 28) and images[0].dtype == np.uint8
    np.testing.assert_array_equal(np.stack(images)[:, 0], expected["images"])
    np.testing.assert_array_equal(labels, expected["labels"])
    images[0][0, 0, 0] = 7          # a writable array, as pycaffe's np.fromstring copy was


def test_datum_round_trips():
    byte_image = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    datum = caffe.io.array_to_datum(byte_image, label=3)
    assert (datum.channels, datum.height, datum.width, datum.label) == (2, 3, 4, 3)
    assert datum.data == byte_image.tobytes() and len(datum.float_data) == 0
    np.testing.assert_array_equal(caffe.io.datum_to_array(datum), byte_image)
    float_image = np.linspace(-1, 1, 24).reshape(2, 3, 4)
    datum = caffe.io.array_to_datum(float_image)
    back = caffe.io.datum_to_array(datum)
    assert back.dtype == np.float64 and len(datum.data) == 0
    np.testing.assert_allclose(back, float_image, rtol=1e-7)        # stored as float32
    with pytest.raises(BrewnetError, match=r"3-D .*Actual: shape \(3, 4\)"):
        caffe.io.array_to_datum(np.zeros((3, 4)))


def test_blobproto_conversions(golden):
    files = golden / "files"
    blob = caffe_pb2.BlobProto()
    blob.ParseFromString((files / "mnist1000_mean.binaryproto").read_bytes())
    mean = caffe.io.blobproto_to_array(blob)
    assert mean.shape == (1, 1, 28, 28)          # Caffe writes the legacy num/channels/height/width
    images = np.load(files / "mnist1000.npz")["images"].astype(np.float64)
    np.testing.assert_allclose(mean[0, 0], images.mean(axis=0), rtol=1e-5, atol=1e-4)

    arr = np.arange(6.0).reshape(2, 3)
    proto = caffe.io.array_to_blobproto(arr, diff=-arr)
    assert list(proto.shape.dim) == [2, 3]
    np.testing.assert_array_equal(caffe.io.blobproto_to_array(proto), arr)
    np.testing.assert_array_equal(caffe.io.blobproto_to_array(proto, return_diff=True), -arr)
    arrays = [np.ones((1, 2, 2)), np.arange(3.0)]
    serialized = caffe.io.arraylist_to_blobprotovector_str(arrays)
    vec = caffe_pb2.BlobProtoVector()
    vec.ParseFromString(serialized)
    assert len(vec.blobs) == 2
    for a, b in zip(arrays, caffe.io.blobprotovector_str_to_arraylist(serialized)):
        np.testing.assert_array_equal(a, b)


# --- Transformer -----------------------------------------------------------------------------------------------------
def make_transformer(shape=(1, 3, 4, 5)):
    t = caffe.io.Transformer({"data": shape})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255)
    t.set_mean("data", np.array([104.0, 117.0, 123.0]))
    t.set_input_scale("data", 0.5)
    return t


def test_preprocess_follows_caffes_order():
    image = np.random.RandomState(0).rand(4, 5, 3).astype(np.float32)     # H x W x RGB in [0, 1]
    original = image.copy()
    out = make_transformer().preprocess("data", image)
    assert out.shape == (3, 4, 5) and out.dtype == np.float32
    # transpose -> BGR -> * 255 -> - mean (per BGR channel) -> * 0.5
    bgr = image.transpose(2, 0, 1)[::-1]
    expected = (bgr * 255 - np.array([104.0, 117.0, 123.0])[:, None, None]) * 0.5
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(image, original)       # the caller's image is left alone


def test_preprocess_deprocess_round_trip():
    t = make_transformer()
    image = np.random.RandomState(1).rand(4, 5, 3).astype(np.float32)
    back = t.deprocess("data", t.preprocess("data", image)[None])       # a batch of one is squeezed
    assert back.shape == (4, 5, 3)
    np.testing.assert_allclose(back, image, rtol=1e-5, atol=1e-6)


def test_preprocess_resizes_to_the_input_and_elementwise_mean():
    t = caffe.io.Transformer({"data": (2, 1, 4, 4)})
    t.set_transpose("data", (2, 0, 1))
    t.set_mean("data", np.full((1, 8, 8), 0.25))          # resized to 4 x 4 (a constant stays constant)
    np.testing.assert_allclose(t.mean["data"], 0.25)
    assert t.mean["data"].shape == (1, 4, 4)
    image = np.zeros((8, 8, 1), np.float32)
    image[:, 4:] = 1.0                                   # left half 0, right half 1
    out = t.preprocess("data", image)
    assert out.shape == (1, 4, 4)
    # bilinear, centres aligned: output column j samples input column 2j + 0.5
    np.testing.assert_allclose(out[0, 0] + 0.25, [0, 0, 1, 1], atol=1e-6)


def test_transformer_errors():
    t = caffe.io.Transformer({"data": (1, 3, 4, 5)})
    with pytest.raises(BrewnetError, match="'label' is not one of the net inputs"):
        t.preprocess("label", np.zeros((4, 5, 3)))
    with pytest.raises(BrewnetError, match="Transpose order.*Expect: 3, Actual: 2"):
        t.set_transpose("data", (1, 0))
    with pytest.raises(BrewnetError, match="Channel swap.*Expect: 3, Actual: 2"):
        t.set_channel_swap("data", (1, 0))
    with pytest.raises(BrewnetError, match="Mean channels incompatible.*Expect: 3 values, Actual: 4"):
        t.set_mean("data", np.zeros(4))


# --- images --------------------------------------------------------------------------------------------------------
def test_load_image_color_gray_and_alpha(tmp_path):
    rgb = np.random.RandomState(2).randint(0, 256, size=(6, 7, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    img = caffe.io.load_image(str(tmp_path / "rgb.png"))
    assert img.shape == (6, 7, 3) and img.dtype == np.float32
    np.testing.assert_allclose(img, rgb / 255.0, rtol=1e-6)
    gray = caffe.io.load_image(str(tmp_path / "rgb.png"), color=False)
    assert gray.shape == (6, 7, 1)
    np.testing.assert_allclose(gray[..., 0], (rgb / 255.0) @ [0.2125, 0.7154, 0.0721], rtol=1e-5)

    levels = np.arange(42, dtype=np.uint8).reshape(6, 7) * 6
    Image.fromarray(levels).save(tmp_path / "gray.png")
    as_color = caffe.io.load_image(str(tmp_path / "gray.png"))
    assert as_color.shape == (6, 7, 3)
    np.testing.assert_allclose(as_color, np.repeat(levels[..., None] / 255.0, 3, axis=2), rtol=1e-6)
    np.testing.assert_allclose(caffe.io.load_image(str(tmp_path / "gray.png"), color=False)[..., 0],
                               levels / 255.0, rtol=1e-6)

    rgba = np.dstack([rgb, np.full((6, 7), 9, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    np.testing.assert_allclose(caffe.io.load_image(str(tmp_path / "rgba.png")), rgb / 255.0, rtol=1e-6)
    with pytest.raises(BrewnetError, match="cannot read image .*missing.png"):
        caffe.io.load_image(str(tmp_path / "missing.png"))


def test_resize_image_values():
    im = np.array([[0.0, 1.0], [2.0, 3.0]])[..., None]
    up = caffe.io.resize_image(im, (4, 4))
    assert up.shape == (4, 4, 1) and up.dtype == np.float32
    # interior samples at source coordinates 0.25 and 0.75 (centres aligned)
    np.testing.assert_allclose(up[1:3, 1:3, 0], [[0.75, 1.25], [1.75, 2.25]], rtol=1e-6)
    # a border sample at row -0.25 blends with zero in the [0, 1]-normalised image (scikit-image,
    # mode='constant'): row 0 at column 0.25 is 0.75 * 0 + 0.25 * 1/3; times 0.75 (the rest is the zero
    # border) = 1/16, back to the original range: * 3
    np.testing.assert_allclose(up[0, 1, 0], 3 / 16, rtol=1e-6)
    big = np.arange(16.0).reshape(4, 4)[..., None]
    down = caffe.io.resize_image(big, (2, 2))
    np.testing.assert_allclose(down[..., 0], [[2.5, 4.5], [10.5, 12.5]], rtol=1e-6)     # 2x2 block means
    np.testing.assert_array_equal(caffe.io.resize_image(np.full((3, 3, 3), 0.4), (5, 2)), np.full((5, 2, 3), 0.4, np.float32))
    # other channel counts: SciPy zoom semantics, corners aligned
    two = np.stack([np.array([[0.0, 3.0]]).repeat(2, 0), np.ones((2, 2))], axis=2)
    wide = caffe.io.resize_image(two, (2, 4))
    np.testing.assert_allclose(wide[0, :, 0], [0, 1, 2, 3], rtol=1e-6)
    np.testing.assert_allclose(wide[..., 1], 1)


@pytest.mark.parametrize("order", [2, 3])
def test_resize_image_spline_orders(order):
    """interp_order >= 2: B-splines through the samples.  pycaffe resizes 1- and 3-channel images with
    scikit-image (centres aligned, zeros beyond the border, on the image scaled to [0, 1]) and anything else
    with scipy.ndimage.zoom(im, scale + (1,), order) (corners aligned)."""
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(order)
    im = rng.uniform(-2.0, 5.0, (5, 4, 3))
    # centres aligned, 3x up: output pixel 3i + 1 sits on input pixel i, where the spline passes through it
    up = caffe.io.resize_image(im, (15, 12), interp_order=order)
    assert up.shape == (15, 12, 3) and up.dtype == np.float32
    np.testing.assert_allclose(up[1::3, 1::3], im, rtol=1e-5, atol=1e-5)
    lo, hi = im.min(), im.max()
    skimage_like = np.clip(ndimage.zoom((im - lo) / (hi - lo), (3, 3, 1), order=order, mode="grid-constant",
                                        grid_mode=True), 0, 1) * (hi - lo) + lo
    np.testing.assert_allclose(up, skimage_like, rtol=1e-5, atol=1e-5)
    linear = caffe.io.resize_image(im, (15, 12), interp_order=1)
    assert np.abs(up - linear).max() > 0.05            # a spline, not the bilinear result again
    # four channels: pycaffe's own zoom call; corners aligned (4 -> 7 rows, 3 -> 5 columns: every other
    # output pixel is an input pixel)
    four = rng.uniform(0.0, 1.0, (4, 3, 4))
    wide = caffe.io.resize_image(four, (7, 5), interp_order=order)
    np.testing.assert_allclose(wide[::2, ::2], four, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(wide, ndimage.zoom(four, (7 / 4, 5 / 3, 1), order=order), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(caffe.io.resize_image(np.full((3, 3, 1), 0.4), (5, 2), interp_order=order),
                                  np.full((5, 2, 1), 0.4, np.float32))


def test_resize_image_refuses_bad_orders_and_shapes_as_value_errors():
    for order in (6, -1, 1.5, True):
        with pytest.raises(ValueError, match=r"resize_image: Expect: interp_order 0 to 5 .*Actual: "):
            caffe.io.resize_image(np.zeros((2, 2, 3)), (3, 3), interp_order=order)
    with pytest.raises(ValueError, match=r"Expect: an H x W x K array, Actual: shape \(2, 2\)"):
        caffe.io.resize_image(np.zeros((2, 2)), (3, 3))


def test_value_errors_where_pycaffe_raises_value_error():
    """Scripts written for Caffe catch ValueError; brewnet's errors here are ValueErrors and BrewnetErrors."""
    blob = caffe_pb2.BlobProto()
    blob.data.extend([0.0] * 6)         # neither num/channels/height/width nor shape
    with pytest.raises(ValueError, match=r"6 values for shape \(\) \(the BlobProto has neither "
                                         r"num/channels/height/width nor shape\)") as info:
        caffe.io.blobproto_to_array(blob)
    assert isinstance(info.value, BrewnetError)
    blob.shape.dim.extend([4])
    with pytest.raises(ValueError, match=r"6 values for shape \(4,\)"):
        caffe.io.blobproto_to_array(blob)
    with pytest.raises(ValueError, match="Expect: a 3-D"):
        caffe.io.array_to_datum(np.zeros((2, 2)))
    transformer = caffe.io.Transformer({"data": (1, 3, 4, 4)})
    with pytest.raises(ValueError, match="Mean channels incompatible with input: Expect: 3 values, Actual: 2"):
        transformer.set_mean("data", np.zeros(2))


def test_oversample_crops_and_mirrors(golden):
    image = caffe.io.load_image(str(golden / "files" / "images" / "img01.png"))
    h, w = image.shape[:2]
    crops = caffe.io.oversample([image], (20, 20))
    assert crops.shape == (10, 20, 20, 3)
    top, left = (h - 20) // 2, (w - 20) // 2
    expected = [image[:20, :20], image[:20, -20:], image[-20:, :20], image[-20:, -20:],
                image[top:top + 20, left:left + 20]]
    for k in range(5):
        np.testing.assert_array_equal(crops[k], expected[k])
        np.testing.assert_array_equal(crops[5 + k], expected[k][:, ::-1])
    two = caffe.io.oversample(np.stack([image, 1 - image]), (h, w))
    assert two.shape == (20, h, w, 3)
    np.testing.assert_allclose(two[10], 1 - image, rtol=1e-6)
    np.testing.assert_allclose(two[19], (1 - image)[:, ::-1], rtol=1e-6)


def test_oversample_odd_centre_matches_pycaffe_rounding():
    image = np.arange(27 * 27, dtype=np.float32).reshape(27, 27, 1)
    centre = caffe.io.oversample([image], (20, 20))[4]
    np.testing.assert_array_equal(centre, image[3:23, 3:23])       # centre 13.5 - 10 = 3.5 -> 3
