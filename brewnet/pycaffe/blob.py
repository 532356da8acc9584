"""PyBlob: the NumPy face of a Blob, as pycaffe shows blobs to Python code (user Python layers, net.blobs).

pycaffe code reads and writes `blob.data` / `blob.diff` as NumPy arrays (`top[0].data[...] = x`) and shapes
blobs with `blob.reshape(*shape)`.  For a CPU blob the arrays are views of the torch tensors' memory
(`Tensor.numpy()` shares it), so writes reach the computation at once.  For a blob on another device there
is no shared memory: the view hands out a host copy and `flush()` writes it back — the role Caffe's
SyncedMemory plays when Python touches `cpu_data` and CUDA code reads `gpu_data` next.  Whoever hands views
to Python code (the Python layer) flushes them when that code returns.

The arrays are fetched on every access, never cached across a reshape or a replaced tensor, so a view stays
valid for the blob's whole life.
"""
import torch

from ..core.blob import Blob


class PyBlob:
    def __init__(self, blob):
        self.blob = blob
        self._host = {}            # "data"/"diff" -> (device tensor, host array), for non-CPU blobs only

    def _array(self, which):
        tensor = getattr(self.blob, which)
        if tensor.device.type == "cpu":
            return tensor.numpy()
        cached = self._host.get(which)
        if cached is not None and cached[0] is tensor:
            return cached[1]
        if cached is not None:          # the blob got a new tensor: keep what was written into the old one
            self._flush_one(*cached)
        host = tensor.cpu().numpy()
        self._host[which] = (tensor, host)
        return host

    @staticmethod
    def _flush_one(tensor, host):
        tensor.copy_(torch.from_numpy(host).view(tensor.shape))

    def flush(self):
        """Write host copies back into the device tensors (no-op for CPU blobs)."""
        for tensor, host in self._host.values():
            self._flush_one(tensor, host)
        self._host.clear()

    @property
    def data(self):
        return self._array("data")

    @data.setter
    def data(self, value):
        self._array("data")[...] = value

    @property
    def diff(self):
        return self._array("diff")

    @diff.setter
    def diff(self, value):
        self._array("diff")[...] = value

    def reshape(self, *shape):
        """`blob.reshape(2, 3)` as in pycaffe (a single tuple is accepted too)."""
        self.flush()
        self.blob.reshape(*shape)

    @property
    def shape(self):
        return self.blob.shape

    @property
    def count(self):
        return self.blob.count()

    num = property(lambda self: self.blob.num)
    channels = property(lambda self: self.blob.channels)
    height = property(lambda self: self.blob.height)
    width = property(lambda self: self.blob.width)

    def __repr__(self):
        return f"PyBlob({self.blob.name!r}, shape={self.shape})"


class PyBlobVec:
    """A live view of a list of Blobs as PyBlobs (pycaffe's BlobVec): indexing, len, iteration and
    `add_blob(*shape)`, which appends a new zero Blob to the underlying list and returns its view.
    Replacing an entry of the list (parameter sharing) shows through at once."""

    def __init__(self, blobs, name_prefix=None):
        self.blobs = blobs
        self.name_prefix = name_prefix
        self._views = {}

    def _view(self, blob):
        view = self._views.get(id(blob))
        if view is None or view.blob is not blob:
            view = self._views[id(blob)] = PyBlob(blob)
        return view

    def __len__(self):
        return len(self.blobs)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self._view(b) for b in self.blobs[index]]
        return self._view(self.blobs[index])

    def __setitem__(self, index, value):
        self.blobs[index] = value.blob if isinstance(value, PyBlob) else value

    def __iter__(self):
        return (self._view(b) for b in self.blobs)

    def add_blob(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (list, tuple)):
            shape = tuple(shape[0])
        name = f"{self.name_prefix}.{len(self.blobs)}" if self.name_prefix else None
        blob = Blob(shape, name=name)
        self.blobs.append(blob)
        return self._view(blob)

    def flush(self):
        for view in self._views.values():
            view.flush()

    def __repr__(self):
        return f"PyBlobVec({[b.shape for b in self.blobs]})"
