"""IDX files, plain and gzip."""
import pathlib

import numpy as np
import pytest

from brewnet.data import mnist
from brewnet.errors import DataError


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_round_trip(tmp_path, suffix):
    images = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    mnist.write_idx_images(tmp_path / f"i{suffix}", images)
    mnist.write_idx_labels(tmp_path / f"l{suffix}", [1, 2, 9])
    assert np.array_equal(mnist.read_idx_images(tmp_path / f"i{suffix}"), images)
    assert mnist.read_idx_labels(tmp_path / f"l{suffix}").tolist() == [1, 2, 9]


def test_bundled_digits(golden):
    images = mnist.read_idx_images(pathlib.Path(__file__).resolve().parents[2] / "data" / "mnist10k" / "train-images-idx3-ubyte.gz")
    assert images.shape == (8000, 28, 28)
    assert np.array_equal(images[:1000], np.load(golden / "files" / "mnist1000.npz")["images"])


def test_wrong_magic_and_truncation(tmp_path):
    mnist.write_idx_labels(tmp_path / "l", [1, 2] * 5)
    with pytest.raises(DataError, match="Expect: IDX magic 2051, Actual: 2049"):
        mnist.read_idx_images(tmp_path / "l")
    (tmp_path / "short").write_bytes((tmp_path / "l").read_bytes()[:-1])
    with pytest.raises(DataError, match="Expect: 10 labels"):
        mnist.read_idx_labels(tmp_path / "short")
