"""Blob: Caffe's N-dimensional array, holding `data` (values) and `diff` (gradients) of the same shape.

Compute code works on the torch tensors `blob.data` and `blob.diff` directly.  Like Caffe's SyncedMemory the
diff is allocated only when first touched.  Reshaping to the same count keeps the memory (a view), a new
count allocates fresh zeros — Caffe keeps its old buffer too, but its contents are undefined there, so zeros
are the honest equivalent.  Legacy 4-D accessors (num/channels/height/width) follow Caffe's LegacyShape.
"""
import math
import sys

import numpy as np
import torch

from ..errors import BrewnetError
from . import common

MAX_BLOB_AXES = 32


_storage_use_count = getattr(torch._C, "_storage_Use_Count", None)


def held_elsewhere(tensor):
    """Whether anything besides the one blob attribute holding `tensor` (and the base it is a view of) uses
    its memory: a NumPy array or another view of it (a pycaffe user's held array, a blob sharing it, a
    layer's alias: each keeps a reference on the storage, and `untyped_storage()` adds one for the call), or
    the tensor object itself (a second blob, a layer keeping it: Python references).  True when torch cannot
    tell.  Call it as `held_elsewhere(obj.attribute)`, the form its reference baseline is measured with."""
    if _storage_use_count is None:
        return True
    return (sys.getrefcount(tensor) != _OWN_REFERENCES
            or _storage_use_count(tensor.untyped_storage()._cdata) != 2 + (tensor._base is not None))


def flat(tensor):
    """tensor.view(-1), or the tensor itself when it is 1-D already (a view costs a microsecond: per layer
    and pass, that adds up)."""
    return tensor if tensor.dim() == 1 else tensor.view(-1)


def scale_all(tensors, factor):
    """tensor *= factor for every tensor of the list (one dtype and device), in one multi-tensor op.  On the
    CPU the factor goes in as a 0-d tensor of their dtype: the scalar form wraps it into a new tensor for
    each list element (a cost per parameter blob); the product is the same, rounded in the tensors'
    dtype."""
    if tensors and tensors[0].is_cpu:
        factor = torch.full((), factor, dtype=tensors[0].dtype)
    torch._foreach_mul_(tensors, factor)


def four_axes(tensor):
    """(N, C, ...) as the 4-D (N, C, H, W) tensor cuDNN's spatial batch norm reads (a view when contiguous)."""
    return tensor if tensor.dim() == 4 else tensor.reshape(tensor.shape[0], tensor.shape[1], -1, 1)


def shapes_of(bottom, top):
    """The shapes of the blobs of bottom and top, as one comparable list (torch.Size values: no tuple
    copies).  Every layer's Forward asks, so the usual one bottom, one top goes without a loop."""
    if len(bottom) == 1 and len(top) == 1:
        return [bottom[0]._data.shape, top[0]._data.shape]
    return [b._data.shape for b in bottom] + [b._data.shape for b in top]


def _own_references(tensor):
    """sys.getrefcount as held_elsewhere sees it (same call shape) for a tensor that one attribute holds."""
    return sys.getrefcount(tensor)


class _Holder:
    pass


_holder = _Holder()
_holder.tensor = torch.zeros(1)
_OWN_REFERENCES = _own_references(_holder.tensor)
del _holder


_placeholders = {}


def _placeholder(data):
    """An empty tensor of data's dtype, device and number of axes: what a blob holds between handing its
    memory over (take_data) and receiving the kernel's result.  One per kind, shared (nothing writes it):
    creating one per call cost more than the rest of a small layer's bookkeeping."""
    key = (data.dtype, data.device, data.dim())
    empty = _placeholders.get(key)
    if empty is None:
        empty = _placeholders[key] = data.new_empty((0,) * data.dim())
    return empty


class AllocationError(BrewnetError):
    """Memory for a blob that cannot be had (a huge shape in a prototxt); the Net adds the layer's name."""


def zeros(shape, dtype, device, name):
    """torch.zeros, with the failure of an allocation that cannot succeed named by blob, shape and bytes
    (torch's own message names neither).  Only allocations pass here, never the per-pass path."""
    try:
        return torch.zeros(shape, dtype=dtype, device=device)
    except (RuntimeError, MemoryError) as exc:       # torch.OutOfMemoryError is a RuntimeError
        size = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AllocationError(f"blob '{name}': cannot allocate shape {' x '.join(map(str, shape)) or '()'} "
                              f"({math.prod(shape)} values, {size} bytes = {size / 2**30:.4g} GiB) on {device}: "
                              f"{reason}") from None


