import gzip
import os

import numpy as np
import pytest

from brewnet.data import idx_sets
from brewnet.data.mnist import write_idx_images, write_idx_labels
from brewnet.errors import DataError


def test_bundled_digits_load_with_their_counts():
    data = idx_sets.load_idx_set()
    assert data.train_images.shape == (8000, 28, 28) and data.test_images.shape == (2000, 28, 28)
    assert np.bincount(data.test_labels).tolist() == [196, 231, 194, 221, 191, 168, 209, 211, 177, 202]
    assert "mnist10k" in idx_sets.available_sets()


def test_plain_and_gzipped_files_mix(tmp_path):
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    write_idx_images(tmp_path / "train-images-idx3-ubyte", images)
    write_idx_labels(tmp_path / "train-labels-idx1-ubyte.gz", [3, 4])
    write_idx_images(tmp_path / "t10k-images-idx3-ubyte.gz", images[:1])
    write_idx_labels(tmp_path / "t10k-labels-idx1-ubyte", [7])
    data = idx_sets.load_idx_set(tmp_path)
    assert data.train_labels.tolist() == [3, 4] and data.test_labels.tolist() == [7]
    np.testing.assert_array_equal(data.test_images[0], images[0])


def test_missing_folder_file_and_count_mismatch(tmp_path):
    with pytest.raises(DataError, match="data folder .*nowhere does not exist"):
        idx_sets.load_idx_set(tmp_path / "nowhere")
    write_idx_images(tmp_path / "train-images-idx3-ubyte", np.zeros((2, 28, 28)))
    with pytest.raises(DataError, match="no train-labels-idx1-ubyte\\[.gz\\]"):
        idx_sets.load_idx_set(tmp_path)
    write_idx_labels(tmp_path / "train-labels-idx1-ubyte", [1])
    write_idx_images(tmp_path / "t10k-images-idx3-ubyte", np.zeros((1, 28, 28)))
    write_idx_labels(tmp_path / "t10k-labels-idx1-ubyte", [1])
    with pytest.raises(DataError, match="train-images-idx3-ubyte: 2 images but 1 labels"):
        idx_sets.load_idx_set(tmp_path)
