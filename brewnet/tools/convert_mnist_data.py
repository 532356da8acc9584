"""convert_mnist_data: MNIST IDX files -> a database of Datum records (Caffe's examples/mnist tool).

    python -m brewnet.tools.convert_mnist_data [-backend lmdb|leveldb] IMAGE_FILE LABEL_FILE DB_PATH

Each digit becomes a 1 x rows x cols uint8 Datum with its label, under the key "%08d" of its index, committed
every 1 000 records.  The IDX files may be gzip-compressed (.gz).
"""
import sys

import numpy as np

from ..data import db as db_mod
from ..data.datum import array_to_datum
from ..data.mnist import read_idx_images, read_idx_labels
from ..errors import DataError
from ..log import logger
from .progress import Progress
from .tool_flags import run_tool

USAGE = ("This script converts the MNIST dataset to the lmdb/leveldb format used by Caffe to load data.\n"
         "Usage:\n    convert_mnist_data [FLAGS] input_image_file input_label_file output_db_file")
FLAGS = {"backend": ("lmdb", "The backend for storing the result")}


def convert(image_file, label_file, db_path, backend="lmdb", commit_every=1000, pad=0):
    """`pad` (Python callers only, not a flag of Caffe's tool) surrounds each digit with that many background
    pixels: a bigger canvas for a TRAIN Data layer's random crop_size crops, shifts of up to +-pad pixels."""
    images, labels = read_idx_images(image_file), read_idx_labels(label_file)
    if pad:
        images = np.pad(images, ((0, 0), (pad, pad), (pad, pad)))
    if len(images) != len(labels):
        raise DataError(f"Expect: as many labels as images, Actual: {len(images)} images in {image_file}, "
                        f"{len(labels)} labels in {label_file}")
    logger.info("A total of %d items.", len(images))
    logger.info("Rows: %d Cols: %d", images.shape[1], images.shape[2])
    progress = Progress(len(images), "convert_mnist_data")
    with db_mod.open_db(db_path, backend, db_mod.NEW) as database:
        txn = database.transaction()
        for index, (image, label) in enumerate(zip(images, labels)):
            txn.put(db_mod.format_key(index), array_to_datum(image, int(label)).SerializeToString())
            if (index + 1) % commit_every == 0:
                txn.commit()
                progress.update(index + 1)
        txn.commit()
    progress.close()
    logger.info("Processed %d files.", len(images))
    return len(images)


def main(argv=None):
    return run_tool(lambda flags, args: convert(*args, flags["backend"]), argv, FLAGS, USAGE, nargs=(3,))


if __name__ == "__main__":
    sys.exit(main())
