"""convert_cifar_data: CIFAR-10's binary batches -> two databases of Datum records (Caffe's examples/cifar10
tool, same arguments).

    python -m brewnet.tools.convert_cifar_data INPUT_FOLDER OUTPUT_FOLDER DB_TYPE     (DB_TYPE lmdb | leveldb)

INPUT_FOLDER holds data_batch_1.bin ... data_batch_5.bin and test_batch.bin (brewnet/data/cifar.py reads
them); OUTPUT_FOLDER receives cifar10_train_<DB_TYPE> (the five batches in order) and cifar10_test_<DB_TYPE>.
Each image is a 3 x 32 x 32 uint8 Datum with its label under the key "%05d" of its index, as Caffe writes
them (Caffe's index of training batch b, item i is b * 10000 + i: the same number for the real 10 000-record
batches; here smaller batches count on without a gap).
"""
import os
import sys

from ..data import db as db_mod
from ..data.cifar import batch_paths, read_cifar_batch
from ..data.datum import array_to_datum
from ..errors import DataError
from ..log import logger
from .tool_flags import run_tool

USAGE = ("This script converts the CIFAR dataset to the leveldb format used\n"
         "by caffe to perform classification.\n"
         "Usage:\n"
         "    convert_cifar_data input_folder output_folder db_type\n"
         "Where the input folder should contain the binary batch files.\n"
         "The CIFAR dataset could be downloaded at\n"
         "    http://www.cs.toronto.edu/~kriz/cifar.html\n"
         "You should gunzip them after downloading.")


def write_db(path, backend, batches):
    """Write the records of the (images, labels) batches in order; returns how many."""
    count = 0
    with db_mod.open_db(path, backend, db_mod.NEW) as database:
        txn = database.transaction()
        for images, labels in batches:
            for image, label in zip(images, labels):
                txn.put(f"{count:05d}", array_to_datum(image, int(label)).SerializeToString())  # Caffe's 5 digits
                count += 1
        txn.commit()
    return count


def convert(input_folder, output_folder, db_type="lmdb"):
    """Both databases; returns (training records, test records)."""
    if db_type not in ("lmdb", "leveldb"):
        raise DataError(f"db_type: Expect: lmdb or leveldb, Actual: {db_type!r}")
    train_paths, test_path = batch_paths(input_folder)
    os.makedirs(output_folder, exist_ok=True)
    logger.info("Writing Training data")

    def training_batches():
        for index, path in enumerate(train_paths, 1):
            logger.info("Training Batch %d", index)
            yield read_cifar_batch(path)
    train = write_db(os.path.join(output_folder, f"cifar10_train_{db_type}"), db_type, training_batches())
    logger.info("Writing Testing data")
    test = write_db(os.path.join(output_folder, f"cifar10_test_{db_type}"), db_type, [read_cifar_batch(test_path)])
    return train, test


def main(argv=None):
    return run_tool(lambda flags, args: convert(*args), argv, {}, USAGE, nargs=(3,))


if __name__ == "__main__":
    sys.exit(main())
