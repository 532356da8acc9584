"""ImageData: batches of image files named in a list file (Caffe's ImageDataLayer).

    image_data_param { source: "train.txt" root_folder: "images/" batch_size: 32
                       new_height: 256 new_width: 256 is_color: true shuffle: true rand_skip: 0 }

Each line of `source` is "path label", split at the last space (so paths may hold spaces).  Images are read
with OpenCV's conventions (BGR, or one gray channel with is_color: false), resized bilinearly to
new_height x new_width when both are set, then transformed (transform_param).  With `shuffle` the list is
shuffled at the start and at each new epoch.  top[0] = images, top[1] = labels.  Files are read and
transformed in the prefetch thread; a missing or unreadable file names its line of the list.
"""
import functools
import os
import random

import torch

from ..core.registry import register_layer
from ..data.datum import read_image
from ..data.prefetch import Prefetcher
from ..errors import DataError, LayerError
from ..log import logger
from .base_data import BasePrefetchingDataLayer


def read_image_list(source):
    """[(line number, path, label)] from a Caffe image list file."""
    try:
        with open(source, "r", encoding="utf-8") as handle:
            raw = handle.read().splitlines()
    except OSError as exc:
        raise DataError(f"cannot open image list {source}: {exc.strerror}") from None
    lines = []
    for number, line in enumerate(raw, 1):
        if not line.strip():
            continue
        path, _, label = line.rpartition(" ")
        try:
            lines.append((number, path, int(label)))
        except ValueError:
            raise DataError(f"{source}:{number}: Expect: 'path label' with an integer label, "
                            f"Actual: {line!r}") from None
    if not lines:
        raise DataError(f"image list {source} is empty")
    return lines


class ImageRecords:
    """Endless (line number, path, label) records in list order, reshuffled each epoch when asked."""

    def __init__(self, lines, shuffle, skip, seed):
        self.lines, self.shuffle, self.position = list(lines), shuffle, skip
        self.rng = random.Random(seed)
        if shuffle:
            self.rng.shuffle(self.lines)

    def __iter__(self):
        while True:
            while self.position < len(self.lines):
                self.position += 1
                yield self.lines[self.position - 1]
            self.position = 0
            if self.shuffle:
                self.rng.shuffle(self.lines)


def load_image_batch(transformer, source, root, height, width, is_color, chunk):
    images = []
    for number, path, _ in chunk:
        try:
            images.append(read_image(os.path.join(root, path) if root else path, height, width, is_color))
        except DataError as exc:
            raise DataError(f"{source}:{number} ('{path}'): {exc}") from None
    keys = [f"{source}:{number} ('{path}')" for number, path, _ in chunk]
    data = transformer.transform_images(images, keys)
    labels = torch.tensor([label for _, _, label in chunk], dtype=transformer.dtype, device=transformer.device)
    return data, labels


@register_layer("ImageData")
class ImageDataLayer(BasePrefetchingDataLayer):
    exact_num_top_blobs = 2

    def data_layer_setup(self, bottom, top):
        param = self.param.image_data_param
        self.expect((param.new_height == 0 and param.new_width == 0) or
                    (param.new_height > 0 and param.new_width > 0),
                    f"Expect: new_height and new_width set together, Actual: new_height {param.new_height}, "
                    f"new_width {param.new_width}")
        self.expect(param.batch_size > 0, f"Expect: batch_size > 0, Actual: {param.batch_size}")
        logger.info("Opening file %s", param.source)
        try:
            self.lines = read_image_list(param.source)
        except DataError as exc:
            raise LayerError(str(exc), self.name, self.type) from None
        if param.shuffle:
            logger.info("Shuffling data")
        logger.info("A total of %d images.", len(self.lines))
        self.skip = 0
        if param.rand_skip:
            self.skip = random.randrange(param.rand_skip)
            logger.info("Skipping first %d data points.", self.skip)
            self.expect(len(self.lines) > self.skip, f"Expect: more images than the skip {self.skip}, "
                                                     f"Actual: {len(self.lines)}")
        self.records = ImageRecords(self.lines, param.shuffle, self.skip, int(torch.randint(0, 2 ** 62, ())))
        number, path, _ = self.records.lines[self.skip]
        try:
            image = read_image(self._path(path), param.new_height, param.new_width, param.is_color)
            height, width, channels = image.shape
            shape = self.transformer.output_shape((channels, height, width))
        except DataError as exc:
            raise LayerError(f"{param.source}:{number} ('{path}'): {exc}", self.name, self.type) from None
        top[0].reshape((param.batch_size,) + tuple(shape))
        logger.info("output data size: %s", ",".join(str(s) for s in top[0].shape))
        top[1].reshape((param.batch_size,))

    def _path(self, path):
        root = self.param.image_data_param.root_folder
        return root + path if root else path

    def make_prefetcher(self):
        param = self.param.image_data_param
        loader = functools.partial(load_image_batch, self.transformer, param.source, "", param.new_height,
                                   param.new_width, param.is_color)
        # Caffe concatenates root_folder and the path as strings: keep that, through the records.
        records = ((n, self._path(p), label) for n, p, label in self.records)
        # Every prefetching layer takes its queue depth from data_param.prefetch, as in Caffe.
        return Prefetcher(records, param.batch_size, loader, self.param.data_param.prefetch, name=self.name)
