"""VOC digits: a seeded stand-in for PASCAL VOC2012's segmentation set, drawn from MNIST digits (book ch. 9).

PASCAL VOC cannot be downloaded everywhere; FCN and CRF-as-RNN experiments still need its layout.  This module
writes one, with the ten digit classes in place of VOC's twenty object classes:

    OUT/JPEGImages/<id>.jpg                  RGB image
    OUT/SegmentationClass/<id>.png           "P"-mode PNG with VOC's palette; the pixel values are the labels:
                                             0 background, 1..10 the digits 0..9 (class = digit + 1),
                                             255 "ignore", a ring around each digit as VOC draws around objects
    OUT/ImageSets/Segmentation/train.txt     the training ids (digits of the IDX folder's training set)
    OUT/ImageSets/Segmentation/val.txt       the validation ids (digits of its test set)

Each image is min_size..max_size pixels a side (height and width drawn separately), holds 1..max_digits digits
scaled 0.8x..2x and placed so that no digit's strokes touch another's ring, on a smooth random colour gradient
with low-frequency texture and pixel noise.  A digit is painted in a colour chosen away from the background
under it (alpha-blended by its grey level), so that the colour edge a CRF's appearance kernel sees coincides
with the label edge.  The label of a digit is its stroke: the scaled digit's pixels above 127; the ignore ring
is the stroke dilated by 1 pixel (digits scaled under 1.4x) or 2 pixels, minus the stroke.

    manifest = make_voc_digits("voc_digits", train=20, val=10, seed=0)    # writes the folder
    image, label = load_voc_pair("voc_digits", manifest["train"][0]["id"])
    image, label, digits = draw_image(digit_images, digit_labels, rng)    # one image in memory

The same arguments write byte-identical files.  Training and validation images come from their own random
streams (seed, 0) and (seed, 1), so the validation set does not change with the number of training images.
Command line: `python -m brewnet.tools.make_voc_digits`.
"""
import os

import numpy as np
from PIL import Image

from ..errors import DataValueError
from .idx_sets import load_idx_set

IGNORE = 255
NUM_CLASSES = 11            # background + ten digits
SPLITS = ("train", "val")   # drawn from the IDX training and test digits respectively
SCALES = (0.8, 2.0)
RING_SCALE = 1.4            # digits scaled at least this much get a 2-pixel ignore ring, the others 1 pixel
JPEG_QUALITY = 95
_PLACEMENT_TRIES = 30


def voc_palette():
    """VOC's 256-colour palette as 768 bytes' worth of ints: entry i spreads the bits of i, lowest first,
    over the high bits of red, green and blue (1 -> (128, 0, 0), 2 -> (0, 128, 0), 255 -> (224, 224, 192))."""
    index = np.arange(256)
    colours = np.zeros((256, 3), dtype=np.int64)
    for shift in range(8):
        for channel in range(3):
            bit = (index >> (3 * shift + channel)) & 1
            colours[:, channel] |= bit << (7 - shift)
    return colours.reshape(-1).tolist()


def _check_arguments(train, val, min_size, max_size, max_digits, seed):
    def bad(name, value, expect):
        raise DataValueError(f"make_voc_digits: {name} = {value!r}; Expect: {expect}")
    for name, value in (("train", train), ("val", val)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            bad(name, value, "a number of images >= 0")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        bad("seed", seed, "an integer >= 0")
    if min_size < 32:
        bad("min_size", min_size, "at least 32 pixels (a digit is 28)")
    if max_size < min_size:
        bad("max_size", max_size, f"at least min_size = {min_size}")
    if max_digits < 1:
        bad("max_digits", max_digits, "at least 1")


# --- drawing one image -------------------------------------------------------------------------------------------
def _interpolation(size, knots):
    """size x knots matrix of linear interpolation weights from `knots` evenly spaced values to `size` pixels."""
    position = np.linspace(0, knots - 1, size)
    low = np.minimum(position.astype(np.int64), knots - 2)
    weights = np.zeros((size, knots))
    weights[np.arange(size), low] = 1 - (position - low)
    weights[np.arange(size), low + 1] = position - low
    return weights


def _smooth_field(rng, height, width, knots, spread, centre):
    """A height x width x 3 field bilinearly interpolated from a knots x knots grid of random colours."""
    grid = centre + spread * rng.uniform(-1, 1, size=(knots, knots, 3))
    return np.einsum("yi,ijc,xj->yxc", _interpolation(height, knots), grid, _interpolation(width, knots))


def _background(rng, height, width):
    """A colour gradient between four random corner colours plus a coarse random texture (float, 0..255)."""
    gradient = _smooth_field(rng, height, width, 2, 110.0, 128.0)
    texture = _smooth_field(rng, height, width, 6, 25.0, 0.0)
    return gradient + texture


def _dilate(mask, radius):
    """Binary dilation by a (2 radius + 1)-pixel square, as shifted ORs of a padded copy."""
    padded = np.pad(mask, radius)
    height, width = mask.shape
    out = np.zeros_like(mask)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            out |= padded[dy:dy + height, dx:dx + width]
    return out


def _digit_colour(rng, under):
    """A random colour, pushed channel by channel away from the mean colour `under` the digit: darker on a
    light channel, lighter on a dark one, so that the digit's edge is an edge in colour and intensity."""
    colour = rng.uniform(0, 255, size=3)
    mean = under.reshape(-1, 3).mean(axis=0)
    return np.where(mean > 127.5, colour * 0.3, 255 - (255 - colour) * 0.3)


def _place(rng, stroke, ring_radius, taken, height, width):
    """Top-left corner where the digit's stroke, dilated by its ring, misses every pixel already taken
    (strokes and rings of the digits before it); None after _PLACEMENT_TRIES tries."""
    size = stroke.shape[0]
    halo = _dilate(stroke, ring_radius)
    for _ in range(_PLACEMENT_TRIES):
        y, x = int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))
        if not (taken[y:y + size, x:x + size] & halo).any():
            return y, x
    return None


