"""Image-classification sets stored as MNIST's four IDX files (MNIST, Fashion-MNIST, the bundled digits):

    load_idx_set(folder) -> IdxSet(train_images, train_labels, test_images, test_labels, folder)

Images are N x 28 x 28 uint8, labels N uint8. A folder holds train-images-idx3-ubyte, train-labels-idx1-ubyte,
t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each optionally gzipped (the official layout; Debian's
dataset-fashion-mnist installs it under /usr/share/datasets/fashion-mnist).
"""
import collections
import os

from ..errors import DataError
from .mnist import read_idx_images, read_idx_labels

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUNDLED_DIGITS = os.path.join(ROOT, "data", "mnist10k")
FASHION_MNIST = "/usr/share/datasets/fashion-mnist"

IdxSet = collections.namedtuple("IdxSet", "train_images train_labels test_images test_labels folder")

_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def idx_files(folder):
    """The four files' paths (the gzipped one where only it exists); DataError naming the first one missing."""
    paths = []
    for stem in _STEMS:
        candidates = [os.path.join(folder, stem + ext) for ext in ("", ".gz")]
        found = [p for p in candidates if os.path.exists(p)]
        if not found:
            raise DataError(f"{folder}: no {stem}[.gz] (Expect: MNIST's four IDX files)")
        paths.append(found[0])
    return paths


def load_idx_set(folder=None):
    """The four arrays of an IDX folder (the bundled digits by default), checked for matching counts."""
    folder = os.fspath(folder or BUNDLED_DIGITS)
    if not os.path.isdir(folder):
        raise DataError(f"data folder {folder} does not exist")
    train_x, train_y, test_x, test_y = idx_files(folder)
    arrays = read_idx_images(train_x), read_idx_labels(train_y), read_idx_images(test_x), read_idx_labels(test_y)
    for images, labels, images_path in ((arrays[0], arrays[1], train_x), (arrays[2], arrays[3], test_x)):
        if len(images) != len(labels):
            raise DataError(f"{images_path}: {len(images)} images but {len(labels)} labels")
    return IdxSet(*arrays, folder)


def available_sets():
    """name -> folder for the sets present on this machine (the bundled digits always)."""
    sets = {"mnist10k": BUNDLED_DIGITS}
    if os.path.isdir(FASHION_MNIST):
        sets["fashion-mnist"] = FASHION_MNIST
    return sets
