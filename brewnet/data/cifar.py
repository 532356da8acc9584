"""CIFAR-10's binary batches (https://www.cs.toronto.edu/~kriz/cifar.html, "binary version"):

    read_cifar_batch(path) -> (images N x 3 x 32 x 32 uint8, labels N uint8)
    load_cifar10(folder)   -> IdxSet(train_images, train_labels, test_images, test_labels, folder)

A batch file is a run of 3073-byte records: one label byte (0-9), then the 1024 red, 1024 green and 1024 blue
values of a 32 x 32 image, row by row, which is already Caffe's C x H x W order. The folder holds
data_batch_1.bin ... data_batch_5.bin (10 000 records each in the real set) and test_batch.bin. CIFAR-10
cannot be fetched here: brewnet reads it when a user has it.
"""
import os

import numpy as np

from ..errors import DataError
from .idx_sets import IdxSet

SIZE, CHANNELS = 32, 3
IMAGE_BYTES = CHANNELS * SIZE * SIZE
RECORD_BYTES = 1 + IMAGE_BYTES
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"


def read_cifar_batch(path):
    """The images and labels of one binary batch file; DataError naming the file when it is not one."""
    try:
        with open(path, "rb") as f:
            payload = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read the CIFAR-10 batch ({e.strerror})") from None
    if not payload or len(payload) % RECORD_BYTES:
        raise DataError(f"{path}: Expect: a multiple of {RECORD_BYTES} bytes (label + 3x32x32 image per "
                        f"record), Actual: {len(payload)} bytes")
    records = np.frombuffer(payload, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0].copy()
    if labels.max() > 9:
        first = int(np.argmax(labels > 9))
        raise DataError(f"{path}: record {first}: Expect: a label 0-9, Actual: {labels[first]}")
    return records[:, 1:].reshape(-1, CHANNELS, SIZE, SIZE).copy(), labels


def batch_paths(folder):
    """The five training batches and the test batch of a folder; DataError naming the first one missing."""
    paths = [os.path.join(folder, name) for name in TRAIN_FILES + (TEST_FILE,)]
    for path in paths:
        if not os.path.isfile(path):
            raise DataError(f"{folder}: no {os.path.basename(path)} (Expect: CIFAR-10's binary batches "
                            f"{', '.join(TRAIN_FILES)}, {TEST_FILE})")
    return paths[:-1], paths[-1]


def load_cifar10(folder):
    """All six batches as arrays, the training batches concatenated in order."""
    train_paths, test_path = batch_paths(os.fspath(folder))
    train = [read_cifar_batch(p) for p in train_paths]
    test_images, test_labels = read_cifar_batch(test_path)
    return IdxSet(np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train]),
                  test_images, test_labels, os.fspath(folder))


def write_cifar_batch(path, images, labels):
    """Write images (N x 3 x 32 x 32 uint8) and labels in the binary batch format (tests, small samples)."""
    images, labels = np.asarray(images, dtype=np.uint8), np.asarray(labels, dtype=np.uint8)
    if images.shape[1:] != (CHANNELS, SIZE, SIZE) or len(images) != len(labels):
        raise DataError(f"{path}: Expect: N x 3 x 32 x 32 images and N labels, Actual: images {images.shape}, "
                        f"{len(labels)} labels")
    records = np.concatenate([labels[:, None], images.reshape(len(images), -1)], axis=1)
    with open(path, "wb") as f:
        f.write(records.tobytes())
