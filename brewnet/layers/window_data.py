"""WindowData: batches of object / background windows cut out of images and warped (Caffe's WindowDataLayer,
the R-CNN fine-tuning input).

    window_data_param { source: "windows.txt" root_folder: "images/" batch_size: 128
                        fg_threshold: 0.5 bg_threshold: 0.5 fg_fraction: 0.25
                        context_pad: 16 crop_mode: "warp" cache_images: false scale: 1 }
    transform_param { crop_size: 227 mirror: true mean_file: "mean.binaryproto" }   # or mean_value

The window file is a stream of whitespace-separated records, one per image:

    # image_index
    img_path                      (relative to root_folder: the two are joined as strings)
    channels height width
    num_windows
    class_index overlap x1 y1 x2 y2       (num_windows lines, inclusive pixel corners)

A window with overlap >= fg_threshold is foreground (its class_index must be > 0); one with overlap <
bg_threshold is background (label 0); the others are dropped.  `image_index` points into the images in the
order the file lists them.

Each batch holds batch_size - int(batch_size * fg_fraction) background windows, then the foreground ones, each
drawn uniformly at random (with replacement), and mirrored with probability 1/2 when `mirror` is set.  A window
(x1, y1, x2, y2) becomes a crop_size x crop_size image:

    warp                  the window itself is resized to crop_size x crop_size
    context_pad p         the window is grown about its centre by crop_size / (crop_size - 2p), so that after the
    or crop_mode square   warp p pixels of context surround it (square: first widen the shorter side to the
                          longer); the part outside the image is clipped and the clipped region is warped to
                          the size it would have had, placed at the offset the clipped part would have taken,
                          the rest of the output stays 0
    mirror                the warped window is flipped left-right (and so is its placement)
    values                y = (pixel - mean) * scale on the pixels the window covers, 0 elsewhere; the mean
                          image is read at the output position shifted by (W_mean - crop_size) / 2 on both axes

Note `scale` comes from window_data_param, crop_size / mirror / mean from transform_param, as in Caffe.  The
geometry is computed in float32 with round-half-away-from-zero, like Caffe's float arithmetic, so the windows are
the pixels Caffe would cut.  Sampling happens in the reader thread, reading and warping in the prefetch thread.
The exact-resume position is the sampling generator's state.
"""
import functools
import math
import random
from collections import Counter, namedtuple

import numpy as np
import torch

from ..core.registry import register_layer
from ..data.datum import decode_image, read_image, resize
from ..data.prefetch import random_state, set_random_state
from ..errors import DataError, LayerError
from ..log import logger
from .base_data import BasePrefetchingDataLayer, read_lines

Window = namedtuple("Window", "image label overlap x1 y1 x2 y2 line")
Image = namedtuple("Image", "path channels height width line")


def _tokens(path):
    """(token, line number) for every whitespace-separated word of a file."""
    lines = read_lines(path, "window file")
    return [(word, number) for number, line in enumerate(lines, 1) for word in line.split()]


def read_window_file(path, root_folder="", fg_threshold=0.5, bg_threshold=0.5):
    """Parse a window file -> (images, foreground windows, background windows)."""
    tokens = _tokens(path)
    if not tokens:
        raise DataError(f"Window file {path} is empty")
    position = 0

    def take(kind, what):
        nonlocal position
        if position >= len(tokens):
            raise DataError(f"{path}: Expect: {what}, Actual: end of file")
        word, number = tokens[position]
        position += 1
        try:
            return kind(word), number
        except ValueError:
            raise DataError(f"{path}:{number}: Expect: {what} ({kind.__name__}), Actual: {word!r}") from None

    images, fg, bg = [], [], []
    while position < len(tokens):
        hashtag, number = take(str, "'#' starting an image record")
        if hashtag != "#":
            raise DataError(f"{path}:{number}: Expect: '#' starting an image record, Actual: {hashtag!r}")
        index, _ = take(int, "image_index")
        image_path, line = take(str, "image path")
        channels, height, width = (take(int, name)[0] for name in ("channels", "height", "width"))
        images.append(Image(root_folder + image_path, channels, height, width, line))
        num_windows, _ = take(int, "num_windows")
        for _ in range(num_windows):
            label, line = take(int, "class_index")
            overlap = np.float32(take(float, "overlap")[0])
            x1, y1, x2, y2 = (take(int, name)[0] for name in ("x1", "y1", "x2", "y2"))
            window = Window(index, label, float(overlap), x1, y1, x2, y2, line)
            # thresholds compared in float32, as Caffe stores them
            if overlap >= np.float32(fg_threshold):
                if label <= 0:
                    raise DataError(f"{path}:{line}: Expect: a foreground window's class_index > 0, "
                                    f"Actual: {label}")
                fg.append(window)
            elif overlap < np.float32(bg_threshold):
                bg.append(window._replace(label=0, overlap=0.0))
        if index % 100 == 0:
            logger.info("num: %d %s %d %d %d windows to process: %d", index, images[-1].path, channels, height,
                        width, num_windows)
    for window in fg + bg:
        if not 0 <= window.image < len(images):
            raise DataError(f"{path}:{window.line}: Expect: image_index in [0, {len(images)}) (the images of "
                            f"the file, in order), Actual: {window.image}")
    return images, fg, bg


