"""Net: a DAG of layers assembled from a NetParameter (book 5.5): forward, backward, update.

Assembly (Caffe's Net::Init) is net_assembly.py; the trained weights' I/O net_weights.py; debug_info's
per-layer log debug_info.py.  This module runs the net: forward and backward over a range of layers (with
the fused groups and gathered updates of the run plan), reshape, clearing parameter diffs, update, lookups.
"""
import contextlib
import functools
import os

import torch

from .. import switches
from ..errors import BrewnetError, NetError
from ..log import get_logger
from ..proto import caffe_pb2
from ..proto.io import read_net_param
from . import common, deferred, device_checks
from .debug_info import NetDebugInfo
from .net_assembly import NetAssembly
from .net_weights import NetWeights

log = get_logger("net")

_NOTHING = contextlib.nullcontext()


class _GradOff:
    """torch.no_grad() for a scope entered with autograd on: the same switch, without building torch's
    context object (decorator machinery that costs as much as a small layer's kernel).  Stateless, so one
    instance serves every thread (grad mode is per thread)."""
    __slots__ = ()

    def __enter__(self):
        torch._C._set_grad_enabled(False)

    def __exit__(self, *exc_info):
        torch._C._set_grad_enabled(True)
        return False


_GRAD_OFF = _GradOff()


def no_grad():
    """A scope with autograd off: Layer math runs without it.  Nothing to do when it is off already (a
    solver's step turns it off once around forward and backward)."""
    return _GRAD_OFF if torch.is_grad_enabled() else _NOTHING


