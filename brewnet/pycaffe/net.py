"""pycaffe's Net: the interface Python scripts drive Caffe with, over brewnet's core Net.

    net = caffe.Net('deploy.prototxt', caffe.TEST, weights='model.caffemodel')
    net.blobs['data'].data[...] = image            # NumPy, written straight into the net's memory
    out = net.forward()                             # {output blob: ndarray}
    feats = net.forward_all(data=images)['fc7']     # any number of rows, batched and padded for you

Blobs are shown through `brewnet.pycaffe.blob.PyBlob`: `.data` / `.diff` are NumPy arrays.  On the CPU they
share the torch tensors' memory, so a write lands in the net at once.  On a GPU there is no shared memory, so
a blob touched from Python keeps a host mirror — Caffe's SyncedMemory with its head at the CPU, since pycaffe
hands out `mutable_cpu_data` — and this class syncs every mirror back to the device (and drops it) before it
lets the core compute: forward, backward, reshape, copy_from, a solver step.  Because mirrors only exist while
Python code holds the blob, a stale mirror can never overwrite what the device computed.  As in Caffe, an
array kept across a forward on the GPU is a snapshot: read `blob.data` again to see new values.
"""
import collections
import itertools
import os

import numpy as np

from ..core.net import Net as CoreNet
from ..runtime.precision import Precision, get_precision
from ..errors import BrewnetError
from ..proto import caffe_pb2
from .blob import PyBlob, PyBlobVec
from .input_arrays import InputArrays


class UnknownNameError(BrewnetError, KeyError):
    """A blob or layer name the net does not have (a KeyError too, as a dict lookup in pycaffe would raise)."""

    def __str__(self):          # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


class _NamedDict(collections.OrderedDict):
    """net.blobs / net.params / net.layer_dict: an OrderedDict whose missing keys are named in the error."""

    def __init__(self, items, what, net_name):
        super().__init__(items)
        self._what, self._net_name = what, net_name

    def __missing__(self, key):
        raise UnknownNameError(f"net '{self._net_name}' has no {self._what} named '{key}' "
                               f"(known: {', '.join(self) or 'none'})")


class LayerView:
    """A layer as pycaffe shows it: `type`, `name`, `blobs` (its parameters as NumPy-facing views); anything
    else is looked up on the brewnet layer itself."""

    def __init__(self, layer, blobs):
        self._layer = layer
        self.blobs = blobs

    @property
    def type(self):
        return self._layer.type

    @property
    def name(self):
        return self._layer.name

    def __getattr__(self, name):
        return getattr(self._layer, name)

    def __repr__(self):
        return f"<Layer {self.name!r} ({self.type})>"


def _check_file(path, what):
    if not os.path.isfile(path):
        raise BrewnetError(f"Could not open file {path} ({what})")


def _parse_phase(phase):
    if phase in (caffe_pb2.TRAIN, caffe_pb2.TEST) and not isinstance(phase, bool):
        return int(phase)
    if isinstance(phase, str) and phase.upper() in ("TRAIN", "TEST"):
        return caffe_pb2.TRAIN if phase.upper() == "TRAIN" else caffe_pb2.TEST
    raise BrewnetError(f"Expect: phase caffe.TRAIN (0) or caffe.TEST (1), Actual: {phase!r}")