def _round(value):
    """C's round(): halves away from zero (Python's round() goes to even)."""
    return int(math.copysign(math.floor(abs(float(value)) + 0.5), value))


def window_geometry(window, image_height, image_width, crop_size, context_pad=0, square=False, mirror=False):
    """Where a window's pixels come from and go to.

    Returns ((x1, y1, x2, y2) inclusive source region, (out_width, out_height) warp size, pad_h, pad_w): the
    region is resized to out_width x out_height and written at rows pad_h.., columns pad_w.. of the output.
    """
    x1, y1, x2, y2 = window.x1, window.y1, window.x2, window.y2
    if not (context_pad > 0 or square):
        if not (0 <= x1 <= x2 < image_width and 0 <= y1 <= y2 < image_height):
            raise DataError(f"window ({x1}, {y1}, {x2}, {y2}) Expect: inside the {image_width} x "
                            f"{image_height} image")
        return (x1, y1, x2, y2), (crop_size, crop_size), 0, 0
    f32 = np.float32
    context_scale = f32(crop_size) / f32(crop_size - 2 * context_pad)
    half_height, half_width = f32(y2 - y1 + 1) / f32(2), f32(x2 - x1 + 1) / f32(2)
    center_x, center_y = f32(x1) + half_width, f32(y1) + half_height
    if square:
        half_height = half_width = max(half_height, half_width)
    x1, x2 = _round(center_x - half_width * context_scale), _round(center_x + half_width * context_scale)
    y1, y2 = _round(center_y - half_height * context_scale), _round(center_y + half_height * context_scale)
    unclipped_height, unclipped_width = y2 - y1 + 1, x2 - x1 + 1
    # how far the grown region sticks out of the image on each side
    pad_x1, pad_y1 = max(0, -x1), max(0, -y1)
    pad_x2, pad_y2 = max(0, x2 - image_width + 1), max(0, y2 - image_height + 1)
    x1, x2, y1, y2 = x1 + pad_x1, x2 - pad_x2, y1 + pad_y1, y2 - pad_y2
    if not (x1 <= x2 and y1 <= y2):
        raise DataError(f"window ({window.x1}, {window.y1}, {window.x2}, {window.y2}) Expect: overlapping the "
                        f"{image_width} x {image_height} image")
    # the clipped region gets the size (and the offset) it would have in the warp of the whole grown region
    scale_x, scale_y = f32(crop_size) / f32(unclipped_width), f32(crop_size) / f32(unclipped_height)
    out_w, out_h = _round(f32(x2 - x1 + 1) * scale_x), _round(f32(y2 - y1 + 1) * scale_y)
    pad_x1, pad_x2 = _round(f32(pad_x1) * scale_x), _round(f32(pad_x2) * scale_x)
    pad_h = _round(f32(pad_y1) * scale_y)
    pad_w = pad_x2 if mirror else pad_x1   # a mirrored window takes its padding from the other side
    # rounding may overshoot the output by a pixel: trim the warp
    out_h, out_w = min(out_h, crop_size - pad_h), min(out_w, crop_size - pad_w)
    return (x1, y1, x2, y2), (out_w, out_h), pad_h, pad_w