class Net(NetAssembly, NetWeights, NetDebugInfo):
    # Run fusable layer groups (fusion.py) as one step in forward/backward.  Assign False on a net, or set
    # BREWNET_FUSE=0 in the environment (switches.py; read when a net is built), to run every layer on its own.
    fuse_layers = None
    # Keep the TRAIN-mode BatchNorm statistics in one tensor per net, updated in two ops a pass
    # (running_sums.py).  Read when the net is built.
    pack_running_sums = True

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
        self._checks = device_checks.Checks()      # checks of device values a forward leaves pending
        self.phase = param.state.phase
        if self.fuse_layers is None:
            self.fuse_layers = switches.on("BREWNET_FUSE")
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
        the caller calls check_values() (after issuing backward: core/device_checks.py)."""
        start, end = self._layer_range(start, end, 0, len(self.layers) - 1)
        if self._layer_callbacks:
            return self._forward_with_callbacks(start, end, check)
        return self._forward_loss(start, end, check)

    def _forward_loss(self, start, end, check):
        with no_grad(), self._gathered(), self._collecting():
            if self._group_of or self.debug_info:
                loss = self._forward_grouped(start, end)
            else:
                loss = self._forward_plain(start, end)
        if check:
            self.check_values()
        return loss

    def _forward_plain(self, start, end):
        """Layers start..end one by one: a net without fused groups, no debug log (the small nets' loop)."""
        loss, layers, bottoms, tops = 0.0, self.layers, self.bottom_vecs, self.top_vecs
        for i in range(start, end + 1):
            term = layers[i].forward_loss(bottoms[i], tops[i])
            if term.__class__ is not float or term:         # most layers: the float 0.0, no loss
                loss = _add_loss(loss, term)
        return loss

    def _forward_grouped(self, start, end):
        loss, i = 0.0, start
        while i <= end:
            group = self._fused_group(i, i, end)
            if group is not None and group.first == i:
                group.forward()             # no loss: fused groups have no loss weights
                i = group.last + 1
                continue
            if i in self._group_of:
                self._group_of[i].fused_forward = False
            loss = _add_loss(loss, self.layers[i].forward_loss(self.bottom_vecs[i], self.top_vecs[i]))
            if self.debug_info:
                self._forward_debug_info(i)
            i += 1
        return loss

    def _collecting(self):
        """The scope in which layers hand device-value checks to this net (device_checks.py); none on the
        CPU, which checks at once (unless the tests ask it to defer)."""
        if self._on_cpu and not device_checks.DEFER_ON_CPU:
            return _NOTHING
        return device_checks.collecting(self._checks)

    @property
    def _on_cpu(self):
        return _is_cpu(self.device)

    def check_values(self):
        """Raise the first failed check of device values (a label out of range) that the last forward_loss
        left pending; one wait for the device for all of them, none when there are none (the CPU)."""
        self._checks.resolve()

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
        with no_grad(), self._gathered():
            if self._group_of or self.debug_info:
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
            group = self._fused_group(i, end, start)
            if group is not None and group.last == i and group.fused_forward:
                group.backward()
                i = group.first - 1
                continue
            if i in self._group_of:
                self._group_of[i].unfuse()      # the layers' own backward needs their own state
            if self.layer_need_backward[i]:
                self.layers[i].Backward(self.top_vecs[i], self.bottom_need_backward[i], self.bottom_vecs[i])
                if self.debug_info:
                    self._backward_debug_info(i)
            i -= 1

    def _gathered(self):
        """The scope in which layers' blob updates (BatchNorm statistics, parameter gradients) are applied
        together at the end of the pass (core/deferred.py); with debug_info, layer by layer, since its log
        shows each layer's parameters right after the layer."""
        if self.debug_info:
            return _NOTHING
        # One scope object per net, entered by every pass (it is empty again after applying).
        scope = self._gather_scope
        if scope is None:
            scope = self._gather_scope = deferred.gathered()
        return scope

    _gather_scope = None

    def _fused_group(self, i, low, high):
        """The fused group layer i belongs to, if it may run as one step: fusion on, no per-layer debug log,
        and the whole group inside layers low..high."""
        group = self._group_of.get(i)
        if group is None or not self.fuse_layers or self.debug_info:
            return None
        return group if low <= group.first and group.last <= high else None

    def forward_backward(self):
        loss = self.forward_loss(check=False)
        self.backward()
        self.check_values()
        return float(loss)

    def reshape(self):
        for i, layer in enumerate(self.layers):
            layer.reshape(self.bottom_vecs[i], self.top_vecs[i])

    # Whether clear_param_diffs may drop the diffs instead of zeroing them (a CUDA-graph replay writes into the
    # recorded memory, so the compiled path turns this off).
    lazy_clear = True
    # On the CPU, diffs of this many values or more are zeroed in place: glibc serves blocks of 32 MiB and up
    # with fresh mmaps, and faulting them in again every iteration cost more than zeroing (CaffeNet's fc6 and
    # fc7: +7 % per step).  GPU memory comes from torch's caching allocator: every diff may be dropped there.
    LAZY_CLEAR_CPU_LIMIT = 8 << 20

    def clear_param_diffs(self):
        """Every learnable parameter's diff = 0, ahead of a backward that accumulates into it.  A diff that
        nothing else holds is dropped instead (it reads as zeros; the first gradient added becomes the diff,
        Blob.accumulate_diff): no pass over the memory to zero it and none to add into it."""
        droppable = self._droppable_diffs()
        held = [b for b, drop in zip(self.learnable_params, droppable) if not (drop and b.release_diff())]
        if held:
            torch._foreach_zero_([blob.diff for blob in held])

    _receivers = None

    _droppable = None

    def _droppable_diffs(self):
        """Per learnable parameter: whether clear_param_diffs may drop its diff (if nothing else holds it).
        Kept while lazy_clear and the limit stay (parameter shapes do not change): working it out for
        ResNet-50's 320 parameters cost as much as the clearing itself."""
        key = (self.lazy_clear, self.LAZY_CLEAR_CPU_LIMIT)
        if self._droppable is None or self._droppable[0] != key:
            cpu = torch.device(self.device).type == "cpu"
            self._droppable = (key, [
                self.lazy_clear and receives and not (cpu and blob.count() >= self.LAZY_CLEAR_CPU_LIMIT)
                for blob, receives in zip(self.learnable_params, self._receives_gradient())])
        return self._droppable[1]

    def _receives_gradient(self):
        """Per learnable parameter: whether Backward adds a gradient to it.  The others (BatchNorm statistics,
        frozen layers) keep their zeroed diff: dropping it would only cost a fresh one per iteration."""
        if self._receivers is None:
            receivers = [False] * len(self.learnable_params)
            for net_param_id, (layer_id, param_id) in enumerate(self.param_layer_indices):
                if self.layer_need_backward[layer_id] and self.layers[layer_id].param_propagate(param_id):
                    receivers[self.learnable_param_ids[net_param_id]] = True
            self._receivers = receivers
        return self._receivers

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


@functools.lru_cache(maxsize=16)
def _is_cpu(device):
    return torch.device(device).type == "cpu"


def _add_loss(loss, term):
    """loss + term.  Layers without a loss give the float 0.0: no tensor op for them (nor for the first
    loss)."""
    if isinstance(term, torch.Tensor):
        return term if isinstance(loss, float) and loss == 0.0 else loss + term
    return loss + term if term else loss


__all__ = ["Net", "BrewnetError"]
