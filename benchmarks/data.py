"""Records per second from an LMDB to transformed float batches, through the Data layer's threads.

    python benchmarks/data.py [--mnist-records 60000] [--jpeg-records 1000] [--batches 200] [--threads 1]

Two databases are written to a temporary folder first (not timed): MNIST-sized raw records (1 x 28 x 28,
the bundled digits repeated) and 256 x 256 colour JPEG-encoded records.  Then a Data layer (TRAIN phase)
reads them: MNIST with LeNet's `scale: 0.00390625`, JPEG with CaffeNet's `crop_size: 227 mirror: true` and
per-channel mean values.  The clock runs from the first Forward after warm-up to the last; the reader and
prefetch threads work while the main thread takes batches, as in training.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from brewnet.core.blob import Blob  # noqa: E402
from brewnet.core.registry import create_layer  # noqa: E402
from brewnet.data import db as dbm  # noqa: E402
from brewnet.data.datum import array_to_datum, encode_image, image_to_datum  # noqa: E402
from brewnet.data.mnist import read_idx_images, read_idx_labels  # noqa: E402
from brewnet.proto import caffe_pb2  # noqa: E402
from brewnet.proto.io import parse_text  # noqa: E402


def write_db(path, values):
    with dbm.open_db(path, "lmdb", dbm.NEW) as database:
        txn = database.transaction()
        for i, value in enumerate(values):
            txn.put(dbm.format_key(i), value)
            if i % 1000 == 999:
                txn.commit()
        txn.commit()


def mnist_values(count):
    data = os.path.join(ROOT, "data", "mnist10k")
    images = read_idx_images(os.path.join(data, "train-images-idx3-ubyte.gz"))
    labels = read_idx_labels(os.path.join(data, "train-labels-idx1-ubyte.gz"))
    for i in range(count):
        yield array_to_datum(images[i % len(images)], int(labels[i % len(labels)])).SerializeToString()


def jpeg_values(count):
    rng = np.random.RandomState(0)
    y, x = np.mgrid[0:256, 0:256]
    for i in range(count):
        # smooth colour gradients plus noise: a photo-like JPEG size (~20-40 KB)
        base = np.stack([(x + 7 * i) % 256, (y + 3 * i) % 256, (x + y) // 2], axis=2)
        image = np.clip(base + rng.randint(-20, 21, base.shape), 0, 255).astype(np.uint8)
        yield image_to_datum(None, i % 1000, encoded_bytes=encode_image(image, "jpg")).SerializeToString()


def measure(source, batch_size, batches, transform):
    param = parse_text(f'name: "data" type: "Data" top: "data" top: "label" transform_param {{ {transform} }} '
                       f'data_param {{ source: "{source}" backend: LMDB batch_size: {batch_size} }}',
                       caffe_pb2.LayerParameter())
    param.phase = caffe_pb2.TRAIN
    layer = create_layer(param)
    top = [Blob(), Blob()]
    layer.setup([], top)
    try:
        for _ in range(3):
            layer.Forward([], top)
        start = time.perf_counter()
        for _ in range(batches):
            layer.Forward([], top)
        elapsed = time.perf_counter() - start
    finally:
        layer.close()
    return batches * batch_size / elapsed, tuple(top[0].shape)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mnist-records", type=int, default=60000)
    parser.add_argument("--jpeg-records", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--jpeg-batches", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    folder = tempfile.mkdtemp(prefix="brewnet_bench_")
    try:
        write_db(os.path.join(folder, "mnist"), mnist_values(args.mnist_records))
        write_db(os.path.join(folder, "jpeg"), jpeg_values(args.jpeg_records))
        rows = [("MNIST 1x28x28 raw, batch 64, scale", *measure(os.path.join(folder, "mnist"), 64, args.batches,
                                                              "scale: 0.00390625")),
                ("JPEG 256x256x3, batch 32, crop 227 + mirror + mean", *measure(
                    os.path.join(folder, "jpeg"), 32, args.jpeg_batches,
                    "crop_size: 227 mirror: true mean_value: 104 mean_value: 117 mean_value: 123"))]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"torch {torch.__version__}, {args.threads} intra-op thread(s), {os.cpu_count()} CPUs")
    print("| records | batch shape | records/s |\n| --- | --- | --- |")
    for name, rate, shape in rows:
        print(f"| {name} | {'x'.join(map(str, shape))} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
