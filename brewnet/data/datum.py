"""Datum: one record of a Caffe database (book 5.7), and its conversion to and from arrays.

A Datum holds an image as `channels x height x width` in one of three forms:

    data        raw uint8 bytes in C x H x W order (what convert_mnist_data / convert_imageset write)
    float_data  float values in the same order
    encoded     `data` holds a whole JPEG/PNG file; decoding gives H x W x C in OpenCV's BGR order

Encoded images are decoded with OpenCV when it is installed (Caffe decodes with OpenCV, and only the same
library gives bit-identical pixels, in particular after resizing and gray conversion); Pillow is the fallback.
"""
import collections
import io

import numpy as np

from ..errors import DataError
from ..proto import caffe_pb2

try:  # OpenCV reproduces Caffe's cv::imdecode / cv::resize exactly; Pillow is close but not identical.
    import cv2
except ImportError:  # pragma: no cover - exercised only where OpenCV is missing
    cv2 = None


def parse_datum(value, key=None):
    """Parse serialized bytes into a Datum; a record that is not a Datum names its key."""
    datum = caffe_pb2.Datum()
    try:
        datum.ParseFromString(value)
    except Exception as exc:  # protobuf's DecodeError and friends
        where = f" (key {key!r})" if key is not None else ""
        raise DataError(f"record{where} is not a serialized Datum: {exc}") from None
    return datum


def array_to_datum(array, label=None):
    """A C x H x W (or H x W) array as a Datum: uint8 arrays go to `data`, anything else to `float_data`."""
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[np.newaxis]
    if array.ndim != 3:
        raise DataError(f"array_to_datum: Expect: a 3-D (C, H, W) array, Actual: shape {array.shape}")
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = (int(s) for s in array.shape)
    if array.dtype == np.uint8:
        datum.data = np.ascontiguousarray(array).tobytes()
    else:
        datum.float_data.extend(array.astype(np.float32).ravel().tolist())
    if label is not None:
        datum.label = int(label)
    return datum


def datum_to_array(datum, force_color=False, force_gray=False):
    """The C x H x W array a Datum holds: uint8 for raw/encoded data, float32 for float_data."""
    if datum.encoded:
        image = decode_image(datum.data, force_color, force_gray)
        return image.transpose(2, 0, 1)
    shape = (datum.channels, datum.height, datum.width)
    count = int(np.prod(shape))
    if len(datum.data):
        if len(datum.data) != count:
            raise DataError(f"Datum: Expect: {count} bytes for shape {' x '.join(map(str, shape))}, "
                            f"Actual: {len(datum.data)} bytes of data")
        return np.frombuffer(datum.data, dtype=np.uint8).reshape(shape)
    if len(datum.float_data) != count:
        raise DataError(f"Datum: Expect: {count} float values for shape {' x '.join(map(str, shape))}, "
                        f"Actual: {len(datum.float_data)} float values")
    return np.asarray(datum.float_data, dtype=np.float32).reshape(shape)


def _flag(force_color, force_gray):
    if force_color and force_gray:
        raise DataError("cannot set both force_color and force_gray")
    if force_color:
        return cv2.IMREAD_COLOR if cv2 else "color"
    if force_gray:
        return cv2.IMREAD_GRAYSCALE if cv2 else "gray"
    return cv2.IMREAD_ANYCOLOR if cv2 else "native"


def _as_hwc(image):
    return image[:, :, np.newaxis] if image.ndim == 2 else image


def decode_image(payload, force_color=False, force_gray=False, what="encoded image"):
    """Decode JPEG/PNG bytes to an H x W x C uint8 array (BGR for colour), like cv::imdecode.

    Neither flag: the image's own channels (gray stays 1 channel, colour 3); force_color: 3 channels;
    force_gray: 1 channel.
    """
    flag = _flag(force_color, force_gray)
    if cv2 is not None:
        image = cv2.imdecode(np.frombuffer(payload, dtype=np.uint8), flag)
        if image is None:
            raise DataError(f"could not decode {what} ({len(payload)} bytes)")
        return _as_hwc(image)
    from PIL import Image
    try:
        pil = Image.open(io.BytesIO(payload))
        pil.load()
    except Exception as exc:
        raise DataError(f"could not decode {what}: {exc}") from None
    gray = flag == "gray" or (flag == "native" and pil.mode in ("L", "I", "I;16", "1"))
    if gray:
        return _as_hwc(np.asarray(pil.convert("L")))
    return np.ascontiguousarray(np.asarray(pil.convert("RGB"))[:, :, ::-1])


def read_image(path, height=0, width=0, is_color=True):
    """Caffe's ReadImageToCVMat: decode a file (colour or gray), resized to height x width when both > 0."""
    try:
        with open(path, "rb") as handle:
            payload = handle.read()
    except OSError as exc:
        raise DataError(f"could not open or find file {path}: {exc.strerror}") from None
    image = decode_image(payload, force_color=is_color, force_gray=not is_color, what=f"image {path}")
    if height > 0 and width > 0:
        image = resize(image, height, width)
    return image


