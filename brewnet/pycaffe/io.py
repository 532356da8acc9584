"""caffe.io: images, preprocessing for a Net, and Datum / BlobProto <-> NumPy conversion (pycaffe's io.py).

Images are H x W x K float32 in [0, 1], RGB (or one channel), the way scikit-image loads them in pycaffe;
a Net wants K x H x W, often BGR in [0, 255] minus a mean: `Transformer` does that mapping and its inverse,
in pycaffe's order (book 5.8.2):

    preprocess:  float32 -> resize to the input's H x W -> transpose -> channel swap -> * raw_scale
                 -> - mean -> * input_scale
    deprocess:   the same steps undone, in reverse order

`resize_image` reproduces scikit-image's `resize(order=1, mode='constant')` that pycaffe calls — bilinear,
pixel centres aligned, samples beyond the border blend with 0 — on the image scaled to [0, 1] and back; arrays
with other than 1 or 3 channels go the way of SciPy's `zoom(order=1)` (corners aligned), as in pycaffe.
Neither library is needed for interp_order 0 and 1.  interp_order 2 to 5 are B-spline interpolations, computed
by SciPy's ndimage.zoom (the package `scipy`, in the `pycaffe` extra) with the same two geometries: for 1 or 3
channels what scikit-image's resize does (pixel centres aligned, zeros beyond the border, clipped to [0, 1]),
for other channel counts pycaffe's own `zoom(im, scale, order)` call.  scikit-image's resize smooths an image
it shrinks (anti_aliasing) since version 0.15; pycaffe's call predates it and neither path does.
"""
import numpy as np
from PIL import Image

from ..data import datum as _datum
from ..errors import BrewnetError, DataError, DataValueError
from ..proto import caffe_pb2


# --- proto / datum / ndarray conversion ---------------------------------------------------------------------
def blobproto_to_array(blob, return_diff=False):
    """A BlobProto's data (or diff) as an array shaped by its legacy num/channels/height/width or `shape`."""
    if return_diff:
        values = blob.double_diff if len(blob.double_diff) else blob.diff
    else:
        values = blob.double_data if len(blob.double_data) else blob.data
    data = np.array(values, dtype=np.float64)
    if any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        shape = (blob.num, blob.channels, blob.height, blob.width)
    else:
        shape = tuple(blob.shape.dim)
    if data.size != int(np.prod(shape)):
        hint = " (the BlobProto has neither num/channels/height/width nor shape)" if not shape and data.size > 1 \
            else ""
        raise DataValueError(f"blobproto_to_array: {data.size} values for shape {shape}{hint}")
    return data.reshape(shape)


def array_to_blobproto(arr, diff=None):
    """An N-D array (and optionally its diff, same shape) as a BlobProto with a `shape` field."""
    arr = np.asarray(arr)
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(int(s) for s in arr.shape)
    blob.data.extend(arr.astype(np.float64).ravel().tolist())
    if diff is not None:
        diff = np.asarray(diff)
        if diff.shape != arr.shape:
            raise DataValueError(f"array_to_blobproto: Expect: diff of shape {arr.shape}, Actual: {diff.shape}")
        blob.diff.extend(diff.astype(np.float64).ravel().tolist())
    return blob


def arraylist_to_blobprotovector_str(arraylist):
    """Serialized BlobProtoVector of the arrays."""
    vec = caffe_pb2.BlobProtoVector()
    vec.blobs.extend(array_to_blobproto(a) for a in arraylist)
    return vec.SerializeToString()


def blobprotovector_str_to_arraylist(serialized):
    vec = caffe_pb2.BlobProtoVector()
    vec.ParseFromString(serialized)
    return [blobproto_to_array(b) for b in vec.blobs]


def array_to_datum(arr, label=None):
    """A C x H x W array as a Datum: uint8 goes to `data` (bytes), anything else to `float_data`."""
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise DataValueError(f"array_to_datum: Expect: a 3-D (C, H, W) array, Actual: shape {arr.shape}")
    return _datum.array_to_datum(arr, label)


