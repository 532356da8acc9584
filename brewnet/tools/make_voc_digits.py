"""make_voc_digits: write a PASCAL VOC2012-layout segmentation set drawn from MNIST digits (book ch. 9).

    python -m brewnet.tools.make_voc_digits [-train N -val M -seed S -min_size 64 -max_size 128]
                                            [IDX_FOLDER] OUT_FOLDER

OUT_FOLDER receives JPEGImages/<id>.jpg, SegmentationClass/<id>.png (VOC's palette; 0 background, 1..10 the
digits 0..9, 255 the ignore ring around each digit) and ImageSets/Segmentation/train.txt and val.txt; the
training images use IDX_FOLDER's training digits, the validation images its test digits (IDX_FOLDER: four
MNIST-style IDX files, the bundled data/mnist10k by default).  brewnet/data/voc_digits.py describes the images.
The same flags write byte-identical files.
"""
import sys

from ..data.voc_digits import make_voc_digits
from ..log import logger
from .tool_flags import run_tool

USAGE = ("Write a VOC2012-layout segmentation set (JPEGImages, SegmentationClass, ImageSets/Segmentation) of "
         "MNIST digits on textured backgrounds.\n"
         "Usage:\n    make_voc_digits [FLAGS] [idx_folder] out_folder")
FLAGS = {
    "train": (1464, "Number of training images (from the training digits); VOC2012's segmentation train size"),
    "val": (1449, "Number of validation images (from the test digits); VOC2012's segmentation val size"),
    "seed": (0, "Random seed; the same seed and flags write byte-identical files"),
    "min_size": (64, "Smallest image side in pixels"),
    "max_size": (128, "Largest image side in pixels"),
}


def generate(flags, args):
    idx_folder, out_folder = (None, args[0]) if len(args) == 1 else args
    manifest = make_voc_digits(out_folder, train=flags["train"], val=flags["val"], seed=flags["seed"],
                               min_size=flags["min_size"], max_size=flags["max_size"], idx_folder=idx_folder)
    for split, entries in manifest.items():
        logger.info("Wrote %d %s images (%d digits) to %s", len(entries), split,
                    sum(len(entry["digits"]) for entry in entries), out_folder)
    return manifest


def main(argv=None):
    return run_tool(generate, argv, FLAGS, USAGE, nargs=(1, 2))


if __name__ == "__main__":
    sys.exit(main())
