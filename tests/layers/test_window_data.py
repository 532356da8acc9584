"""WindowData: windows cut out and warped as Caffe's window_data_layer does, checked against OpenCV directly.

Each test writes PNG images (lossless, so cv2.imread gives back the exact pixels) and a window file in tmp_path.
With a single foreground and a single background window, every batch item's source window is known: Caffe
puts the background draws first, then the foreground ones.
"""
import contextlib

import cv2
import numpy as np
import pytest

from brewnet.core import common
from brewnet.errors import DataError, LayerError
from brewnet.layers.window_data import Window, read_window_file, window_geometry
from brewnet.proto import caffe_pb2
from brewnet.proto.io import write_binary

from ._data_helpers import check_exact_resume, layer_from_text, setup

HEIGHT, WIDTH = 40, 50


def write_image(path, seed):
    image = np.random.RandomState(seed).randint(0, 256, (HEIGHT, WIDTH, 3)).astype(np.uint8)
    assert cv2.imwrite(str(path), image)
    return image


def write_window_file(tmp_path, records):
    """records: [(image file, [(label, overlap, x1, y1, x2, y2)])]."""
    lines = []
    for index, (name, windows) in enumerate(records):
        lines += [f"# {index}", name, "3", str(HEIGHT), str(WIDTH), str(len(windows))]
        lines += [" ".join(str(v) for v in w) for w in windows]
    path = tmp_path / "windows.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def window_layer(source, root, batch_size, crop_size, extra="", transform="", phase=caffe_pb2.TRAIN):
    return layer_from_text(
        f'name: "w" type: "WindowData" top: "data" top: "label" '
        f'window_data_param {{ source: "{source}" root_folder: "{root}/" batch_size: {batch_size} {extra} }} '
        f'transform_param {{ crop_size: {crop_size} {transform} }}', phase)


@contextlib.contextmanager
def running(layer):
    top = setup(layer)
    try:
        yield top
    finally:
        layer.close()


def forward(layer, top):
    layer.Forward([], top)
    return top[0].data.numpy().copy(), top[1].data.numpy().copy()


def chw(image):
    return image.transpose(2, 0, 1).astype(np.float32)


def test_warp_scale_mean_value_and_labels(tmp_path):
    image = write_image(tmp_path / "a.png", 0)
    source = write_window_file(tmp_path, [("a.png", [(3, 0.8, 5, 6, 24, 30),      # foreground, label 3
                                                     (2, 0.4, 0, 0, 5, 5),        # between: dropped
                                                     (7, 0.1, 0, 0, 15, 9)])])   # background, label -> 0
    layer = window_layer(source, tmp_path, 4, 12, 'fg_fraction: 0.5 bg_threshold: 0.3 scale: 0.5',
                         "mean_value: 10 mean_value: 20 mean_value: 30")
    mean = np.array([10, 20, 30], np.float32)[:, None, None]
    fg = (chw(cv2.resize(image[6:31, 5:25], (12, 12), interpolation=cv2.INTER_LINEAR)) - mean) * np.float32(0.5)
    bg = (chw(cv2.resize(image[0:10, 0:16], (12, 12), interpolation=cv2.INTER_LINEAR)) - mean) * np.float32(0.5)
    with running(layer) as top:
        assert top[0].shape == (4, 3, 12, 12) and top[1].shape == (4,)
        for _ in range(2):
            data, labels = forward(layer, top)
            np.testing.assert_array_equal(labels, [0, 0, 3, 3])
            for i, expected in enumerate([bg, bg, fg, fg]):
                np.testing.assert_array_equal(data[i], expected)


