"""Trained weights on disk, in Caffe's two formats.

* **caffemodel**: a binary NetParameter whose layers carry their parameter blobs (`LayerParameter.blobs`, each
  a BlobProto with a `shape` — or, in files from before 2015, legacy num/channels/height/width — and packed
  `data`, or `double_data`).  Old V0/V1 caffemodels are upgraded on load, as Caffe does.
* **HDF5** (`.caffemodel.h5`): dataset ``data/<layer name>/<i>`` holds the i-th parameter of that layer (and
  ``diff/<layer name>/<i>`` its gradient when written with diffs).  A parameter shared from another layer is
  not written under the sharing layer's name.

`load_weights(source)` gives ``{layer name: [numpy array per parameter]}`` in file order; the Net copies them
by layer name (Caffe's CopyTrainedLayersFrom).  `save_hdf5` writes a Net (or a plain mapping) in Caffe's
HDF5 layout.  `fill_blob_proto` builds a BlobProto from an array without a Python-level loop over its values.

Arrays are copied out of protobuf with one buffer copy (never element by element through Python floats), and
written back by handing protobuf the packed bytes.
"""
import collections
import os
import re

import numpy as np

from ..errors import ProtoError, WeightsError
from ..log import get_logger
from . import caffe_pb2
from .io import read_binary
from .upgrade import net_needs_upgrade, upgrade_net

log = get_logger("weights")


# --- BlobProto <-> numpy -----------------------------------------------------------------------------------------

class LegacyShapeArray(np.ndarray):
    """An array read from a BlobProto that gives its shape as legacy num/channels/height/width.

    Caffe matches those four numbers against the *last* four axes of the target blob, padded with 1s in front
    (Blob::ShapeEquals): a 1x1x1x500 bias fits a blob of shape (500,), a 1x1x500x800 weight one of (500, 800).
    `shape_matches` applies that rule; everywhere else this is an ordinary ndarray.
    """


def blob_shape(proto):
    """The shape a BlobProto describes, and whether it is the legacy 4-D form (as Caffe's Blob::FromProto)."""
    if any(proto.HasField(f) for f in ("num", "channels", "height", "width")):
        return (proto.num, proto.channels, proto.height, proto.width), True
    return tuple(int(d) for d in proto.shape.dim), False


def blob_to_array(proto, diff=False, where="BlobProto"):
    """A BlobProto's data (or diff) as a numpy array of its shape: float32 from `data`, float64 from
    `double_data`.  None when asking for a diff the proto does not hold.  `where` names the blob in errors."""
    shape, legacy = blob_shape(proto)
    doubles, floats = (proto.double_diff, proto.diff) if diff else (proto.double_data, proto.data)
    count = int(np.prod(shape, dtype=np.int64))
    if len(doubles):
        values = np.asarray(doubles, dtype=np.float64)
    elif len(floats) or not diff:
        values = np.asarray(floats, dtype=np.float32)
    else:
        return None
    if values.size != count:
        what = "diff" if diff else "data"
        raise WeightsError(f"{where}: holds {values.size} {what} values but its shape "
                           f"{' x '.join(map(str, shape)) or '()'} needs {count}")
    values = values.reshape(shape)
    return values.view(LegacyShapeArray) if legacy else values


def shape_matches(target_shape, array):
    """Whether `array` (from `load_weights`) may be copied into a blob of `target_shape`, by Caffe's rule:
    exact shape equality, or for legacy 4-D blobs equality with the target's last four axes padded by 1s."""
    target_shape = tuple(target_shape)
    if isinstance(array, LegacyShapeArray):
        return len(target_shape) <= 4 and (1,) * (4 - len(target_shape)) + target_shape == tuple(array.shape)
    return target_shape == tuple(array.shape)


def _varint(value):
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


_BLOB_FIELDS = {name: caffe_pb2.BlobProto.DESCRIPTOR.fields_by_name[name].number
                for name in ("data", "diff", "double_data", "double_diff")}


