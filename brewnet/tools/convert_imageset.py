"""convert_imageset: image files named in a list -> a database of Datum records (Caffe's tool).

    python -m brewnet.tools.convert_imageset [FLAGS] ROOTFOLDER/ LISTFILE DB_NAME

LISTFILE lines are "subfolder1/file1.JPEG 7" (split at the last space).  Flags as Caffe's:
  -gray             read images as one gray channel
  -shuffle          shuffle the list first
  -backend          lmdb or leveldb
  -resize_height / -resize_width   bilinear resize when both > 0
  -check_size       every record must have the first one's size
  -encoded / -encode_type          store JPEG/PNG bytes instead of pixels (the original file when it
                                   already has that format and needs no conversion)
Keys are "%08d_path" (index in the possibly shuffled list).  An unreadable image is reported with its line
and skipped, as Caffe does.
"""
import random
import sys

from ..data import db as db_mod
from ..data.datum import encode_image, image_to_datum, read_image
from ..errors import DataError
from ..log import logger
from .progress import Progress
from .tool_flags import run_tool

USAGE = ("Convert a set of images to the leveldb/lmdb\nformat used as input for Caffe.\n"
         "Usage:\n    convert_imageset [FLAGS] ROOTFOLDER/ LISTFILE DB_NAME")
FLAGS = {
    "gray": (False, "When this option is on, treat images as grayscale ones"),
    "shuffle": (False, "Randomly shuffle the order of images and their labels"),
    "backend": ("lmdb", "The backend {lmdb, leveldb} for storing the result"),
    "resize_width": (0, "Width images are resized to"),
    "resize_height": (0, "Height images are resized to"),
    "check_size": (False, "When this option is on, check that all the datum have the same size"),
    "encoded": (False, "When this option is on, the encoded image will be save in datum"),
    "encode_type": ("", "Optional: What type should we encode the image as ('png','jpg',...)."),
}


def read_list(list_file):
    from ..layers.image_data import read_image_list
    return [(path, label, number) for number, path, label in read_image_list(list_file)]


def image_datum(path, label, height, width, is_color, encoding):
    """Caffe's ReadImageToDatum."""
    image = read_image(path, height, width, is_color)
    if not encoding:
        return image_to_datum(image, label)
    if (image.shape[2] == 3) == is_color and not height and not width and \
            path.lower().rsplit(".", 1)[-1] == encoding.lower():
        with open(path, "rb") as handle:  # already in the asked format: store the file as it is
            return image_to_datum(None, label, encoded_bytes=handle.read())
    return image_to_datum(None, label, encoded_bytes=encode_image(image, encoding))


def convert(root_folder, list_file, db_path, gray=False, shuffle=False, backend="lmdb", resize_height=0,
            resize_width=0, check_size=False, encoded=False, encode_type="", seed=None):
    lines = read_list(list_file)
    if shuffle:
        logger.info("Shuffling data")
        random.Random(seed).shuffle(lines)
    logger.info("A total of %d images.", len(lines))
    if encode_type and not encoded:
        logger.info("encode_type specified, assuming encoded=true.")
    resize_height, resize_width = max(0, resize_height), max(0, resize_width)
    count, data_size = 0, None
    progress = Progress(len(lines), "convert_imageset")
    with db_mod.open_db(db_path, backend, db_mod.NEW) as database:
        txn = database.transaction()
        for index, (path, label, number) in enumerate(lines):
            encoding = encode_type
            if encoded and not encoding:
                encoding = path.rsplit(".", 1)[-1].lower() if "." in path else ""
                if not encoding:
                    logger.warning("Failed to guess the encoding of '%s'", path)
            try:
                datum = image_datum(root_folder + path, label, resize_height, resize_width, not gray, encoding)
            except DataError as exc:
                logger.error("%s:%d: %s (skipped)", list_file, number, exc)
                continue
            if check_size:
                size = len(datum.data)
                if data_size is None:
                    data_size = datum.channels * datum.height * datum.width
                elif size != data_size:
                    raise DataError(f"{list_file}:{number} ('{path}'): Incorrect data field size {size} "
                                    f"(Expect: {data_size})")
            txn.put(db_mod.format_key(index, path), datum.SerializeToString())
            count += 1
            if count % 1000 == 0:
                txn.commit()
                logger.info("Processed %d files.", count)
            progress.update(index + 1)
        txn.commit()
    progress.close()
    logger.info("Processed %d files.", count)
    return count


def main(argv=None):
    return run_tool(lambda flags, args: convert(*args, **flags), argv, FLAGS, USAGE, nargs=(3,))


if __name__ == "__main__":
    sys.exit(main())