def datum_to_array(datum):
    """A Datum's C x H x W array (the label is datum.label): uint8 for byte data, float64 for float_data (as
    pycaffe); encoded (JPEG/PNG) Datums are decoded.  The array is a writable copy."""
    if datum.encoded or len(datum.data):
        return np.array(_datum.datum_to_array(datum))
    return _datum.datum_to_array(datum).astype(np.float64)


# --- preprocessing ------------------------------------------------------------------------------------------
class Transformer:
    """Format H x W x K images for the inputs of a Net and back.

    inputs: {input blob name: its shape}, e.g. {'data': net.blobs['data'].data.shape}."""

    def __init__(self, inputs):
        self.inputs = {name: tuple(int(d) for d in shape) for name, shape in inputs.items()}
        self.transpose, self.channel_swap, self.raw_scale, self.mean, self.input_scale = {}, {}, {}, {}, {}

    def _check_input(self, in_):
        if in_ not in self.inputs:
            raise BrewnetError(f"'{in_}' is not one of the net inputs: {list(self.inputs)}")

    def preprocess(self, in_, data):
        """H' x W' x K image -> K x H x W float32 array for input `in_` (the caller's array is not modified)."""
        self._check_input(in_)
        caffe_in = np.array(data, dtype=np.float32)
        in_dims = self.inputs[in_][2:]
        if caffe_in.shape[:2] != in_dims:
            caffe_in = resize_image(caffe_in, in_dims)
        transpose = self.transpose.get(in_)
        if transpose is not None:
            caffe_in = caffe_in.transpose(transpose)
        channel_swap = self.channel_swap.get(in_)
        if channel_swap is not None:
            caffe_in = caffe_in[list(channel_swap), :, :]
        caffe_in = np.ascontiguousarray(caffe_in)
        if self.raw_scale.get(in_) is not None:
            caffe_in *= self.raw_scale[in_]
        if self.mean.get(in_) is not None:
            caffe_in -= self.mean[in_]
        if self.input_scale.get(in_) is not None:
            caffe_in *= self.input_scale[in_]
        return caffe_in

    def deprocess(self, in_, data):
        """Undo preprocess: K x H x W (a batch of one is squeezed) -> H x W x K."""
        self._check_input(in_)
        decaf_in = np.array(data, copy=True).squeeze()
        if self.input_scale.get(in_) is not None:
            decaf_in /= self.input_scale[in_]
        if self.mean.get(in_) is not None:
            decaf_in += self.mean[in_]
        if self.raw_scale.get(in_) is not None:
            decaf_in /= self.raw_scale[in_]
        channel_swap = self.channel_swap.get(in_)
        if channel_swap is not None:
            decaf_in = decaf_in[np.argsort(channel_swap), :, :]
        transpose = self.transpose.get(in_)
        if transpose is not None:
            decaf_in = decaf_in.transpose(np.argsort(transpose))
        return decaf_in

    def set_transpose(self, in_, order):
        """Axis order, e.g. (2, 0, 1) turns H x W x K into K x H x W."""
        self._check_input(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise BrewnetError(f"Transpose order needs to have the same number of dimensions as the input: "
                               f"Expect: {len(self.inputs[in_]) - 1}, Actual: {len(order)} ({tuple(order)})")
        self.transpose[in_] = tuple(order)

    def set_channel_swap(self, in_, order):
        """Channel order taken after the transpose, e.g. (2, 1, 0) for RGB -> BGR."""
        self._check_input(in_)
        if len(order) != self.inputs[in_][1]:
            raise BrewnetError(f"Channel swap needs to have the same number of dimensions as the input "
                               f"channels: Expect: {self.inputs[in_][1]}, Actual: {len(order)}")
        self.channel_swap[in_] = tuple(order)

    def set_raw_scale(self, in_, scale):
        """Multiply the raw image (in [0, 1]) by `scale`, e.g. 255 for models trained on [0, 255] pixels."""
        self._check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_, mean):
        """Subtract `mean`: one value per channel (K,) or a K x H x W (or H x W) image, resized if needed."""
        self._check_input(in_)
        mean = np.asarray(mean)
        if mean.ndim == 1:
            if mean.shape[0] != self.inputs[in_][1]:
                raise DataValueError(f"Mean channels incompatible with input: Expect: {self.inputs[in_][1]} "
                                   f"values, Actual: {mean.shape[0]}")
            mean = mean[:, np.newaxis, np.newaxis]
        else:
            shape = (1,) + mean.shape if mean.ndim == 2 else mean.shape
            if len(shape) != 3:
                raise DataValueError(f"Mean shape invalid: Expect: (K,), (H, W) or (K, H, W), Actual: {mean.shape}")
            mean = mean.reshape(shape)
            if shape != self.inputs[in_][1:]:
                lo, hi = mean.min(), mean.max()
                normal = (mean - lo) / (hi - lo) if hi > lo else np.zeros_like(mean, dtype=np.float64)
                resized = resize_image(normal.transpose((1, 2, 0)), self.inputs[in_][2:])
                mean = resized.transpose((2, 0, 1)) * (hi - lo) + lo
        self.mean[in_] = mean

    def set_input_scale(self, in_, scale):
        """Multiply the preprocessed input by `scale` (after the mean is subtracted)."""
        self._check_input(in_)
        self.input_scale[in_] = scale


