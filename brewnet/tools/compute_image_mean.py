"""compute_image_mean: the mean image of a database of Datum records -> binaryproto (Caffe's tool).

    python -m brewnet.tools.compute_image_mean [-backend lmdb|leveldb] INPUT_DB [OUTPUT_FILE]

The mean is a 1 x C x H x W BlobProto (legacy num/channels/height/width fields, as Caffe writes it);
encoded records are decoded with their own channels.  The per-channel means are logged too.
"""
import sys

import numpy as np

from ..data import db as db_mod
from ..data.datum import datum_to_array, parse_datum
from ..errors import DataError
from ..log import logger
from ..proto import caffe_pb2
from ..proto.io import write_binary
from .progress import Progress
from .tool_flags import run_tool

USAGE = ("Compute the mean_image of a set of images given by a leveldb/lmdb\n"
         "Usage:\n    compute_image_mean [FLAGS] INPUT_DB [OUTPUT_FILE]")
FLAGS = {"backend": ("lmdb", "The backend {leveldb, lmdb} containing the images")}


def compute_mean(db_path, backend="lmdb"):
    """The C x H x W float32 mean of every record."""
    total, count, shape = None, 0, None
    with db_mod.open_db(db_path, backend, db_mod.READ) as database:
        progress = Progress(len(database), "compute_image_mean")
        for key, value in database:
            array = datum_to_array(parse_datum(value, key))
            if shape is None:
                shape, total = array.shape, np.zeros(array.shape, dtype=np.float64)
            elif array.shape != shape:
                raise DataError(f"record {key.decode(errors='replace')!r}: Expect: shape {shape} (the first "
                                f"record's), Actual: {array.shape}")
            total += array
            count += 1
            if count % 10000 == 0:
                logger.info("Processed %d files.", count)
            progress.update(count)
        progress.close()
    if count == 0:
        raise DataError(f"database '{db_path}' is empty")
    logger.info("Processed %d files.", count)
    # Caffe sums in float and divides by the count in float.
    return total.astype(np.float32) / np.float32(count)


def mean_to_proto(mean):
    proto = caffe_pb2.BlobProto()
    proto.num, (proto.channels, proto.height, proto.width) = 1, mean.shape
    proto.data.extend(mean.ravel().tolist())
    return proto


def run(flags, args):
    mean = compute_mean(args[0], flags["backend"])
    if len(args) == 2:
        logger.info("Write to %s", args[1])
        write_binary(mean_to_proto(mean), args[1])
    logger.info("Number of channels: %d", mean.shape[0])
    for c, value in enumerate(mean.reshape(mean.shape[0], -1).mean(axis=1)):
        logger.info("mean_value channel [%d]: %g", c, value)


def main(argv=None):
    return run_tool(run, argv, FLAGS, USAGE, nargs=(1, 2))


if __name__ == "__main__":
    sys.exit(main())
