"""ImageData: Caffe's resized batches, shuffling, and errors naming the list line."""
import numpy as np
import pytest

from brewnet.data.datum import encode_image
from brewnet.errors import DataError, LayerError

from ._data_helpers import check_exact_resume, layer_from_file, layer_from_text, setup


def test_golden_resize_batches(golden, monkeypatch):
    monkeypatch.chdir(golden / "files")
    expected = np.load("imagedata_resize.npz")
    layer = layer_from_file("imagedata_resize.prototxt")
    top = setup(layer)
    try:
        assert top[0].shape == (6, 3, 20, 24) and top[1].shape == (6,)
        for k in range(3):   # 12 images, batch 6: the third batch wraps round to the start
            layer.Forward([], top)
            np.testing.assert_array_equal(top[0].data.numpy(), expected[f"batch{k}/data"])
            np.testing.assert_array_equal(top[1].data.numpy(), expected[f"batch{k}/label"])
    finally:
        layer.close()


def write_images(tmp_path, n, size=(4, 5)):
    lines = []
    for i in range(n):
        image = np.full(size + (3,), i * 10, np.uint8)
        (tmp_path / f"im {i}.png").write_bytes(encode_image(image, "png"))   # a space in the name
        lines.append(f"im {i}.png {i}")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")


def test_shuffle_gray_and_epochs(tmp_path):
    write_images(tmp_path, 6)
    layer = layer_from_text(f'name: "d" type: "ImageData" top: "data" top: "label" image_data_param {{ '
                            f'source: "{tmp_path / "list.txt"}" root_folder: "{tmp_path}/" batch_size: 3 '
                            f'shuffle: true is_color: false }}')
    top = setup(layer)
    labels = []
    try:
        for _ in range(4):
            layer.Forward([], top)
            labels.append(top[1].data.numpy().astype(int).tolist())
            # image i is uniformly i*10: gray keeps the value, and data matches its label
            assert np.array_equal(top[0].data.numpy()[:, 0, 0, 0], top[1].data.numpy() * 10)
    finally:
        layer.close()
    assert top[0].shape == (3, 1, 4, 5)
    assert sorted(labels[0] + labels[1]) == list(range(6)) and sorted(labels[2] + labels[3]) == list(range(6))


def test_missing_file_names_the_line(tmp_path):
    write_images(tmp_path, 3)
    with open(tmp_path / "list.txt", "a") as handle:
        handle.write("missing.png 4\n")
    layer = layer_from_text(f'name: "d" type: "ImageData" top: "data" top: "label" image_data_param {{ '
                            f'source: "{tmp_path / "list.txt"}" root_folder: "{tmp_path}/" batch_size: 4 }}')
    top = setup(layer)
    try:
        with pytest.raises(DataError, match=r"list.txt:4 \('.*missing.png'\)"):
            layer.Forward([], top)
    finally:
        layer.close()


def test_different_sizes_without_resize(tmp_path):
    write_images(tmp_path, 2)
    (tmp_path / "big.png").write_bytes(encode_image(np.zeros((6, 6, 3), np.uint8), "png"))
    with open(tmp_path / "list.txt", "a") as handle:
        handle.write("big.png 1\n")
    layer = layer_from_text(f'name: "d" type: "ImageData" top: "data" top: "label" image_data_param {{ '
                            f'source: "{tmp_path / "list.txt"}" root_folder: "{tmp_path}/" batch_size: 3 }}')
    top = setup(layer)
    try:
        with pytest.raises(DataError, match=r"list.txt:3 \('.*big.png'\).*Expect: shape \(3, 4, 5\)"):
            layer.Forward([], top)
    finally:
        layer.close()


def test_bad_list(tmp_path):
    (tmp_path / "list.txt").write_text("a.png notanumber\n")
    layer = layer_from_text(f'name: "d" type: "ImageData" top: "data" top: "label" '
                            f'image_data_param {{ source: "{tmp_path / "list.txt"}" batch_size: 1 }}')
    with pytest.raises(LayerError, match="list.txt:1"):
        setup(layer)
    layer = layer_from_text('name: "d" type: "ImageData" top: "data" top: "label" '
                            'image_data_param { source: "x.txt" batch_size: 1 new_height: 3 }')
    with pytest.raises(LayerError, match="new_height and new_width"):
        setup(layer)


def write_noise_images(tmp_path, n, size=(5, 6)):
    lines = []
    for i in range(n):
        image = np.random.RandomState(i).randint(0, 256, size + (3,)).astype(np.uint8)
        (tmp_path / f"n{i}.png").write_bytes(encode_image(image, "png"))
        lines.append(f"n{i}.png {i}")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("k", [0, 2])
def test_exact_resume_shuffled_with_crop_and_mirror(tmp_path, k):
    """7 images, batch 3: the 5 batches after the state cross two reshuffles; order, reshuffles, crop offsets
    and mirroring all come back from the state."""
    from brewnet.proto import caffe_pb2
    write_noise_images(tmp_path, 7)
    text = (f'name: "d" type: "ImageData" top: "data" top: "label" transform_param {{ crop_size: 4 mirror: true }} '
            f'image_data_param {{ source: "{tmp_path / "list.txt"}" root_folder: "{tmp_path}/" batch_size: 3 '
            f'shuffle: true }}')
    state = check_exact_resume(lambda: layer_from_text(text, caffe_pb2.TRAIN), 2, k, 5)
    assert sorted(state["source"]["order"].tolist()) == list(range(7)) and state["source"]["cursor"] == 3 * k % 7


def test_resume_refuses_a_position_for_another_list(tmp_path):
    write_noise_images(tmp_path, 4)
    text = (f'name: "d" type: "ImageData" top: "data" top: "label" image_data_param {{ '
            f'source: "{tmp_path / "list.txt"}" root_folder: "{tmp_path}/" batch_size: 2 shuffle: true }}')
    layer = layer_from_text(text)
    setup(layer)
    try:
        state = layer.state_dict()
        state["source"]["order"] = np.arange(9)
        with pytest.raises(LayerError, match="does not fit the 4 lines"):
            layer.load_state_dict(state)
    finally:
        layer.close()
