"""caffe.coord_map: how the spatial coordinates of one NetSpec top relate to another's (pycaffe's coord_map).

FCN-style nets upsample a coarse score map with a Deconvolution and crop it back onto the input; the crop
offset follows from the layers between the two tops.  Every spatial layer maps an input coordinate x to an
output coordinate y by an affine map along its spatial axes,

    y = a * x + b       Convolution / Pooling / Im2col:  a = 1 / stride,  b = (pad - (k_eff - 1) / 2) / stride
                        Deconvolution:                   a = stride,      b = (k_eff - 1) / 2 - pad
                        Crop (axis, offset):             a = 1,           b = -offset
                        pointwise layers (ReLU, ...):    a = 1,           b = 0    (any axis)

where k_eff = (kernel_size - 1) * dilation + 1, and `a`, `b` are NumPy arrays with one value per spatial axis
(as kernel_size / stride / pad are given: one value for all axes, or one per axis).  A map is the triple
(axis, a, b): `axis` is the first spatial axis minus one (None for a pointwise map).

    ax, a, b = coord_map_from_to(n.score, n.data)     # coordinates of n.score in terms of n.data
    n.score_crop = crop(n.upscore, n.data)            # a Crop layer that aligns n.upscore onto n.data

coord_map_from_to walks back from both tops to a common ancestor, composing maps on the way.  Errors keep
pycaffe's types, which scripts catch: a layer without a map stops the walk (UndefinedMapException), tops with
no spatial path between them raise a RuntimeError, and crop() refuses a scale other than 1, a negative or a
fractional offset with an AssertionError — each a brewnet error naming the values.
"""
import collections

import numpy as np

from ..errors import BrewnetError
from .net_spec import layers as L

# Layers that change no coordinate: their map is the identity, whatever the axis.
PASS_THROUGH_LAYERS = ["AbsVal", "BatchNorm", "Bias", "BNLL", "Dropout", "Eltwise", "ELU", "Log", "LRN", "Exp",
                       "MVN", "Power", "ReLU", "PReLU", "Scale", "Sigmoid", "Split", "TanH", "Threshold"]

_LEGACY_FIELDS = ("kernel_h", "kernel_w", "stride_h", "stride_w", "pad_h", "pad_w")


class UndefinedMapException(BrewnetError):
    """A layer type whose coordinate map is not defined (InnerProduct, ...)."""


class AxisMismatchException(BrewnetError):
    """Two maps along different axes cannot be composed."""


class CoordMapError(BrewnetError, RuntimeError):
    """No spatial path joins the two tops (a RuntimeError, as pycaffe raises)."""


class CropError(BrewnetError, AssertionError):
    """crop() cannot align the tops: pycaffe asserts, so this is an AssertionError too (raised explicitly)."""


def _vector(value):
    return np.array(value, ndmin=1)


def conv_params(fn):
    """(axis, stride, effective kernel extent, pad) of a Convolution / Deconvolution / Pooling / Im2col layer,
    whether its parameters were given flat (L.Pooling(kernel_size=2)) or as convolution_param=dict(...)."""
    params = fn.params.get("convolution_param", fn.params)
    legacy = sorted(set(_LEGACY_FIELDS) & (set(params) | set(fn.params)))
    if legacy:
        raise CropError(f"coord_map: {fn.type_name} layer uses {', '.join(legacy)}; the coordinate map needs "
                        f"kernel_size / stride / pad (the _h/_w forms are not supported)")
    extent = (_vector(params["kernel_size"]) - 1) * _vector(params.get("dilation", 1)) + 1
    return (params.get("axis", 1), _vector(params.get("stride", 1)), extent, _vector(params.get("pad", 0)))


def crop_params(fn):
    """(axis, offset) of a Crop layer; Caffe's defaults: axis 2, offset 0."""
    params = fn.params.get("crop_param", fn.params)
    return params.get("axis", 2), _vector(params.get("offset", 0))


def coord_map(fn):
    """The map (axis, a, b) of one layer: output coordinate = a * input coordinate + b."""
    kind = fn.type_name
    if kind in ("Convolution", "Pooling", "Im2col"):
        axis, stride, extent, pad = conv_params(fn)
        return axis, 1 / stride, (pad - (extent - 1) / 2) / stride
    if kind == "Deconvolution":
        axis, stride, extent, pad = conv_params(fn)
        return axis, stride, (extent - 1) / 2 - pad
    if kind in PASS_THROUGH_LAYERS:
        return None, 1, 0
    if kind == "Crop":
        axis, offset = crop_params(fn)
        return axis - 1, 1, -offset
    raise UndefinedMapException(f"coord_map: no coordinate map for a {kind} layer")


def compose(base_map, next_map):
    """The map that applies next_map, then base_map: scales multiply, next_map's shift is scaled by base's."""
    ax1, a1, b1 = base_map
    ax2, a2, b2 = next_map
    if ax1 is not None and ax2 is not None and ax1 != ax2:
        raise AxisMismatchException(f"coord_map: cannot compose maps along axes {ax1} and {ax2}")
    return (ax2 if ax1 is None else ax1), a1 * a2, a1 * b2 + b1


def inverse(coord_map):
    """The map back: x = (y - b) / a."""
    ax, a, b = coord_map
    return ax, 1 / a, -b / a


def _mapped_bottoms(top):
    """The bottoms a walk may continue through: all of them, except a Crop's second (reference) bottom."""
    return top.fn.inputs[:1] if top.fn.type_name == "Crop" else top.fn.inputs


def _ancestors(top):
    """Yield (ancestor, map from the ancestor's coordinates to top's), breadth first, top itself first."""
    maps = {top: (None, 1, 0)}
    queue = collections.deque([top])
    while queue:
        current = queue.popleft()
        yield current, maps[current]
        try:
            step = coord_map(current.fn)
        except UndefinedMapException:
            continue
        for bottom in _mapped_bottoms(current):
            if bottom not in maps:
                maps[bottom] = compose(maps[current], step)
                queue.append(bottom)


def coord_map_from_to(top_from, top_to):
    """(axis, a, b) such that a coordinate x of top_from sits at a * x + b in top_to's coordinates, found
    through the nearest top that both descend from."""
    from_maps = dict(_ancestors(top_from))
    for ancestor, to_map in _ancestors(top_to):
        if ancestor in from_maps:
            return compose(to_map, inverse(from_maps[ancestor]))
    raise CoordMapError("Could not compute map between tops; are they connected by spatial layers? "
                        f"({_describe(top_from)} and {_describe(top_to)} share no ancestor reachable through "
                        "layers with a coordinate map)")


def _describe(top):
    return f"a top of {top.fn.type_name}" if top.fn.ntop == 1 else f"top {top.n} of {top.fn.type_name}"


def crop(top_from, top_to):
    """A Crop layer (NetSpec top) that cuts top_from down to top_to's extent, aligned by their coordinate map."""
    ax, a, b = coord_map_from_to(top_from, top_to)
    if not np.all(a == 1):
        raise CropError(f"scale mismatch on crop (a = {a}): the two tops are not at the same resolution")
    if not np.all(b <= 0):
        raise CropError(f"cannot crop negative offset (b = {b}): top_from would have to be padded, not cropped")
    if not np.all(np.round(b) == b):
        raise CropError(f"cannot crop noninteger offset (b = {b})")
    offsets = [int(v) for v in -np.round(b)]
    return L.Crop(top_from, top_to, crop_param=dict(axis=ax + 1, offset=offsets))
