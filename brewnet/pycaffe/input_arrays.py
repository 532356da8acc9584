"""Net.set_input_arrays and _set_input_arrays: arrays handed to a net's MemoryData layer (a mixin of
pycaffe's Net, net.py), with Caffe's checks and its RuntimeError on failure."""
import numpy as np

from ..errors import NetError


class InputArraysError(NetError, RuntimeError):
    """Arrays that a MemoryData layer cannot serve (a RuntimeError too, as Caffe's binding raises)."""


def _check_input_array(array, what, trailing, top):
    """Caffe's checks of an array handed to _set_input_arrays, in its order."""
    if not isinstance(array, np.ndarray) or not array.flags.c_contiguous:
        raise InputArraysError(f"_set_input_arrays: {what} must be a C contiguous NumPy array "
                               f"(np.ascontiguousarray), Actual: {type(array).__name__}")
    if array.ndim != 4:
        raise InputArraysError(f"_set_input_arrays: {what} must be 4-d, Actual: shape {array.shape}")
    if array.dtype != np.float32:
        raise InputArraysError(f"_set_input_arrays: {what} must be float32, Actual: {array.dtype}")
    if array.shape[1:] != trailing:
        raise InputArraysError(f"_set_input_arrays: {what} for blob '{top}': Expect: shape (N, "
                               f"{', '.join(map(str, trailing))}), Actual: {array.shape}")


class InputArrays:
    def set_input_arrays(self, data, labels):
        """Hand arrays to the net's MemoryData layer: data N x C x H x W, labels N (or N x 1 x 1 x 1); other
        dtypes and layouts are converted (a float32, C-contiguous array is served as it is, not copied)."""
        layer, top = self._memory_data_layer("set_input_arrays")
        data, labels = np.asarray(data), np.asarray(labels)
        chw = tuple(layer.chw)
        if data.ndim != 4 or data.shape[1:] != chw:
            raise InputArraysError(f"set_input_arrays: Expect: data for blob '{top}' of shape (N, "
                                   f"{', '.join(map(str, chw))}), Actual: an array of shape {data.shape}")
        if labels.ndim == 4 and labels.shape[1:] == (1, 1, 1):
            labels = labels.reshape(len(labels))
        if labels.ndim != 1 or len(labels) != len(data):
            raise InputArraysError(f"set_input_arrays: Expect: labels of shape ({len(data)},) or "
                                   f"({len(data)}, 1, 1, 1), one per data row, Actual: an array of shape "
                                   f"{labels.shape}")
        self._check_rows(layer, len(data))
        layer.set_input_arrays(np.ascontiguousarray(data, dtype=np.float32),
                               np.ascontiguousarray(labels, dtype=np.float32))

    def _set_input_arrays(self, data, labels):
        """pycaffe's binding under set_input_arrays, as strict as Caffe's: data a C-contiguous float32
        N x C x H x W array, labels a C-contiguous float32 N x 1 x 1 x 1 array, N a multiple of the batch size.
        Both are served as they are (no copy on the CPU), so the caller keeps them alive and unchanged."""
        layer, top = self._memory_data_layer("_set_input_arrays")
        _check_input_array(data, "data array", tuple(layer.chw), top)
        _check_input_array(labels, "labels array", (1, 1, 1), top)
        if data.shape[0] != labels.shape[0]:
            raise InputArraysError(f"_set_input_arrays: data and labels must have the same first dimension: "
                                   f"Expect: {data.shape[0]} labels, Actual: {labels.shape[0]}")
        self._check_rows(layer, data.shape[0])
        layer.set_input_arrays(data, labels.reshape(labels.shape[0]))

    def _memory_data_layer(self, caller):
        layer = next((l for l in self._net.layers if l.type == "MemoryData"), None)
        if layer is None:
            raise InputArraysError(f"{caller} may only be called if the net has a MemoryData layer "
                                   f"(net '{self.name}' has none)")
        return layer, self._net.blob_names[self._net.top_ids[self._net.layer_index(layer.name)][0]]

    @staticmethod
    def _check_rows(layer, rows):
        if rows == 0 or rows % layer.batch_size:
            raise InputArraysError(f"set_input_arrays (layer '{layer.name}'): Expect: a number of rows that is a "
                                   f"positive multiple of the batch size {layer.batch_size}, Actual: {rows}")