def test_fg_fraction_truncates_and_draws_every_window(tmp_path):
    write_image(tmp_path / "a.png", 1)
    write_image(tmp_path / "b.png", 2)
    source = write_window_file(tmp_path, [
        ("a.png", [(1, 0.9, 0, 0, 9, 9), (2, 0.6, 10, 10, 29, 29), (0, 0.2, 1, 1, 8, 8)]),
        ("b.png", [(4, 0.5, 3, 3, 20, 20), (5, 0.0, 0, 0, 49, 39), (9, 0.49, 2, 2, 30, 30)])])
    images, fg, bg = read_window_file(str(source), str(tmp_path) + "/")
    assert [w.label for w in fg] == [1, 2, 4] and [w.label for w in bg] == [0, 0, 0]
    assert [w.image for w in fg + bg] == [0, 0, 1, 0, 1, 1]
    # batch 10, fg_fraction 0.25: int(2.5) = 2 foreground windows, the last two items
    layer = window_layer(source, tmp_path, 10, 8, "fg_fraction: 0.25")
    seen = []
    with running(layer) as top:
        for _ in range(15):
            _, labels = forward(layer, top)
            assert (labels[:8] == 0).all() and np.isin(labels[8:], [1, 2, 4]).all()
            seen += labels[8:].tolist()
    assert set(seen) == {1, 2, 4}


def test_context_pad_clipping_mirror_and_mean_file(tmp_path):
    """Hand-worked geometry: crop 10, context_pad 2 -> context_scale 10/6.

    Window (0, 4)-(11, 15), 12 x 12, centre (6, 10), grows to (-4, 0)-(16, 20), 21 x 21; clipped to (0, 0)-(16, 20),
    17 x 21.  Scale 10/21: the clipped part warps to round(17*10/21) = 8 wide, round(21*10/21) = 10 high, and the
    4 columns cut off on the left become round(4*10/21) = 2 columns of zeros (on the right when mirrored).
    """
    image = write_image(tmp_path / "a.png", 3)
    source = write_window_file(tmp_path, [("a.png", [(1, 1.0, 0, 4, 11, 15), (1, 0.0, 0, 4, 11, 15)])])
    assert window_geometry(Window(0, 1, 1.0, 0, 4, 11, 15, 1), HEIGHT, WIDTH, 10, 2) == ((0, 0, 16, 20), (8, 10), 0, 2)
    mean = np.random.RandomState(4).uniform(0, 255, (1, 3, 14, 14)).astype(np.float32)
    proto = caffe_pb2.BlobProto()
    proto.num, proto.channels, proto.height, proto.width = mean.shape
    proto.data.extend(mean.ravel().tolist())
    write_binary(proto, str(tmp_path / "mean.binaryproto"))
    mean_crop = mean[0, :, 2:12, 2:12]    # offset (14 - 10) / 2 = 2

    warped = chw(cv2.resize(image[0:21, 0:17], (8, 10), interpolation=cv2.INTER_LINEAR))
    plain = np.zeros((3, 10, 10), np.float32)
    plain[:, :, 2:10] = (warped - mean_crop[:, :, 2:10]) * np.float32(2)
    mirrored = np.zeros((3, 10, 10), np.float32)
    mirrored[:, :, 0:8] = (warped[:, :, ::-1] - mean_crop[:, :, 0:8]) * np.float32(2)

    layer = window_layer(source, tmp_path, 8, 10, "context_pad: 2 scale: 2 fg_fraction: 0.5",
                         f'mirror: true mean_file: "{tmp_path / "mean.binaryproto"}"')
    flips = []
    with running(layer) as top:
        for _ in range(3):
            data, labels = forward(layer, top)
            np.testing.assert_array_equal(labels, [0] * 4 + [1] * 4)
            for item in data:
                flipped = bool(np.array_equal(item, mirrored))
                assert flipped or np.array_equal(item, plain)
                flips.append(flipped)
    assert any(flips) and not all(flips)


