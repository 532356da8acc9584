"""CIFAR-10 binary batches (brewnet/data/cifar.py) on small files written in the format by the test."""
import numpy as np
import pytest

from brewnet.data.cifar import load_cifar10, read_cifar_batch, write_cifar_batch
from brewnet.errors import DataError


def sample(count, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, count).astype(np.uint8)


def write_folder(folder, counts=(3, 2, 2, 1, 2, 4)):
    """Five training batches and a test batch of the given sizes; returns their arrays in order."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    arrays = []
    for seed, (name, count) in enumerate(zip(names, counts)):
        images, labels = sample(count, seed)
        write_cifar_batch(folder / name, images, labels)
        arrays.append((images, labels))
    return arrays


def test_record_layout_is_label_then_red_green_blue_planes(tmp_path):
    record = bytes([7]) + bytes([1] * 1024) + bytes([2] * 1024) + bytes([3] * 1024)
    (tmp_path / "b.bin").write_bytes(record + bytes([0]) + bytes(range(256)) * 12)
    images, labels = read_cifar_batch(tmp_path / "b.bin")
    assert labels.tolist() == [7, 0] and images.shape == (2, 3, 32, 32)
    assert images[0, :, 5, 9].tolist() == [1, 2, 3]
    assert images[1, 0, 0, :3].tolist() == [0, 1, 2] and images[1, 2, 31, 31] == 255


def test_folder_concatenates_the_training_batches(tmp_path):
    arrays = write_folder(tmp_path)
    data = load_cifar10(tmp_path)
    assert data.train_images.shape == (10, 3, 32, 32) and data.test_images.shape == (4, 3, 32, 32)
    assert np.array_equal(data.train_images[3:5], arrays[1][0])
    assert np.array_equal(data.train_labels, np.concatenate([a[1] for a in arrays[:5]]))
    assert np.array_equal(data.test_labels, arrays[5][1])


def test_bad_files_are_named(tmp_path):
    (tmp_path / "short.bin").write_bytes(bytes(3000))
    with pytest.raises(DataError, match="short.bin: Expect: a multiple of 3073 bytes .* Actual: 3000 bytes"):
        read_cifar_batch(tmp_path / "short.bin")
    (tmp_path / "label.bin").write_bytes(bytes([12]) + bytes(3072))
    with pytest.raises(DataError, match="label.bin: record 0: Expect: a label 0-9, Actual: 12"):
        read_cifar_batch(tmp_path / "label.bin")
    write_folder(tmp_path)
    (tmp_path / "data_batch_4.bin").unlink()
    with pytest.raises(DataError, match="no data_batch_4.bin"):
        load_cifar10(tmp_path)