def _packed(field, values, dtype):
    """One packed repeated field, encoded by hand: tag, byte length, then the little-endian values."""
    payload = np.ascontiguousarray(values, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()
    return _varint((_BLOB_FIELDS[field] << 3) | 2) + _varint(len(payload)) + payload


def fill_blob_proto(proto, data, diff=None, write_double=False):
    """Make `proto` (a BlobProto, cleared first) hold `data` (and `diff`) with a `shape`, as Blob::ToProto
    writes it.  Arrays may be numpy arrays or torch tensors.  Returns `proto`.

    Protobuf's Python API would take the values one Python float at a time (seconds for a large layer);
    parsing the packed field's bytes instead costs a memory copy."""
    data = _as_numpy(data)
    proto.Clear()
    proto.shape.dim.extend(int(d) for d in data.shape)
    kind, dtype = ("double_", np.float64) if write_double else ("", np.float32)
    wire = _packed(kind + "data", data.ravel(), dtype)
    if diff is not None:
        wire += _packed(kind + "diff", _as_numpy(diff).ravel(), dtype)
    proto.MergeFromString(wire)
    return proto


def _as_numpy(array):
    if hasattr(array, "detach"):          # a torch tensor: no autograd history, on the CPU
        return array.detach().cpu().numpy()
    return np.asarray(array)


# --- loading -------------------------------------------------------------------------------------------------------

class Weights(collections.OrderedDict):
    """``{layer name: [array per parameter]}`` read from `path`; asking for a layer it lacks raises a
    WeightsError that names the file and the layers it does have."""

    def __init__(self, path, *args):
        super().__init__(*args)
        self.path = path

    def __missing__(self, layer_name):
        have = list(self)
        listed = ", ".join(have[:20]) + (f", ... ({len(have)} in all)" if len(have) > 20 else "")
        raise WeightsError(f"{self.path}: the weights have no layer '{layer_name}' "
                           f"(layers with weights: {listed or 'none'})")


def is_hdf5(path):
    """Whether `path` is an HDF5 file (by its signature, as Caffe's H5Fis_hdf5 decides)."""
    import h5py
    try:
        return h5py.is_hdf5(os.fspath(path))
    except (OSError, ValueError):
        return False


def load_weights(source, diff=False):
    """Read trained weights: a caffemodel path, an HDF5 weights path, or a NetParameter already in memory.

    Returns `Weights` (an ordered dict) ``{layer name: [array, ...]}``, one array per parameter blob in the
    layer's order; float32 (float64 where the file holds doubles).  Arrays from legacy 4-D BlobProtos are
    `LegacyShapeArray`s: check them with `shape_matches`.  With ``diff=True`` the parameters' diffs are
    returned instead (None where the file holds none).

    caffemodel: every source layer is listed, also those without blobs (Caffe checks that the blob counts
    agree).  HDF5: a layer lists the datasets ``0..k``; an index missing below k is None — a parameter the
    sharing layer does not own, which the Net must find shared (Caffe's rule) rather than copy.
    """
    if isinstance(source, caffe_pb2.NetParameter):
        return _layers_of(source, "NetParameter", diff)
    path = os.fspath(source)
    if not os.path.exists(path):
        raise WeightsError(f"{path}: weights file not found")
    if os.path.isdir(path):
        raise WeightsError(f"{path}: is a directory, not a weights file")
    if is_hdf5(path):
        return _load_hdf5(path, diff)
    return _load_caffemodel(path, diff)


def _load_caffemodel(path, diff):
    net = caffe_pb2.NetParameter()
    try:
        read_binary(path, net)
    except ProtoError as e:
        hint = ""
        if _looks_like_text(path):
            hint = " (this looks like a text prototxt; trained weights are a binary .caffemodel or .h5)"
        raise WeightsError(f"{e}{hint}") from None
    return _layers_of(net, path, diff)


def _layers_of(net, path, diff):
    if net_needs_upgrade(net):
        upgraded = caffe_pb2.NetParameter()
        upgraded.CopyFrom(net)
        upgrade_net(upgraded, path)
        net = upgraded
    weights = Weights(path)
    for layer in net.layer:
        weights[layer.name] = [blob_to_array(blob, diff, f"{path}: layer '{layer.name}' param {i}")
                               for i, blob in enumerate(layer.blobs)]
    return weights


def _looks_like_text(path):
    try:
        with open(path, "rb") as f:
            head = f.read(256)
        head.decode("ascii")
        return True
    except (OSError, UnicodeDecodeError):
        return False


def _load_hdf5(path, diff):
    import h5py
    part = "diff" if diff else "data"
    weights = Weights(path)
    try:
        with h5py.File(path, "r") as f:
            if part not in f:
                if diff:
                    return weights
                raise WeightsError(f"{path}: HDF5 file has no '{part}' group; not Caffe HDF5 weights "
                                   f"(expected datasets {part}/<layer name>/<param index>)")
            for name, group in _layer_groups(f[part]):
                weights[name] = _read_layer_group(path, name, group)
    except OSError as e:
        raise WeightsError(f"{path}: cannot read HDF5 weights: {e}") from None
    return weights


def _layer_groups(root, prefix=""):
    """(layer name, group) under `root`. A layer named "a/b" was stored as group a holding group b; a group is
    a layer when it holds datasets or nothing at all."""
    import h5py
    for key in root:
        item = root[key]
        if not isinstance(item, h5py.Group):
            continue
        name = prefix + key
        children = list(item.values())
        if not children or any(isinstance(c, h5py.Dataset) for c in children):
            yield name, item
        yield from _layer_groups(item, name + "/")


def _read_layer_group(path, name, group):
    import h5py
    arrays = {}
    for key, item in group.items():
        if not isinstance(item, h5py.Dataset):
            continue
        if not re.fullmatch(r"\d+", key):
            raise WeightsError(f"{path}: layer '{name}' has dataset '{key}'; expected parameter indices 0, 1, ...")
        if item.dtype.kind not in "fiu":
            raise WeightsError(f"{path}: dataset '{item.name}' has unsupported type {item.dtype} "
                               "(Caffe reads float or integer datasets)")
        value = item[()]
        value = np.asarray(value, dtype=np.float32 if item.dtype.kind in "iu" else value.dtype)
        arrays[int(key)] = value
    return [arrays.get(i) for i in range(max(arrays) + 1)] if arrays else []


# --- saving HDF5 ------------------------------------------------------------------------------------------------------

def save_hdf5(net, path, write_diff=False):
    """Write weights in Caffe's HDF5 layout (Net::ToHDF5): group ``data/<layer>`` for every layer with dataset
    ``<i>`` per parameter it owns, and with `write_diff` also ``diff/<layer>/<i>`` for every parameter.

    `net` is a brewnet Net (shared parameters are skipped under ``data`` as Caffe does, found through
    `param_owners`), or a mapping ``{layer name: [param, ...]}`` where a param is a Blob (``.data``/``.diff``),
    an array or tensor (data only), a ``(data, diff)`` pair, or — for a parameter owned by another layer — None
    or ``(None, diff)``.
    The file is written next to `path` and renamed into place, so readers never see half a file."""
    import h5py
    path = os.fspath(path)
    layers = list(_layers_to_save(net, write_diff))
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with h5py.File(tmp, "w") as f:
            data_group = f.create_group("data")
            diff_group = f.create_group("diff") if write_diff else None
            for name, params in layers:
                layer_data = data_group.require_group(name)
                layer_diff = diff_group.require_group(name) if write_diff else None
                for i, (data, diff, owned) in enumerate(params):
                    if owned:
                        layer_data.create_dataset(str(i), data=_as_numpy(data))
                    if write_diff:
                        if diff is None:
                            raise WeightsError(f"{path}: cannot write the diff of layer '{name}' param {i}: "
                                               "none was given")
                        layer_diff.create_dataset(str(i), data=_as_numpy(diff))
        os.replace(tmp, path)
    except (OSError, ValueError) as e:     # h5py: ValueError for a name written twice
        raise WeightsError(f"{path}: cannot write HDF5 weights: {e}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _layers_to_save(net, write_diff):
    """(layer name, [(data, diff, owned), ...]) for a Net or a mapping.  Diffs are only read when written
    (a Blob allocates its diff on first access)."""
    if hasattr(net, "param_owners") and hasattr(net, "layers"):
        for layer_id, layer in enumerate(net.layers):
            params = []
            for i, blob in enumerate(layer.blobs):
                owned = net.param_owners[net.param_id_vecs[layer_id][i]] == -1
                params.append((blob.data, blob.diff if write_diff else None, owned))
            yield net.layer_names[layer_id], params
        return
    for name, entries in net.items():
        params = []
        for entry in entries:
            if entry is None:
                params.append((None, None, False))
            elif isinstance(entry, tuple):
                params.append((entry[0], entry[1], entry[0] is not None))
            elif hasattr(entry, "data") and hasattr(entry, "diff") and not isinstance(entry, np.ndarray):
                params.append((entry.data, entry.diff if write_diff else None, True))
            else:
                params.append((entry, None, True))
        yield name, params