class Blob:
    def __init__(self, shape=(), dtype=None, device=None, name=None):
        self.name = name
        self.dtype = dtype or common.default_dtype()
        self.device = device if device is not None else common.device()
        self._data = zeros(tuple(int(s) for s in shape), self.dtype, self.device, name)
        self._diff = None

    # --- shape -----------------------------------------------------------------------------------------
    @property
    def shape(self):
        return tuple(self._data.shape)

    @property
    def num_axes(self):
        return self._data.dim()

    def count(self, start_axis=0, end_axis=None):
        return math.prod(self._data.shape[start_axis:end_axis])     # Python ints: no overflow, 1 if empty

    def canonical_axis_index(self, axis):
        """Negative axes count from the end, as in Caffe; out of range is a user error."""
        n = self.num_axes
        if not -n <= axis < max(n, 1):
            raise BrewnetError(f"axis {axis} out of range for the {n}-D blob '{self.name}' of shape {self.shape}")
        return axis + n if axis < 0 else axis

    def shape_at(self, axis):
        return self.shape[self.canonical_axis_index(axis)]

    def _legacy(self, index):
        if self.num_axes > 4:
            raise BrewnetError(f"blob '{self.name}' has {self.num_axes} axes; num/channels/height/width "
                               "are only defined up to 4")
        # Caffe's LegacyShape: missing trailing axes read as 1.
        return self.shape[index] if index < self.num_axes else 1

    num = property(lambda self: self._legacy(0))
    channels = property(lambda self: self._legacy(1))
    height = property(lambda self: self._legacy(2))
    width = property(lambda self: self._legacy(3))

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (list, tuple, torch.Size)):
            shape = shape[0]
        if shape == self._data.shape:       # the usual case (every forward reshapes): nothing to check
            return
        shape = tuple(int(s) for s in shape)
        if len(shape) > MAX_BLOB_AXES:
            raise BrewnetError(f"blob '{self.name}': {len(shape)} axes exceed the limit of {MAX_BLOB_AXES}")
        if any(s < 0 for s in shape):
            raise BrewnetError(f"blob '{self.name}': negative dimension in shape {shape}")
        if shape == self.shape:
            return
        if math.prod(shape) == self._data.numel():
            self._data = self._data.view(shape)
            if self._diff is not None:
                self._diff = self._diff.view(shape)
        else:
            self._data = zeros(shape, self.dtype, self.device, self.name)
            self._diff = None

    def reshape_like(self, other):
        self.reshape(other.shape)

    def shape_string(self):
        """'64 20 24 24 (737280)', as Caffe prints shapes in its log."""
        return "".join(f"{s} " for s in self.shape) + f"({self.count()})"

    # --- data and diff ---------------------------------------------------------------------------------
    @property
    def data(self):
        return self._data

    @data.setter
    def data(self, value):
        """Rebind the blob to `value` (aliasing it): for layers whose top *is* other memory (Split, Flatten,
        Parameter).  Computed results go through store_data, which keeps the blob's memory."""
        self._data = self._checked(value, "data")

    @property
    def diff(self):
        if self._diff is None or self._diff.shape != self._data.shape:
            self._diff = torch.zeros_like(self._data)
        return self._diff

    @diff.setter
    def diff(self, value):
        self._diff = self._checked(value, "diff")

    # Caffe computes into a blob's existing memory, so whoever holds it (a pycaffe NumPy view, a blob sharing
    # the diff) sees every new result.  Layers that get a fresh tensor from a torch op hand it over with these
    # instead of the setters, which rebind the blob to the new tensor (right for views/aliases: Split, Flatten).
    def store_data(self, value):
        """Put `value` into the data's own memory when the shapes agree (a no-op when it already is that
        memory); otherwise (a reshape to a new count) adopt it as the data."""
        self._data = self._stored(self._data, value, "data")

    def store_diff(self, value):
        """As store_data, for the diff (which must have the blob's shape)."""
        current = self._diff if self._diff is not None and self._diff.shape == self._data.shape else None
        self._diff = self._stored(current, value, "diff")

    # A layer whose torch op can only return a fresh tensor (convolution: its out= form computes into a
    # temporary and copies) asks to drop the blob's memory first.  Allowed only when nothing else holds that
    # memory (then nobody could tell writing into it from replacing it); dropping it before the op runs lets
    # the allocator hand the same, already mapped, memory to the op.  The caller then sets `.data` / `.diff`
    # to the op's result, of the blob's shape, before anything else reads the blob.
    def release_data(self):
        """Drop the data's memory if nothing else holds it (True); False: keep it and store into it."""
        return self.take_data() is not None

    def take_data(self):
        """Hand the data tensor over to the caller if nothing else holds its memory (None otherwise): a layer
        that keeps its input for backward while giving the blob its output (the Net's fused layers)."""
        if held_elsewhere(self._data):
            return None
        data, self._data = self._data, _placeholder(data=self._data)
        return data

    def release_diff(self):
        """As release_data, for the diff (True also when no diff exists yet).  A dropped diff reads as zeros
        (allocated when next touched): the Net clears parameter gradients this way (clear_param_diffs)."""
        if self._diff is not None and held_elsewhere(self._diff):
            return False
        self._diff = None
        return True

    def diff_released(self):
        """Whether the blob holds no diff (none yet, or dropped by release_diff): it reads as zeros."""
        return self._diff is None

    def accumulate_diff(self, value):
        """diff += value: parameter gradients accumulate, as in Caffe (iter_size, shared weights).  A blob
        without a diff (none yet, or dropped by release_diff when the gradients were cleared) takes `value`
        itself as its diff: 0 + value, with neither a zeroing nor an addition.  So `value` must be a fresh
        tensor the caller does not use afterwards (a kernel's output)."""
        shape = self._data.shape
        if value.shape != shape:            # a kernel's gradient usually has the parameter's shape already
            value = value.view(shape)
        if self._diff is None or self._diff.shape != shape:
            self._diff = self._checked(value, "diff")
        else:
            self._diff.add_(value)

    def _stored(self, current, value, what):
        if current is None or not isinstance(value, torch.Tensor) or value.shape != current.shape:
            return self._checked(value, what)
        if not (value.data_ptr() == current.data_ptr() and value.stride() == current.stride()
                and value.dtype == current.dtype):
            current.copy_(value)
        return current

    def _checked(self, value, what):
        if not isinstance(value, torch.Tensor):
            value = torch.as_tensor(np.asarray(value), dtype=self.dtype, device=self.device)
        if what == "diff" and value.shape != self._data.shape:
            raise BrewnetError(f"blob '{self.name}': {what} of shape {tuple(value.shape)} does not match "
                               f"the blob's shape {self.shape}")
        if value.dtype != self.dtype or value.device != self.device:
            value = value.to(device=self.device, dtype=self.dtype)
        # Contiguous always (a no-op, aliasing kept, for every tensor the layers hand over), so that layers
        # can compute into `blob.data` / `blob.diff` with out= and reshape them as views.
        return value.contiguous()

    def share_data(self, other):
        """Point this blob's data at other's memory (Caffe's ShareData); the counts must agree."""
        if other.count() != self.count():
            raise BrewnetError(f"share_data: blob '{self.name}' has count {self.count()}, "
                               f"'{other.name}' has {other.count()}")
        self._data = other.data.view(self.shape)

    def share_diff(self, other):
        if other.count() != self.count():
            raise BrewnetError(f"share_diff: blob '{self.name}' has count {self.count()}, "
                               f"'{other.name}' has {other.count()}")
        self._diff = other.diff.view(self.shape)

    def to(self, device=None, dtype=None):
        """Move (or cast) the blob in place; used when switching between CPU and GPU mode."""
        device = torch.device(device) if device is not None else self.device
        dtype = dtype or self.dtype
        self._data = self._data.to(device=device, dtype=dtype)
        if self._diff is not None:
            self._diff = self._diff.to(device=device, dtype=dtype)
        self.device, self.dtype = device, dtype
        return self

    # --- BLAS-like helpers used by the solvers ---------------------------------------------------------
    def update(self):
        """data -= diff: the last step of every solver iteration."""
        self._data.sub_(self.diff)

    def asum_data(self):
        return float(self._data.abs().sum())

    def asum_diff(self):
        return float(self.diff.abs().sum())

    def sumsq_data(self):
        return float((self._data * self._data).sum())

    def sumsq_diff(self):
        d = self.diff
        return float((d * d).sum())

    def scale_data(self, factor):
        self._data.mul_(factor)

    def scale_diff(self, factor):
        self.diff.mul_(factor)

    # --- proto -----------------------------------------------------------------------------------------
    def from_proto(self, proto, reshape=True, source=None):
        """Load a BlobProto: `shape` or legacy num/channels/height/width, float or double values."""
        from ..proto.weights import blob_to_array
        shape = proto_shape(proto)
        if reshape:
            self.reshape(shape)
        elif int(np.prod(shape, dtype=np.int64)) != self.count():
            raise BrewnetError(f"{source or 'BlobProto'}: shape {shape} does not match blob '{self.name}' "
                               f"of shape {self.shape}")
        where = source or f"blob '{self.name}'"
        for diff in (False, True):
            array = blob_to_array(proto, diff=diff, where=where)
            if array is None or (array.size == 0 and self.count() != 0):
                continue
            tensor = torch.from_numpy(np.ascontiguousarray(array)).reshape(self.shape).to(self.device, self.dtype)
            if diff:
                self._diff = tensor
            else:
                self._data = tensor
        return self

    def to_proto(self, proto=None, write_diff=False, write_double=False):
        from ..proto import caffe_pb2
        from ..proto.weights import fill_blob_proto
        proto = proto if proto is not None else caffe_pb2.BlobProto()
        return fill_blob_proto(proto, self._data, self.diff if write_diff else None, write_double)

    def __repr__(self):
        return f"Blob({self.name!r}, shape={self.shape})"


def proto_shape(proto):
    """The shape a BlobProto describes: its `shape` field, else the legacy 4 dims (as Caffe's FromProto)."""
    if proto.HasField("shape"):
        return tuple(int(d) for d in proto.shape.dim)
    if any(proto.HasField(f) for f in ("num", "channels", "height", "width")):
        return (proto.num, proto.channels, proto.height, proto.width)
    return ()
