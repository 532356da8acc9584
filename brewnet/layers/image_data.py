"""ImageData: batches of image files named in a list file (Caffe's ImageDataLayer).

    image_data_param { source: "train.txt" root_folder: "images/" batch_size: 32
                       new_height: 256 new_width: 256 is_color: true shuffle: true rand_skip: 0 }

Each line of `source` is "path label", split at the last space (so paths may hold spaces).  Images are read
with OpenCV's conventions (BGR, or one gray channel with is_color: false), resized bilinearly to
new_height x new_width when both are set, then transformed (transform_param).  With `shuffle` the list is
shuffled at the start and at each new epoch.  top[0] = images, top[1] = labels.  Files are read and
transformed in the prefetch thread; a missing or unreadable file names its line of the list.  The
exact-resume position: the next line, the shuffled order and its generator, the transformer's generator.
"""
import functools
import random

import numpy as np
import torch

from ..core.registry import register_layer
from ..data.datum import read_image
from ..data.prefetch import random_state, set_random_state
from ..errors import DataError, LayerError
from ..log import logger
from .base_data import BasePrefetchingDataLayer, read_lines


def read_image_list(source):
    """[(line number, path, label)] from a Caffe image list file."""
    raw = read_lines(source, "image list")
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
    """Endless (line number, path, label) records in list order, reshuffled each epoch when asked.

    position(): {"cursor": index into the current order of the next line, "order": the current order (indices
    into the list; None unshuffled), "rng": the shuffling generator's state (None unshuffled)}."""

    def __init__(self, lines, shuffle, seed, skip=0):
        self.lines, self.shuffle, self.cursor = lines, shuffle, skip
        self.rng = random.Random(seed)
        self.order = np.arange(len(lines))
        if shuffle:
            self._reshuffle()

    @classmethod
    def resumed(cls, lines, shuffle, position):
        records = cls(lines, False, None, position["cursor"])
        if shuffle:
            if position["order"] is None:
                raise DataError("the saved position was recorded without shuffle: it cannot resume a shuffled list")
            records.shuffle, records.order = True, np.array(position["order"], dtype=np.int64)
            set_random_state(records.rng, position["rng"])
        if len(records.order) != len(lines) or not 0 <= records.cursor <= len(lines):
            raise DataError(f"the saved position (line {records.cursor} of {len(records.order)}) does not fit "
                            f"the {len(lines)} lines of the image list")
        return records

    def _reshuffle(self):
        # A new array each time: the positions already handed out keep referring to the old one.
        order = self.order.tolist()
        self.rng.shuffle(order)
        self.order = np.array(order)

    def position(self):
        if not self.shuffle:
            return {"cursor": self.cursor, "order": None, "rng": None}
        return {"cursor": self.cursor, "order": self.order, "rng": random_state(self.rng)}

    def first(self):
        return self.lines[self.order[self.cursor]]

    def __iter__(self):
        while True:
            while self.cursor < len(self.lines):
                self.cursor += 1
                yield self.lines[self.order[self.cursor - 1]]
            self.cursor = 0
            if self.shuffle:
                self._reshuffle()


def load_image_batch(transformer, source, root, height, width, is_color, chunk):
    """(line number, path, label) records -> (images, labels); `root` is prefixed as a string, as in Caffe."""
    images, keys = [], []
    for number, path, _ in chunk:
        keys.append(f"{source}:{number} ('{root + path}')")
        try:
            images.append(read_image(root + path, height, width, is_color))
        except DataError as exc:
            raise DataError(f"{keys[-1]}: {exc}") from None
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
        self.records = ImageRecords(self.lines, param.shuffle, int(torch.randint(0, 2 ** 62, ())), self.skip)
        number, path, _ = self.records.first()
        try:
            image = read_image(param.root_folder + path, param.new_height, param.new_width, param.is_color)
            height, width, channels = image.shape
            shape = self.transformer.output_shape((channels, height, width))
        except DataError as exc:
            raise LayerError(f"{param.source}:{number} ('{path}'): {exc}", self.name, self.type) from None
        self.batch_size = param.batch_size
        top[0].reshape((param.batch_size,) + tuple(shape))
        logger.info("output data size: %s", ",".join(str(s) for s in top[0].shape))
        top[1].reshape((param.batch_size,))

    def make_records(self, position):
        if position is None:
            return self.records
        try:
            return ImageRecords.resumed(self.lines, self.param.image_data_param.shuffle, position)
        except DataError as exc:
            raise LayerError(str(exc), self.name, self.type) from None

    def make_loader(self):
        param = self.param.image_data_param
        return functools.partial(load_image_batch, self.transformer, param.source, param.root_folder,
                                 param.new_height, param.new_width, param.is_color)