def test_square_crop_mode(tmp_path):
    """Window (5, 5)-(14, 24), 10 wide, 20 high: the square around it is (0, 5)-(20, 25), warped to 10 x 10."""
    image = write_image(tmp_path / "a.png", 5)
    source = write_window_file(tmp_path, [("a.png", [(2, 0.7, 5, 5, 14, 24), (0, 0.1, 5, 5, 14, 24)])])
    layer = window_layer(source, tmp_path, 2, 10, 'crop_mode: "square" fg_fraction: 0.5')
    expected = chw(cv2.resize(image[5:26, 0:21], (10, 10), interpolation=cv2.INTER_LINEAR))
    with running(layer) as top:
        data, labels = forward(layer, top)
    np.testing.assert_array_equal(labels, [0, 2])
    np.testing.assert_array_equal(data[0], expected)
    np.testing.assert_array_equal(data[1], expected)


def test_cache_images_gives_the_same_batches(tmp_path):
    write_image(tmp_path / "a.png", 6)
    write_image(tmp_path / "b.png", 7)
    source = write_window_file(tmp_path, [("a.png", [(1, 0.9, 3, 4, 30, 25), (0, 0.1, 20, 10, 45, 35)]),
                                          ("b.png", [(2, 0.8, 0, 0, 20, 20), (0, 0.3, 30, 2, 49, 39)])])
    batches = []
    for cache in ("false", "true"):
        common.set_random_seed(11)   # same draws for both layers
        layer = window_layer(source, tmp_path, 6, 16, f"cache_images: {cache} context_pad: 3", "mirror: true")
        with running(layer) as top:
            batches.append([forward(layer, top) for _ in range(2)])
    for (d0, l0), (d1, l1) in zip(*batches):
        np.testing.assert_array_equal(d0, d1)
        np.testing.assert_array_equal(l0, l1)


def test_errors_name_the_window_file(tmp_path):
    write_image(tmp_path / "a.png", 8)
    with pytest.raises(LayerError, match="Failed to open window file"):
        setup(window_layer(tmp_path / "none.txt", tmp_path, 2, 8))
    source = write_window_file(tmp_path, [("a.png", [(0, 0.9, 0, 0, 9, 9)])])
    with pytest.raises(LayerError, match=r"windows.txt:7: Expect: a foreground window's class_index > 0"):
        setup(window_layer(source, tmp_path, 2, 8))
    source = write_window_file(tmp_path, [("a.png", [(1, 0.9, 0, 0, 9, 9)])])
    with pytest.raises(LayerError, match=r"Expect: background .* windows .* Actual: none"):
        setup(window_layer(source, tmp_path, 2, 8))
    with pytest.raises(LayerError, match="crop_size > 0"):
        setup(window_layer(source, tmp_path, 2, 0))
    source.write_text("# 0\na.png\n3 40 50\n1\n1 zero 0 0 9 9\n")
    with pytest.raises(LayerError, match=r"windows.txt:5: Expect: overlap \(float\), Actual: 'zero'"):
        setup(window_layer(source, tmp_path, 2, 8))

    source = write_window_file(tmp_path, [("missing.png", [(1, 0.9, 0, 0, 9, 9), (0, 0.1, 0, 0, 9, 9)])])
    with pytest.raises(LayerError, match="windows.txt:2: Could not open or find file .*missing.png"):
        setup(window_layer(source, tmp_path, 2, 8, "cache_images: true"))
    layer = window_layer(source, tmp_path, 2, 8)
    # batch 2 with fg_fraction 0.25 draws int(0.5) = 0 foreground windows: the background one (line 8) fails
    with running(layer) as top, pytest.raises(DataError, match="windows.txt:8: could not open or find .*missing"):
        layer.Forward([], top)


def test_exact_resume_of_the_sampling(tmp_path):
    write_image(tmp_path / "a.png", 1)
    source = write_window_file(tmp_path, [("a.png", [(1, 0.9, 0, 0, 9, 9), (2, 0.7, 10, 10, 29, 29),
                                                     (0, 0.2, 1, 1, 8, 8), (0, 0.1, 5, 5, 30, 25)])])
    check_exact_resume(lambda: window_layer(source, tmp_path, 4, 8, "fg_fraction: 0.5", "mirror: true"), 2, 2, 3)
