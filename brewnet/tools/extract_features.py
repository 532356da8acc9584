"""extract_features: the blobs a trained net computes, image by image, into databases (Caffe's tool).

    python -m brewnet.tools.extract_features pretrained_net_param feature_extraction_proto_file \\
        extract_feature_blob_name1[,name2,...] save_feature_dataset_name1[,name2,...] num_mini_batches db_type \\
        [CPU/GPU] [DEVICE_ID=0]

The net (TEST phase, weights from the caffemodel) runs Forward num_mini_batches times; its data layer supplies
the images.  After each pass, every image n of each named blob (N x C x H x W, or N x D) becomes a Datum with
float_data = blob[n] flattened, channels/height/width = the blob's C/H/W (missing axes read as 1, so an N x D
blob gives D x 1 x 1), no label, stored in that blob's new database (db_type lmdb or leveldb) under the key
"%010d" of its running index.  Each database is committed every 1 000 features and at the end.
"""
import sys

import torch

from ..core import common
from ..core.net import Net
from ..data import db as db_mod
from ..errors import BrewnetError
from ..log import logger
from ..proto import caffe_pb2
from .progress import Progress
from .tool_flags import run_tool

USAGE = ("This program takes in a trained network and an input data layer, and then extract features of the "
         "input data produced by the net.\n"
         "Usage: extract_features  pretrained_net_param  feature_extraction_proto_file  "
         "extract_feature_blob_name1[,name2,...]  save_feature_dataset_name1[,name2,...]  num_mini_batches  "
         "db_type  [CPU/GPU] [DEVICE_ID=0]\n"
         "Note: you can extract multiple features in one pass by specifying multiple feature blob names and "
         "dataset names separated by ','. The names cannot contain white space characters and the number of "
         "blobs and datasets must be equal.")
COMMIT_EVERY = 1000


def feature_key(index):
    """Caffe's key for the index-th feature: 10 digits, zero-padded (format_int(index, 10))."""
    return f"{index:010d}"


def feature_datums(blob):
    """One Datum per image of a blob: float_data = its values, C x H x W from the legacy shape accessors."""
    features = blob.data.detach().to("cpu", torch.float32).reshape(blob.num, -1).numpy()
    for row in features:
        datum = caffe_pb2.Datum()
        datum.channels, datum.height, datum.width = blob.channels, blob.height, blob.width
        datum.float_data.extend(row.tolist())
        yield datum


def set_device(args):
    """The optional [CPU/GPU] [DEVICE_ID] arguments (Caffe logs them at ERROR level)."""
    if args and args[0] == "GPU":
        logger.error("Using GPU")
        device_id = 0
        if len(args) > 1:
            try:
                device_id = int(args[1])
            except ValueError:
                raise BrewnetError(f"DEVICE_ID: Expect: an integer >= 0, Actual: {args[1]!r}") from None
            if device_id < 0:
                raise BrewnetError(f"DEVICE_ID: Expect: an integer >= 0, Actual: {device_id}")
        logger.error("Using Device_id=%d", device_id)
        common.set_device(device_id)
        common.set_mode_gpu()
    else:
        logger.error("Using CPU")
        common.set_mode_cpu()


def extract_features(weights, proto, blob_names, dataset_names, num_mini_batches, db_type):
    """Run the net and write the features; returns {blob name: number of features written}."""
    net = Net(proto, phase=caffe_pb2.TEST)
    try:
        net.copy_trained_layers_from(weights)
        if len(blob_names) != len(dataset_names):
            raise BrewnetError(f"Expect: the number of blob names and dataset names to be equal, Actual: "
                               f"{len(blob_names)} blobs ({','.join(blob_names)}), {len(dataset_names)} datasets "
                               f"({','.join(dataset_names)})")
        for name in blob_names:
            if not net.has_blob(name):
                raise BrewnetError(f"Unknown feature blob name {name} in the network {proto} "
                                   f"(blobs: {', '.join(net.blobs)})")
        databases = []
        try:
            for name in dataset_names:
                logger.info("Opening dataset %s", name)
                databases.append(db_mod.open_db(name, db_type, db_mod.NEW))
            return _extract(net, blob_names, databases, num_mini_batches)
        finally:
            for database in databases:
                database.close()
    finally:
        net.close()


def _extract(net, blob_names, databases, num_mini_batches):
    logger.error("Extracting Features")
    txns = [database.transaction() for database in databases]
    counts = [0] * len(blob_names)
    progress = Progress(num_mini_batches, "extract_features")
    for batch_index in range(num_mini_batches):
        net.forward()
        for i, name in enumerate(blob_names):
            for datum in feature_datums(net.blob_by_name(name)):
                txns[i].put(feature_key(counts[i]), datum.SerializeToString())
                counts[i] += 1
                if counts[i] % COMMIT_EVERY == 0:
                    txns[i].commit()
                    logger.error("Extracted features of %d query images for feature blob %s", counts[i], name)
        progress.update(batch_index + 1)
    progress.close()
    for i, name in enumerate(blob_names):
        if counts[i] % COMMIT_EVERY != 0:
            txns[i].commit()
        logger.error("Extracted features of %d query images for feature blob %s", counts[i], name)
    logger.error("Successfully extracted the features!")
    return dict(zip(blob_names, counts))


def run(_, args):
    if len(args) < 6:
        raise BrewnetError(USAGE)   # Caffe logs its usage as an error
    set_device(args[6:])
    weights, proto, blobs, datasets, batches, db_type = args[:6]
    try:
        num_mini_batches = int(batches)
    except ValueError:
        raise BrewnetError(f"num_mini_batches: Expect: an integer, Actual: {batches!r}") from None
    extract_features(weights, proto, blobs.split(","), datasets.split(","), num_mini_batches, db_type)


def main(argv=None):
    # Caffe's extract_features parses no flags: every argument is positional.
    return run_tool(run, argv)


if __name__ == "__main__":
    sys.exit(main())