class WindowSampler:
    """Endless (window, mirror) draws, batch by batch: the background windows first, then the foreground.

    Every batch is drawn afresh, so between batches the generator's state is the whole position."""

    def __init__(self, fg, bg, batch_size, fg_fraction, mirror, seed):
        self.fg, self.bg, self.mirror = fg, bg, mirror
        num_fg = int(np.float32(batch_size) * np.float32(fg_fraction))
        self.counts = (batch_size - num_fg, num_fg)
        self.rng = random.Random(seed)

    def position(self):
        return {"rng": random_state(self.rng)}

    def __iter__(self):
        draw = functools.partial(self.rng.getrandbits, 32)
        while True:
            for windows, count in zip((self.bg, self.fg), self.counts):
                for _ in range(count):
                    window = windows[draw() % len(windows)]
                    yield window, bool(self.mirror and draw() % 2)


class WindowBatchLoader:
    """Reads, warps and normalises one batch of (window, mirror) draws; runs in the prefetch thread."""

    def __init__(self, layer, images, cache):
        param = layer.param.window_data_param
        self.source, self.images, self.cache = param.source, images, cache
        self.scale, self.context_pad = param.scale, param.context_pad
        self.square = param.crop_mode == "square"
        self.crop_size, self.channels = layer.crop_size, layer.channels
        self.mean, self.mean_values = layer.mean_crop, layer.mean_values
        self.device, self.dtype = layer.transformer.device, layer.transformer.dtype

    def image(self, index):
        entry = self.images[index]
        if self.cache is not None:
            image = decode_image(self.cache[index], force_color=True, what=f"image {entry.path}")
        else:
            image = read_image(entry.path, is_color=True)
        if image.shape[2] != self.channels:
            raise DataError(f"image {entry.path}: Expect: {self.channels} channels (the window file's), "
                            f"Actual: {image.shape[2]}")
        return image

    def __call__(self, chunk):
        crop = self.crop_size
        raw = np.zeros((len(chunk), self.channels, crop, crop), dtype=np.uint8)
        covered = np.zeros((len(chunk), 1, crop, crop), dtype=bool)
        decoded = {}   # each image of the batch decoded once
        for i, (window, mirror) in enumerate(chunk):
            try:
                if window.image not in decoded:
                    decoded[window.image] = self.image(window.image)
                image = decoded[window.image]
                (x1, y1, x2, y2), size, pad_h, pad_w = window_geometry(
                    window, image.shape[0], image.shape[1], crop, self.context_pad, self.square, mirror)
                warped = resize(image[y1:y2 + 1, x1:x2 + 1], size[1], size[0])
            except DataError as exc:
                raise DataError(f"{self.source}:{window.line}: {exc}") from None
            if mirror:
                warped = warped[:, ::-1]
            height, width = warped.shape[:2]
            raw[i, :, pad_h:pad_h + height, pad_w:pad_w + width] = warped.transpose(2, 0, 1)
            covered[i, :, pad_h:pad_h + height, pad_w:pad_w + width] = True
        x = torch.from_numpy(raw).to(self.device, self.dtype)
        if self.mean is not None:
            x = x - self.mean
        elif len(self.mean_values):
            x = x - self.mean_values.view(1, -1, 1, 1)
        x = torch.where(torch.from_numpy(covered).to(self.device), x * self.scale, x.new_zeros(()))
        labels = torch.tensor([w.label for w, _ in chunk], dtype=self.dtype, device=self.device)
        return x, labels


