"""Create the MNIST databases for the LeNet examples (Caffe's examples/mnist/create_mnist.sh).

    python examples/mnist/create_mnist.py                      # the bundled digits, data/mnist10k
    python examples/mnist/create_mnist.py --data /path/to/mnist          # full MNIST IDX files
    python examples/mnist/create_mnist.py --data /usr/share/datasets/fashion-mnist   # Fashion-MNIST
    python examples/mnist/create_mnist.py --backend leveldb --out examples/mnist --force

The data folder holds the four IDX files under their usual names (train-images-idx3-ubyte,
train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte), gzip-compressed or not.  The
databases are written as mnist_train_<backend> and mnist_test_<backend> in the output folder, where
lenet_train_test.prototxt expects them when run from the repository root.
"""
import argparse
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)

from brewnet.log import init_log, logger  # noqa: E402
from brewnet.tools import convert_mnist_data  # noqa: E402


def idx_file(folder, stem):
    for name in (stem, stem + ".gz"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    # Fashion-MNIST / some mirrors use "t10k-images.idx3-ubyte"-style names
    dotted = stem.replace("-idx", ".idx")
    for name in (dotted, dotted + ".gz"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    raise SystemExit(f"create_mnist: no {stem}[.gz] in {folder}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=os.path.join(ROOT, "data", "mnist10k"),
                        help="folder with the IDX files (default: the bundled 8 000/2 000 digits)")
    parser.add_argument("--out", default=HERE, help="folder for the databases (default: examples/mnist)")
    parser.add_argument("--backend", default="lmdb", choices=["lmdb", "leveldb"])
    parser.add_argument("--force", action="store_true", help="replace existing databases")
    args = parser.parse_args(argv)
    init_log()
    for split, prefix in (("train", "train"), ("test", "t10k")):
        target = os.path.join(args.out, f"mnist_{split}_{args.backend}")
        if os.path.exists(target):
            if not args.force:
                logger.info("%s exists; keeping it (use --force to rebuild)", target)
                continue
            shutil.rmtree(target)
        logger.info("Creating %s...", target)
        status = convert_mnist_data.main([f"--backend={args.backend}",
                                          idx_file(args.data, f"{prefix}-images-idx3-ubyte"),
                                          idx_file(args.data, f"{prefix}-labels-idx1-ubyte"), target])
        if status:
            return status
    logger.info("Done.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