def resize(image, height, width):
    """Bilinear resize of an H x W x C uint8 image, as cv::resize(INTER_LINEAR)."""
    if cv2 is not None:
        return _as_hwc(cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR))
    from PIL import Image
    channels = [np.asarray(Image.fromarray(image[:, :, c]).resize((width, height), Image.BILINEAR))
                for c in range(image.shape[2])]
    return np.stack(channels, axis=2)


def encode_image(image, encode_type="png"):
    """Encode an H x W x C (BGR) uint8 image to `encode_type` bytes, as cv::imencode."""
    ext = "." + (encode_type or "png").lower().lstrip(".")
    if cv2 is not None:
        ok, buffer = cv2.imencode(ext, image)
        if not ok:
            raise DataError(f"could not encode image as {ext}")
        return buffer.tobytes()
    from PIL import Image
    array = image[:, :, 0] if image.shape[2] == 1 else image[:, :, ::-1]
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(out, format={"jpg": "JPEG"}.get(ext[1:], ext[1:].upper()))
    return out.getvalue()


def image_to_datum(image, label=0, encoded_bytes=None):
    """An H x W x C image as a raw Datum, or (with `encoded_bytes`) an encoded Datum of that image."""
    datum = caffe_pb2.Datum()
    datum.label = int(label)
    if encoded_bytes is not None:
        datum.data = encoded_bytes
        datum.encoded = True
        return datum
    height, width, channels = image.shape
    datum.channels, datum.height, datum.width = channels, height, width
    datum.encoded = False  # Caffe's CVMatToDatum writes the field explicitly: same bytes on disk
    datum.data = np.ascontiguousarray(image.transpose(2, 0, 1)).tobytes()
    return datum


def stack_datums(datums, force_color=False, force_gray=False, keys=None, expected=None):
    """N Datums as one N x C x H x W array (uint8, or float32 for float_data); all must share one shape.

    Raw records are joined and viewed in one go (no per-pixel work in Python); encoded ones are decoded
    one by one.  A record whose byte count does not fit its own shape, or whose shape differs from the
    batch's, names its own key (`expected`, the shape the layer was set up with, settles a tie).
    """
    if not datums:
        raise DataError("stack_datums: no records to stack")
    if all(not d.encoded and len(d.data) for d in datums):
        shapes = [(d.channels, d.height, d.width) for d in datums]
        for i, (d, shape) in enumerate(zip(datums, shapes)):
            if len(d.data) != shape[0] * shape[1] * shape[2]:
                wrong_count(keys, i, len(d.data), shape, "bytes of data")
        check_shapes(keys, shapes, expected)
        # bytearray: one copy, and a writable buffer torch can wrap without a warning.
        flat = np.frombuffer(bytearray().join(d.data for d in datums), dtype=np.uint8)
        return flat.reshape((len(datums),) + shapes[0])
    arrays = decode_datums(datums, force_color, force_gray, keys)
    check_shapes(keys, [a.shape for a in arrays], expected)
    return np.stack(arrays)


def check_shapes(keys, shapes, expected=None):
    """Raise for the first record whose shape is not the batch's: the shape most records have (`expected`
    or else the earliest one on a tie), so a lone odd record is named even when it comes first."""
    counts = collections.Counter(tuple(s) for s in shapes)
    if len(counts) == 1:
        return
    most = max(counts.values())
    tied = [s for s, n in counts.items() if n == most]
    usual = tuple(expected) if expected is not None and tuple(expected) in tied else tied[0]
    for i, shape in enumerate(shapes):
        if tuple(shape) != usual:
            size_mismatch(keys, i, shape, usual)


def decode_datums(datums, force_color=False, force_gray=False, keys=None):
    """Each Datum as its C x H x W array (uint8, or float32 when any record holds float_data)."""
    arrays = []
    for i, d in enumerate(datums):
        try:
            arrays.append(datum_to_array(d, force_color, force_gray))
        except DataError as exc:
            raise DataError(f"{_record(keys, i)}: {exc}") from None
    if any(a.dtype != np.uint8 for a in arrays):
        arrays = [a.astype(np.float32) for a in arrays]
    return arrays


def _record(keys, index):
    return f"record {keys[index]!r}" if keys is not None else f"record {index} of the batch"


def wrong_count(keys, index, count, shape, what):
    needed = shape[0] * shape[1] * shape[2]
    raise DataError(f"{_record(keys, index)}: holds {count} {what} but its shape "
                    f"{' x '.join(map(str, shape))} needs {needed} (a truncated or wrongly written Datum)")


def size_mismatch(keys, index, actual, expected):
    raise DataError(f"{_record(keys, index)}: Expect: shape {tuple(expected)} (that of the other records of "
                    f"the batch; images of different sizes need resizing or a crop), Actual: {tuple(actual)}")