@register_layer("WindowData")
class WindowDataLayer(BasePrefetchingDataLayer):
    exact_num_top_blobs = 2

    def data_layer_setup(self, bottom, top):
        param, transform = self.param.window_data_param, self.param.transform_param
        logger.info("Window data layer:\n  foreground (object) overlap threshold: %g\n  background (non-object) "
                    "overlap threshold: %g\n  foreground sampling fraction: %g\n  cache_images: %d\n"
                    "  root_folder: %s", param.fg_threshold, param.bg_threshold, param.fg_fraction,
                    param.cache_images, param.root_folder)
        # Caffe reads these from the one message each and silently ignores the twin field: say so.
        for name in ("mean_file", "crop_size", "mirror"):
            if param.HasField(name):
                logger.warning("WindowData %s: window_data_param.%s is ignored (Caffe reads it from "
                               "transform_param)", self.name, name)
        if transform.HasField("scale"):
            logger.warning("WindowData %s: transform_param.scale is ignored (Caffe reads window_data_param.scale)",
                           self.name)
        self.crop_size = transform.crop_size
        self.expect(self.crop_size > 0, f"Expect: transform_param.crop_size > 0, Actual: {self.crop_size}")
        self.expect(param.batch_size > 0, f"Expect: window_data_param.batch_size > 0, Actual: {param.batch_size}")
        self.expect(param.crop_mode in ("warp", "square"),
                    f"Expect: crop_mode 'warp' or 'square', Actual: {param.crop_mode!r}")
        self.expect(2 * param.context_pad < self.crop_size,
                    f"Expect: 2 * context_pad < crop_size, Actual: context_pad {param.context_pad}, "
                    f"crop_size {self.crop_size}")
        try:
            self.images, self.fg, self.bg = read_window_file(param.source, param.root_folder,
                                                             param.fg_threshold, param.bg_threshold)
            self.cache = self._cache_images() if param.cache_images else None
        except DataError as exc:
            raise LayerError(str(exc), self.name, self.type) from None
        logger.info("Number of images: %d", len(self.images))
        histogram = Counter({0: 0})
        histogram.update(w.label for w in self.fg + self.bg)
        for label in sorted(histogram):
            logger.info("class %d has %d samples", label, histogram[label])
        logger.info("Amount of context padding: %d", param.context_pad)
        logger.info("Crop mode: %s", param.crop_mode)

        self.sampler = WindowSampler(self.fg, self.bg, param.batch_size, param.fg_fraction, transform.mirror,
                                     int(torch.randint(0, 2 ** 62, ())))
        for windows, count, kind in ((self.bg, self.sampler.counts[0], "background (overlap < bg_threshold)"),
                                     (self.fg, self.sampler.counts[1], "foreground (overlap >= fg_threshold)")):
            self.expect(count == 0 or windows, f"Expect: {kind} windows in {param.source} to draw {count} per "
                                               f"batch from, Actual: none")
        # Caffe shapes the top with the channels the window file gives for its last image.
        self.channels = self.images[-1].channels
        self.batch_size = param.batch_size
        top[0].reshape((param.batch_size, self.channels, self.crop_size, self.crop_size))
        logger.info("output data size: %s", ",".join(str(s) for s in top[0].shape))
        top[1].reshape((param.batch_size,))
        self._setup_mean()

    def _cache_images(self):
        """The files' bytes, decoded at each use (Caffe's cache_images keeps them as encoded Datums)."""
        cache = []
        for entry in self.images:
            try:
                with open(entry.path, "rb") as handle:
                    cache.append(handle.read())
            except OSError as exc:
                raise DataError(f"{self.param.window_data_param.source}:{entry.line}: Could not open or find "
                                f"file {entry.path}: {exc.strerror}") from None
        return cache

    def _setup_mean(self):
        """The part of the mean image each output pixel subtracts, or the per-channel mean values."""
        crop, channels = self.crop_size, self.channels
        self.mean_crop, self.mean_values = None, self.transformer.mean_values
        mean = self.transformer.mean
        if mean is not None:
            mean_c, mean_h, mean_w = mean.shape
            offset = (mean_w - crop) // 2 if mean_w >= crop else -1
            self.expect(mean_c == channels and offset >= 0 and offset + crop <= mean_h,
                        f"Expect: a mean of {channels} channels at least {crop} x {crop} (centre crop offset "
                        f"(W - crop_size) / 2 on both axes), Actual: mean shape {tuple(mean.shape)}")
            self.mean_crop = mean[:, offset:offset + crop, offset:offset + crop].contiguous()
        elif len(self.mean_values):
            self.expect(len(self.mean_values) in (1, channels),
                        f"Expect: 1 mean_value or one per channel ({channels}), Actual: {len(self.mean_values)}")
            self.mean_values = self.mean_values.expand(channels).contiguous()

    def make_records(self, position):
        if position is not None:
            set_random_state(self.sampler.rng, position["rng"])
        return self.sampler

    def make_loader(self):
        return WindowBatchLoader(self, self.images, self.cache)
