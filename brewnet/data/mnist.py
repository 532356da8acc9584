"""MNIST's IDX files (also Fashion-MNIST's): big-endian magic, counts, then raw uint8 values.

    images: magic 2051, count, rows, cols, count*rows*cols pixels
    labels: magic 2049, count, count labels
Files ending in .gz are read through gzip.
"""
import gzip
import os

import numpy as np

from ..errors import DataError

IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049


def _read(path):
    path = os.fspath(path)
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise DataError(f"cannot read IDX file {path}: {exc.strerror or exc}") from None


def _header(payload, path, magic, fields):
    size = 4 * (1 + fields)
    if len(payload) < size:
        raise DataError(f"{path}: truncated IDX header ({len(payload)} bytes)")
    header = np.frombuffer(payload, dtype=">u4", count=1 + fields)
    if int(header[0]) != magic:
        raise DataError(f"{path}: Expect: IDX magic {magic}, Actual: {int(header[0])}")
    return [int(v) for v in header[1:]], size


def read_idx_images(path):
    """N x rows x cols uint8 array."""
    payload = _read(path)
    (count, rows, cols), offset = _header(payload, path, IMAGE_MAGIC, 3)
    if len(payload) - offset < count * rows * cols:
        raise DataError(f"{path}: Expect: {count * rows * cols} pixel bytes, Actual: {len(payload) - offset}")
    return np.frombuffer(payload, dtype=np.uint8, count=count * rows * cols, offset=offset).reshape(count, rows, cols)


def read_idx_labels(path):
    """N uint8 labels."""
    payload = _read(path)
    (count,), offset = _header(payload, path, LABEL_MAGIC, 1)
    if len(payload) - offset < count:
        raise DataError(f"{path}: Expect: {count} labels, Actual: {len(payload) - offset}")
    return np.frombuffer(payload, dtype=np.uint8, count=count, offset=offset)


def write_idx_images(path, images):
    images = np.asarray(images, dtype=np.uint8)
    header = np.array([IMAGE_MAGIC, *images.shape], dtype=">u4").tobytes()
    _write(path, header + images.tobytes())


def write_idx_labels(path, labels):
    labels = np.asarray(labels, dtype=np.uint8)
    _write(path, np.array([LABEL_MAGIC, len(labels)], dtype=">u4").tobytes() + labels.tobytes())


def _write(path, payload):
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as handle:
        handle.write(payload)