def draw_image(digit_images, digit_labels, rng, min_size=64, max_size=128, max_digits=4):
    """One image from a set of 28 x 28 digits: (H x W x 3 uint8 image, H x W uint8 label, list of the digits
    placed, each {"digit", "class", "source_index", "scale", "box": (y, x, size, size), "colour"})."""
    height, width = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
    image = _background(rng, height, width)
    label = np.zeros((height, width), dtype=np.uint8)
    taken = np.zeros((height, width), dtype=bool)
    placed = []
    for _ in range(int(rng.integers(1, max_digits + 1))):
        index = int(rng.integers(0, len(digit_images)))
        scale = float(rng.uniform(*SCALES))
        size = min(int(round(28 * scale)), height, width)
        grey = np.asarray(Image.fromarray(digit_images[index]).resize((size, size), Image.Resampling.BILINEAR))
        stroke = grey > 127
        ring_radius = 2 if scale >= RING_SCALE else 1
        corner = _place(rng, stroke, ring_radius, taken, height, width)
        if corner is None or not stroke.any():
            continue
        y, x = corner
        window = (slice(y, y + size), slice(x, x + size))
        colour = _digit_colour(rng, image[window])
        alpha = grey[..., None] / 255.0
        image[window] = image[window] * (1 - alpha) + colour * alpha
        halo = _dilate(stroke, ring_radius)
        digit = int(digit_labels[index])
        label[window][halo & (label[window] == 0)] = IGNORE
        label[window][stroke] = digit + 1
        taken[window] |= halo
        placed.append({"digit": digit, "class": digit + 1, "source_index": index, "scale": scale,
                       "box": (y, x, size, size), "colour": tuple(int(c) for c in np.round(colour))})
    image += rng.normal(0.0, 6.0, size=image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), label, placed


# --- the folder --------------------------------------------------------------------------------------------------
def _write_pair(out_folder, image_id, image, label):
    Image.fromarray(image).save(os.path.join(out_folder, "JPEGImages", image_id + ".jpg"),
                                       quality=JPEG_QUALITY)
    png = Image.fromarray(label)
    png.putpalette(voc_palette())
    png.save(os.path.join(out_folder, "SegmentationClass", image_id + ".png"))


def make_voc_digits(out_folder, train=1464, val=1449, seed=0, min_size=64, max_size=128, idx_folder=None,
                    max_digits=4):
    """Write a VOC2012-layout segmentation set of train + val images to out_folder (default counts: VOC2012's
    segmentation train and val sizes); returns the manifest {"train": [...], "val": [...]}, one entry per
    image: {"id", "height", "width", "digits": draw_image's list}.  idx_folder: MNIST-style IDX files (the
    bundled digits by default)."""
    _check_arguments(train, val, min_size, max_size, max_digits, seed)
    digits = load_idx_set(idx_folder)
    sources = {"train": (digits.train_images, digits.train_labels), "val": (digits.test_images, digits.test_labels)}
    for sub in ("JPEGImages", "SegmentationClass", os.path.join("ImageSets", "Segmentation")):
        os.makedirs(os.path.join(out_folder, sub), exist_ok=True)
    manifest = {}
    for number, (split, count) in enumerate(zip(SPLITS, (train, val))):
        rng = np.random.default_rng([seed, number])
        manifest[split] = []
        for i in range(count):
            image_id = f"{split}_{i:06d}"
            image, label, placed = draw_image(*sources[split], rng, min_size, max_size, max_digits)
            _write_pair(out_folder, image_id, image, label)
            manifest[split].append({"id": image_id, "height": label.shape[0], "width": label.shape[1],
                                    "digits": placed})
        with open(os.path.join(out_folder, "ImageSets", "Segmentation", split + ".txt"), "w") as listing:
            listing.writelines(entry["id"] + "\n" for entry in manifest[split])
    return manifest


def load_voc_pair(folder, image_id):
    """(H x W x 3 uint8 image, H x W uint8 label) of one id, read as FCN's voc_layers.py reads VOC: the JPEG
    through PIL, the PNG's palette indices as the labels."""
    paths = [os.path.join(folder, "JPEGImages", image_id + ".jpg"),
             os.path.join(folder, "SegmentationClass", image_id + ".png")]
    for path in paths:
        if not os.path.isfile(path):
            raise DataValueError(f"{path}: no such file (VOC id {image_id!r} in {folder})")
    with Image.open(paths[0]) as jpeg, Image.open(paths[1]) as png:
        return np.array(jpeg.convert("RGB"), dtype=np.uint8), np.array(png, dtype=np.uint8)
