"""Net: a DAG of layers assembled from a NetParameter (book 5.5): forward, backward, update.

Assembly (Caffe's Net::Init) is net_assembly.py; the trained weights' I/O net_weights.py; debug_info's
per-layer log debug_info.py.  This module runs the net: forward and backward over a range of layers, reshape,
clearing parameter diffs, update, lookups.  What brewnet adds for speed reaches it through four hooks of
`self.runtime` (runtime/net_runtime.py): the scope of a pass, fused layers, the checks of device values,
clearing the diffs.
"""
import os

import torch

from ..errors import BrewnetError, NetError
from ..log import get_logger
from ..proto import caffe_pb2
from ..proto.io import read_net_param
from ..runtime.net_runtime import no_grad
from . import common
from .debug_info import NetDebugInfo
from .net_assembly import NetAssembly
from .net_weights import NetWeights

log = get_logger("net")

class Net(NetAssembly, NetWeights, NetDebugInfo):
    """Its speed machinery is `self.runtime` (runtime/net_runtime.py: the scope of a pass, fused layers, the
    checks of device values, clearing the diffs), made at the end of its assembly."""

    def __init__(self, param, phase=None, level=0, stages=(), weights=None, dtype=None, device=None):
        if isinstance(param, (str, os.PathLike)):
            self.source = os.fspath(param)
            param = read_net_param(param)
        else:
            from ..proto.upgrade import upgrade_net_as_needed
            self.source = "<NetParameter>"
            copy = caffe_pb2.NetParameter()
            copy.CopyFrom(param)
            param = upgrade_net_as_needed(copy, self.source)
        if phase is not None:
            param.state.phase = phase
        if level:
            param.state.level = level
        if stages:
            param.state.stage.extend(stages)
        self.dtype = dtype or common.default_dtype()
        self.device = device or common.device()
        self.phase = param.state.phase
        self._init(param)
        if weights is not None:
            self.copy_trained_layers_from(weights)

    def _layer_range(self, start, end, default_start, default_end):
        if start is None and end is None:       # every pass of a training step
            return default_start, default_end

        def index(x, default):
            if x is None:
                return default
            if isinstance(x, str):
                if x not in self._layer_index:
                    raise NetError(f"net '{self.name}' has no layer named '{x}'")
                return self._layer_index[x]
            return int(x)
        return index(start, default_start), index(end, default_end)

    def forward(self, start=None, end=None):
        """Run layers start..end (inclusive; names or indices) and return the total weighted loss."""
        return float(self.forward_loss(start, end))

    # Per-layer callbacks (pycaffe's net.before_forward(f) & co., Caffe's Net::Callback): f(layer index)
    # around every layer of every pass, a solver's included.  A pass with callbacks runs layer by layer
    # (no fused groups); without any, the passes below do not look at them.
    _layer_callbacks = None
    CALLBACK_KINDS = ("before_forward", "after_forward", "before_backward", "after_backward")

    def add_layer_callback(self, kind, callback):
        if kind not in self.CALLBACK_KINDS:
            raise NetError(f"add_layer_callback: Expect: one of {', '.join(self.CALLBACK_KINDS)}, Actual: {kind!r}")
        if self._layer_callbacks is None:
            self._layer_callbacks = {k: [] for k in self.CALLBACK_KINDS}
        self._layer_callbacks[kind].append(callback)

    def _forward_with_callbacks(self, start, end, check):
        callbacks, loss = self._layer_callbacks, 0.0
        for i in range(start, end + 1):
            for callback in callbacks["before_forward"]:
                callback(i)
            loss = loss + self._forward_loss(i, i, check=False)
            for callback in callbacks["after_forward"]:
                callback(i)
        if check:
            self.check_values()
        return loss

    def forward_loss(self, start=None, end=None, check=True):
        """forward(), the loss left on the device: a 0-d tensor (the float 0.0 without loss layers).  The
        layers' checks of device values (labels in range) are read at the end, or, with check=False, when
        the caller calls check_values() (after issuing backward: runtime/device_checks.py)."""
        start, end = self._layer_range(start, end, 0, len(self.layers) - 1)
        if self._layer_callbacks:
            return self._forward_with_callbacks(start, end, check)
        return self._forward_loss(start, end, check)

    def _forward_loss(self, start, end, check):
        with self.runtime.pass_scope():
            if self.runtime.steps_by_layer and not self.debug_info:
                loss = self._forward_plain(start, end)
            else:
                loss = self._forward_grouped(start, end)
        if check:
            self.check_values()
        return loss

    def _forward_plain(self, start, end):
        """Caffe's Net::ForwardFromTo: each layer's Forward in turn, adding up the weighted losses."""
        loss, layers, bottoms, tops = 0.0, self.layers, self.bottom_vecs, self.top_vecs
        for i in range(start, end + 1):
            term = layers[i].forward_loss(bottoms[i], tops[i])
            if term.__class__ is not float or term:         # most layers: the float 0.0, no loss
                loss = _add_loss(loss, term)
        return loss

    def _forward_grouped(self, start, end):
        """The same, where the runtime runs a group of layers as one step, or with debug_info's log."""
        loss, i = 0.0, start
        while i <= end:
            group = self.runtime.fused_group(i, i, end)
            if group is not None and group.first == i:
                group.forward()             # no loss: fused groups have no loss weights
                i = group.last + 1
                continue
            self.runtime.unfused(i)
            loss = _add_loss(loss, self.layers[i].forward_loss(self.bottom_vecs[i], self.top_vecs[i]))
            if self.debug_info:
                self._forward_debug_info(i)
            i += 1
        return loss

    def check_values(self):
        """Raise the first failed check of device values (a label out of range) that the last forward_loss
        left pending; one wait for the device for all of them, none when there are none (the CPU)."""
        self.runtime.check_values()

    def backward(self, start=None, end=None):
        """Run Backward from layer `start` down to `end` (defaults: last to first)."""
        start, end = self._layer_range(start, end, len(self.layers) - 1, 0)
        if self._layer_callbacks:
            callbacks = self._layer_callbacks
            for i in range(start, end - 1, -1):
                for callback in callbacks["before_backward"]:
                    callback(i)
                self._backward(i, i)
                for callback in callbacks["after_backward"]:
                    callback(i)
        else:
            self._backward(start, end)
        if self.debug_info and start == len(self.layers) - 1 and end == 0:
            self._param_norms_debug_info()

    def _backward(self, start, end):
        with self.runtime.pass_scope():
            if not self.runtime.steps_by_layer or self.debug_info:
                self._backward_grouped(start, end)
                return
            layers, need, tops, down, bottoms = (self.layers, self.layer_need_backward, self.top_vecs,
                                                 self.bottom_need_backward, self.bottom_vecs)
            for i in range(start, end - 1, -1):
                if need[i]:
                    layers[i].Backward(tops[i], down[i], bottoms[i])

    def _backward_grouped(self, start, end):
        i = start
        while i >= end:
            group = self.runtime.fused_group(i, end, start)
            if group is not None and group.last == i and group.fused_forward:
                group.backward()
                i = group.first - 1
                continue
            self.runtime.unfuse_for_backward(i)
            if self.layer_need_backward[i]:
                self.layers[i].Backward(self.top_vecs[i], self.bottom_need_backward[i], self.bottom_vecs[i])
                if self.debug_info:
                    self._backward_debug_info(i)
            i -= 1

    def forward_backward(self, read=True):
        """forward_loss then backward; the loss and the layers' checks are read once backward is issued (on a
        GPU, reading them between the passes would make the host wait for the forward kernels before it
        issues the backward ones).  read=False reads nothing: the loss comes back as the device left it and
        the checks stay pending (check_values(); the solver reads both after issuing its update)."""
        loss = self.forward_loss(check=False)
        self.backward()
        if not read:
            return loss
        self.check_values()
        return float(loss)

    def reshape(self):
        for i, layer in enumerate(self.layers):
            layer.reshape(self.bottom_vecs[i], self.top_vecs[i])

    def clear_param_diffs(self):
        """Every learnable parameter's diff = 0, ahead of a backward that accumulates into it (the runtime
        drops the diffs nothing else holds instead of zeroing them)."""
        self.runtime.clear_param_diffs()

    def update(self, ids=None, diffs=None):
        """data -= diff for every learnable (owned) parameter, or those at positions `ids` of
        learnable_params (`diffs`: their diffs, if the caller has them); the solver has already scaled the
        diffs."""
        with no_grad():
            # blob.update() for each, in one op: the same element-wise subtraction.
            params = self.learnable_params if ids is None else [self.learnable_params[i] for i in ids]
            if params:                  # torch's foreach ops refuse empty lists
                torch._foreach_sub_([b.data for b in params], diffs or [b.diff for b in params])

    def close(self):
        """Stop the threads of prefetching data layers."""
        for layer in self.layers:
            stop = getattr(layer, "close", None)
            if stop is not None:
                stop()

    # --- lookup ----------------------------------------------------------------------------------------------
    @property
    def input_blobs(self):
        return [self._blobs[i] for i in self.input_blob_ids]

    @property
    def output_blobs(self):
        return [self._blobs[i] for i in self.output_blob_ids]

    @property
    def input_blob_names(self):
        return [self.blob_names[i] for i in self.input_blob_ids]

    @property
    def output_blob_names(self):
        return [self.blob_names[i] for i in self.output_blob_ids]

    def has_blob(self, name):
        return name in self.blobs

    def blob_by_name(self, name):
        if name not in self.blobs:
            raise NetError(f"net '{self.name}' has no blob named '{name}' "
                           f"(blobs: {', '.join(self.blob_names)})")
        return self.blobs[name]

    def has_layer(self, name):
        return name in self._layer_index

    def layer_by_name(self, name):
        if name not in self._layer_index:
            raise NetError(f"net '{self.name}' has no layer named '{name}'")
        return self.layers[self._layer_index[name]]

    def layer_index(self, name):
        return self._layer_range(name, None, 0, 0)[0]


def _add_loss(loss, term):
    """loss + term.  Layers without a loss give the float 0.0: no tensor op for them (nor for the first
    loss)."""
    if isinstance(term, torch.Tensor):
        return term if isinstance(loss, float) and loss == 0.0 else loss + term
    return loss + term if term else loss


__all__ = ["Net", "BrewnetError"]