class Net(InputArrays):
    """pycaffe's Net.  Constructors, as in pycaffe:

        Net(network_file, phase, level=0, stages=None, weights=None)
        Net(network_file, weights_file, phase)          # the older form, still common in scripts

    `network_file` may also be a NetParameter (e.g. from NetSpec.to_proto()).  brewnet only: `precision=`
    'fp32', 'bf16' or 'fp16' computes forward/backward in that precision (weights stay fp32); without it the
    net follows caffe.set_precision (default fp32).
    """

    def __init__(self, network_file, *args, phase=None, level=0, stages=None, weights=None, precision=None):
        if args and isinstance(args[0], (str, os.PathLike)):       # Net(model, weights, phase)
            if len(args) > 2:
                raise BrewnetError(f"Net(network_file, weights_file, phase) takes 3 arguments, got {1 + len(args)}")
            weights, phase = args[0], (args[1] if len(args) == 2 else phase)
        elif args:                                                  # Net(model, phase, level, stages, weights)
            if len(args) > 4:
                raise BrewnetError(f"Net(network_file, phase, level, stages, weights) takes at most 5 "
                                   f"arguments, got {1 + len(args)}")
            phase, level, stages, weights = (tuple(args) + (level, stages, weights)[len(args) - 1:])[:4]
        if phase is None:
            raise BrewnetError("Net(...) needs a phase: caffe.TRAIN or caffe.TEST")
        phase = _parse_phase(phase)
        if isinstance(network_file, (str, os.PathLike)):
            network_file = os.fspath(network_file)
            _check_file(network_file, "network definition")
        if weights is not None:
            weights = os.fspath(weights)
            _check_file(weights, "weights")
        core = CoreNet(network_file, phase=phase, level=level, stages=tuple(stages or ()))
        if weights is not None:
            core.copy_trained_layers_from(weights)
        self._attach(core, Precision(precision) if precision is not None else None)

    @classmethod
    def wrap(cls, core, precision=None):
        """The pycaffe face of an existing core Net (the nets a Solver built).  `precision`: a Precision, or a
        function returning one (a solver's nets follow the solver's current precision)."""
        net = cls.__new__(cls)
        net._attach(core, precision)
        return net

    def _attach(self, core, precision=None):
        self._net = core
        self._precision = precision
        self._build_views()

    def _build_views(self):
        core = self._net
        self._blob_views = [PyBlob(b) for b in core._blobs]
        self._param_vecs = [PyBlobVec(layer.blobs, name_prefix=layer.name) for layer in core.layers]
        self._layer_views = []
        for layer, vec in zip(core.layers, self._param_vecs):
            impl = getattr(layer, "impl", None)      # a Python layer: users expect their own object back
            self._layer_views.append(impl if impl is not None else LayerView(layer, vec))

    # --- the NumPy/device coherence point ---------------------------------------------------------------------
    def _sync(self):
        """Write every host mirror back to its device tensor and drop it (no-op on the CPU, which has none)."""
        for view in self._blob_views:
            if view._host:
                view.flush()
        for vec in self._param_vecs:
            if any(view._host for view in vec._views.values()):
                vec.flush()
        for layer in self._layer_views:
            if not isinstance(layer, LayerView):
                flush = getattr(getattr(layer, "blobs", None), "flush", None)
                if flush is not None:
                    flush()

    # --- structure --------------------------------------------------------------------------------------------
    @property
    def name(self):
        return self._net.name

    @property
    def phase(self):
        return self._net.phase

    @property
    def blobs(self):
        """OrderedDict blob name -> blob (input to output)."""
        if getattr(self, "_blobs_dict", None) is None:
            self._blobs_dict = _NamedDict(zip(self._net.blob_names, self._blob_views), "blob", self.name)
        return self._blobs_dict

    @property
    def params(self):
        """OrderedDict layer name -> list of parameter blobs, for the layers that have parameters."""
        if getattr(self, "_params_dict", None) is None:
            self._params_dict = _NamedDict(
                ((name, vec) for name, vec in zip(self._net.layer_names, self._param_vecs) if len(vec)),
                "layer with parameters", self.name)
        return self._params_dict

    @property
    def layers(self):
        return list(self._layer_views)

    @property
    def layer_dict(self):
        return _NamedDict(zip(self._net.layer_names, self._layer_views), "layer", self.name)

    @property
    def blob_loss_weights(self):
        return _NamedDict(zip(self._net.blob_names, self._net.blob_loss_weights), "blob", self.name)

    @property
    def inputs(self):
        return list(self._net.input_blob_names)

    @property
    def outputs(self):
        return list(self._net.output_blob_names)

    @property
    def top_names(self):
        names = self._net.blob_names
        return collections.OrderedDict((layer, [names[i] for i in ids])
                                       for layer, ids in zip(self._net.layer_names, self._net.top_ids))

    @property
    def bottom_names(self):
        names = self._net.blob_names
        return collections.OrderedDict((layer, [names[i] for i in ids])
                                       for layer, ids in zip(self._net.layer_names, self._net.bottom_ids))

    # The underscore names pycaffe's C++ module exposes; net-surgery scripts use them.
    _blob_names = property(lambda self: list(self._net.blob_names))
    _layer_names = property(lambda self: list(self._net.layer_names))
    _blobs = property(lambda self: list(self._blob_views))
    _inputs = property(lambda self: list(self._net.input_blob_ids))
    _outputs = property(lambda self: list(self._net.output_blob_ids))
    _blob_loss_weights = property(lambda self: list(self._net.blob_loss_weights))

    def _top_ids(self, i):
        return list(self._net.top_ids[i])

    def _bottom_ids(self, i):
        return list(self._net.bottom_ids[i])

    # --- running ----------------------------------------------------------------------------------------------
    def _layer_index(self, name, role):
        if isinstance(name, int):
            if not 0 <= name < len(self._net.layers):
                raise UnknownNameError(f"{role} layer index {name} out of range (net '{self.name}' has "
                                       f"{len(self._net.layers)} layers)")
            return name
        if not self._net.has_layer(name):
            raise UnknownNameError(f"{role}: net '{self.name}' has no layer named '{name}' "
                                   f"(layers: {', '.join(self._net.layer_names)})")
        return self._net.layer_index(name)

    def _check_blob_names(self, names, what):
        for name in names:
            if name not in self.blobs:
                raise UnknownNameError(f"{what}: net '{self.name}' has no blob named '{name}' "
                                       f"(blobs: {', '.join(self._net.blob_names)})")

    def _set_arrays(self, arrays, allowed, allowed_what, field):
        """Copy user arrays into blob data/diff, checking names and shapes first (nothing is written on error)."""
        checked = []
        for name, value in arrays.items():
            if name not in allowed:
                kind = "a blob of this net but not one of its" if name in self.blobs else "not one of the"
                raise UnknownNameError(f"'{name}' is {kind} {allowed_what} of net '{self.name}' "
                                       f"({', '.join(allowed) or 'none'})")
            value = np.asarray(value)
            shape = self.blobs[name].shape
            if value.shape != shape and not _broadcasts(value.shape, shape):
                raise BrewnetError(
                    f"Expect: {field} for blob '{name}' of shape {shape}, Actual: an array of shape "
                    f"{value.shape}" + (" (reshape first: net.blobs[name].reshape(...); net.reshape())"
                                        if field == "data" else ""))
            checked.append((name, value))
        for name, value in checked:
            getattr(self.blobs[name], field)[...] = value

    # --- precision (brewnet only) -------------------------------------------------------------------------------
    @property
    def precision(self):
        """The Precision forward/backward run in: set_precision's, the owning solver's, else the default."""
        p = self._precision
        if callable(p):
            p = p()
        return p if p is not None else Precision.of(get_precision())

    def set_precision(self, mode):
        """'fp32', 'bf16' or 'fp16' for this net; None follows caffe.set_precision again."""
        self._precision = None if mode is None else Precision(mode)

    def _forward(self, start, end):
        self._sync()
        with self.precision.compute(self._net.device):
            return self._net.forward(int(start), int(end))

    def _backward(self, start, end):
        self._sync()
        with self.precision.compute(self._net.device):
            self._net.backward(int(start), int(end))

    def forward(self, blobs=None, start=None, end=None, **inputs):
        """Copy `inputs` (input blob name -> array) into the net, run layers start..end (names, inclusive) and
        return {blob: data} for the net outputs (or the tops of `end`) plus the blobs named in `blobs`."""
        blobs = list(blobs or [])
        self._check_blob_names(blobs, "forward(blobs=...)")
        start_ind = 0 if start is None else self._layer_index(start, "forward(start=...)")
        if end is None:
            end_ind, wanted = len(self._net.layers) - 1, self.outputs + blobs
        else:
            end_ind = self._layer_index(end, "forward(end=...)")
            wanted = self.top_names[self._net.layer_names[end_ind]] + blobs
        if inputs:
            self._set_arrays(inputs, self.inputs, "input blobs", "data")
        self._forward(start_ind, end_ind)
        return {name: self.blobs[name].data for name in dict.fromkeys(wanted)}

    def backward(self, diffs=None, start=None, end=None, **top_diffs):
        """Copy `top_diffs` (output blob name -> array) into the output diffs, run Backward from layer `start`
        down to `end` and return {blob: diff} for the net inputs (or the bottoms of `end`) plus `diffs`."""
        diffs = list(diffs or [])
        self._check_blob_names(diffs, "backward(diffs=...)")
        start_ind = len(self._net.layers) - 1 if start is None else self._layer_index(start, "backward(start=...)")
        if end is None:
            end_ind, wanted = 0, self.inputs + diffs
        else:
            end_ind = self._layer_index(end, "backward(end=...)")
            wanted = self.bottom_names[self._net.layer_names[end_ind]] + diffs
        if top_diffs:
            self._set_arrays(top_diffs, self.outputs, "output blobs", "diff")
        self._backward(start_ind, end_ind)
        return {name: self.blobs[name].diff for name in dict.fromkeys(wanted)}

    def _batch(self, arrays):
        """Split {blob: array of N rows} into batches of the blobs' batch size; the last batch is padded with
        zeros.  Yields (batch dict, number of real rows)."""
        if not arrays:
            return
        counts = {name: len(value) for name, value in arrays.items()}
        if len(set(counts.values())) != 1:
            raise BrewnetError(f"Expect: the same number of rows for every input, Actual: {counts}")
        num = next(iter(counts.values()))
        sizes = {name: self.blobs[name].shape[0] for name in arrays}
        if len(set(sizes.values())) != 1:
            raise BrewnetError(f"Expect: inputs with one batch size, Actual: {sizes}")
        batch_size = next(iter(sizes.values()))
        for begin in range(0, num, batch_size):
            rows = min(batch_size, num - begin)
            batch = {}
            for name, value in arrays.items():
                part = np.asarray(value[begin:begin + rows])
                if rows < batch_size:
                    pad = np.zeros((batch_size - rows,) + part.shape[1:], dtype=part.dtype)
                    part = np.concatenate([part, pad])
                batch[name] = part
            yield batch, rows

    def forward_all(self, blobs=None, **inputs):
        """forward() over inputs of any length: {blob: array with exactly one row per input row}.  Outputs
        without a batch axis (a scalar loss) come back as one value per batch."""
        wanted = list(dict.fromkeys(self.outputs + list(blobs or [])))
        if not inputs:
            return {k: np.array(v, copy=True) for k, v in self.forward(blobs=blobs).items()}
        collected = {name: [] for name in wanted}
        for batch, rows in self._batch(inputs):
            outs = self.forward(blobs=blobs, **batch)
            for name in wanted:
                collected[name].append(_rows(outs[name], rows))
        return {name: _join(parts) for name, parts in collected.items()}

    def forward_backward_all(self, blobs=None, diffs=None, **arrays):
        """forward_all and backward together: inputs feed Forward, output-blob arrays feed Backward as top
        diffs.  Returns ({blob: data}, {blob: diff}), one row per input row."""
        wanted = list(dict.fromkeys(self.outputs + list(blobs or [])))
        wanted_diffs = list(dict.fromkeys(self.inputs + list(diffs or [])))
        unknown = [k for k in arrays if k not in self.inputs and k not in self.outputs]
        if unknown:
            raise UnknownNameError(f"forward_backward_all: {', '.join(map(repr, unknown))} not among the "
                                   f"inputs ({', '.join(self.inputs)}) or outputs ({', '.join(self.outputs)})")
        fwd = self._batch({k: v for k, v in arrays.items() if k in self.inputs})
        bwd = self._batch({k: v for k, v in arrays.items() if k in self.outputs})
        all_outs = {name: [] for name in wanted}
        all_diffs = {name: [] for name in wanted_diffs}
        for (fb, f_rows), (bb, b_rows) in itertools.zip_longest(fwd, bwd, fillvalue=({}, None)):
            rows = f_rows if f_rows is not None else b_rows
            outs = self.forward(blobs=blobs, **fb)
            grads = self.backward(diffs=diffs, **bb)
            for name in wanted:
                all_outs[name].append(_rows(outs[name], rows))
            for name in wanted_diffs:
                all_diffs[name].append(_rows(grads[name], rows))
        return ({k: _join(v) for k, v in all_outs.items()}, {k: _join(v) for k, v in all_diffs.items()})

    def reshape(self):
        self._sync()
        self._net.reshape()

    def clear_param_diffs(self):
        self._sync()
        self._net.clear_param_diffs()

    def close(self):
        """Stop the prefetch threads of the net's data layers (brewnet's addition; pycaffe has no such call)."""
        self._net.close()

    # --- weights ----------------------------------------------------------------------------------------------
    def copy_from(self, weights_file):
        _check_file(os.fspath(weights_file), "weights")
        self._sync()
        self._net.copy_trained_layers_from(os.fspath(weights_file))

    def load_hdf5(self, filename):
        self.copy_from(filename)

    def share_with(self, other):
        """Use `other`'s parameter memory for the layers of the same name (Caffe's ShareTrainedLayersWith)."""
        self._sync()
        other._sync()
        self._net.share_trained_layers_with(other._net if isinstance(other, Net) else other)

    def save(self, filename):
        self._sync()
        self._net.save(os.fspath(filename))

    def save_hdf5(self, filename):
        self._sync()
        self._net.save_hdf5(os.fspath(filename))

    # --- per-layer callbacks (pycaffe's before_forward & co.: called with the layer index) -----------------------
    # They live on the core net, so a solver's steps call them too (BVLC's train.py times layers with them);
    # blobs the callback touched through host mirrors are written back before the next layer runs.
    def _add_layer_callback(self, kind, callback):
        if getattr(callback, "per_layer_noop", False):
            return      # caffe.NCCL under layer_wise_reduce: nothing to do per layer, so keep fused passes

        def call(layer):
            callback(layer)
            self._sync()
        self._net.add_layer_callback(kind, call)

    def before_forward(self, callback):
        self._add_layer_callback("before_forward", callback)

    def after_forward(self, callback):
        self._add_layer_callback("after_forward", callback)

    def before_backward(self, callback):
        self._add_layer_callback("before_backward", callback)

    def after_backward(self, callback):
        self._add_layer_callback("after_backward", callback)

    def __repr__(self):
        return f"<caffe.Net {self.name!r}: {len(self._net.layers)} layers, inputs {self.inputs}>"


def _broadcasts(src, dst):
    """True when `dst[...] = src` works and keeps the batch: pycaffe lets NumPy broadcast the rest."""
    if not src or not dst or src[0] != dst[0]:
        return False
    try:
        return np.broadcast_shapes(src, dst) == tuple(dst)
    except ValueError:
        return False


def _rows(array, rows):
    array = np.array(array, copy=True)
    return array[:rows] if array.ndim else array


def _join(parts):
    if parts and np.ndim(parts[0]) == 0:
        return np.asarray(parts)
    return np.concatenate(parts) if parts else np.empty((0,))