# --- image IO -----------------------------------------------------------------------------------------------
_GRAY_WEIGHTS = np.array([0.2125, 0.7154, 0.0721])     # scikit-image's rgb2gray (what pycaffe uses)


def load_image(filename, color=True):
    """Load an image as float32 in [0, 1]: H x W x 3 RGB (color=True) or H x W x 1 intensity."""
    try:
        with Image.open(filename) as img:
            img.load()
            array, maximum = _pil_to_array(img)
    except (OSError, ValueError) as error:
        raise DataError(f"load_image: cannot read image {filename}: {error}") from None
    img = array.astype(np.float64) / maximum
    if img.ndim == 3 and img.shape[2] in (2, 4):       # drop alpha
        img = img[:, :, :img.shape[2] - 1]
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if not color and img.ndim == 3:
        img = img @ _GRAY_WEIGHTS
    img = img.astype(np.float32)
    if img.ndim == 2:
        img = img[:, :, np.newaxis]
        if color:
            img = np.tile(img, (1, 1, 3))
    return img


def _pil_to_array(img):
    """(array, maximum value of its type) for any PIL mode we expect to meet."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(img, dtype=np.int64)
        return array, 65535.0 if array.max() > 255 or img.mode.startswith("I;16") else 255.0
    if img.mode == "F":
        return np.asarray(img, dtype=np.float64), 1.0
    if img.mode not in ("L", "LA", "RGB", "RGBA"):
        img = img.convert("RGBA" if "A" in img.mode or "transparency" in img.info else "RGB")
    return np.asarray(img), 255.0


def resize_image(im, new_dims, interp_order=1):
    """Resize an H x W x K image to new_dims = (height, width): interp_order 0 nearest, 1 linear (default),
    2 to 5 B-splines of that order (these need scipy)."""
    im = np.asarray(im)
    new_dims = tuple(int(d) for d in new_dims)
    if im.ndim != 3:
        raise DataValueError(f"resize_image: Expect: an H x W x K array, Actual: shape {im.shape}")
    if isinstance(interp_order, bool) or interp_order not in range(6):
        raise DataValueError(f"resize_image: Expect: interp_order 0 to 5 (0 nearest, 1 linear, 2-5 splines), "
                             f"Actual: {interp_order!r}")
    if im.shape[-1] in (1, 3):
        lo, hi = im.min(), im.max()
        if hi <= lo:    # a constant image: nothing to interpolate
            return np.full(new_dims + (im.shape[-1],), lo, dtype=np.float32)
        normal = (im.astype(np.float64) - lo) / (hi - lo)
        if interp_order <= 1:
            resized = _resize_centres(normal, new_dims, interp_order)
        else:
            resized = np.clip(_zoom(normal, new_dims, interp_order, centres=True), 0.0, 1.0)
        resized = resized * (hi - lo) + lo
    elif interp_order <= 1:
        resized = _resize_corners(im.astype(np.float64), new_dims, interp_order)
    else:
        resized = _zoom(im, new_dims, interp_order, centres=False)
    return resized.astype(np.float32)


def _zoom(im, new_dims, order, centres):
    """SciPy's spline zoom of the two first axes to new_dims: pixel centres aligned with zeros beyond the
    border (scikit-image's resize geometry), or first and last pixels aligned (ndimage.zoom's default)."""
    try:
        from scipy import ndimage
    except ImportError:
        raise DataError(f"resize_image: interp_order {order} needs the package scipy (pip install scipy, or "
                        f"pip install brewnet[pycaffe]); interp_order 0 and 1 work without it") from None
    factors = (new_dims[0] / im.shape[0], new_dims[1] / im.shape[1], 1)
    if centres:
        return ndimage.zoom(im, factors, order=order, mode="grid-constant", grid_mode=True)
    return ndimage.zoom(im, factors, order=order)


def _axis_samples(size_in, size_out, centres):
    """Source coordinates of the output samples along one axis."""
    out = np.arange(size_out, dtype=np.float64)
    if centres:
        return (out + 0.5) * (size_in / size_out) - 0.5
    return out * ((size_in - 1) / (size_out - 1)) if size_out > 1 else np.zeros(1)


def _resize_centres(im, new_dims, order):
    """scikit-image warp semantics: pixel centres aligned, outside samples read 0 (mode='constant'), clipped."""
    padded = np.pad(im, ((1, 1), (1, 1), (0, 0)))
    rows = _axis_samples(im.shape[0], new_dims[0], True) + 1
    cols = _axis_samples(im.shape[1], new_dims[1], True) + 1
    out = _interpolate(padded, rows, cols, order)
    return np.clip(out, 0.0, 1.0)


def _resize_corners(im, new_dims, order):
    """scipy.ndimage.zoom semantics: first and last pixels map onto each other."""
    rows = _axis_samples(im.shape[0], new_dims[0], False)
    cols = _axis_samples(im.shape[1], new_dims[1], False)
    return _interpolate(im, rows, cols, order)


def _interpolate(im, rows, cols, order):
    """Sample im (H x W x K) at the grid rows x cols; coordinates outside [0, H-1] are clamped."""
    h, w = im.shape[:2]
    rows, cols = np.clip(rows, 0, h - 1), np.clip(cols, 0, w - 1)
    if order == 0:
        return im[np.rint(rows).astype(int)][:, np.rint(cols).astype(int)]
    r0 = np.minimum(np.floor(rows).astype(int), h - 2) if h > 1 else np.zeros(len(rows), int)
    c0 = np.minimum(np.floor(cols).astype(int), w - 2) if w > 1 else np.zeros(len(cols), int)
    r1, c1 = np.minimum(r0 + 1, h - 1), np.minimum(c0 + 1, w - 1)
    fr = (rows - r0)[:, None, None]
    fc = (cols - c0)[None, :, None]
    top = im[r0][:, c0] * (1 - fc) + im[r0][:, c1] * fc
    bottom = im[r1][:, c0] * (1 - fc) + im[r1][:, c1] * fc
    return top * (1 - fr) + bottom * fr


def oversample(images, crop_dims):
    """The four corner crops and the centre crop of every image, then the same five mirrored left-right:
    a (10 * N) x h x w x K float32 array (crops 0-3 corners TL, TR, BL, BR; 4 centre; 5-9 their mirrors)."""
    images = [np.asarray(im) for im in images]
    if not images:
        raise DataError("oversample: no images given")
    height, width = images[0].shape[:2]
    ch, cw = (int(d) for d in crop_dims)
    if ch > height or cw > width:
        raise DataError(f"oversample: crop {ch} x {cw} larger than the image {height} x {width}")
    # top-left corners of the five crops; the centre one as pycaffe rounds it (down)
    corners = [(0, 0), (0, width - cw), (height - ch, 0), (height - ch, width - cw),
               (int((height - ch) / 2.0), int((width - cw) / 2.0))]
    crops = np.empty((10 * len(images), ch, cw, images[0].shape[-1]), dtype=np.float32)
    for n, im in enumerate(images):
        if im.shape != images[0].shape:
            raise DataError(f"oversample: Expect: images of one shape {images[0].shape}, Actual: {im.shape} "
                            f"(image {n})")
        for k, (y, x) in enumerate(corners):
            crop = im[y:y + ch, x:x + cw, :]
            crops[10 * n + k] = crop
            crops[10 * n + 5 + k] = crop[:, ::-1, :]
    return crops
