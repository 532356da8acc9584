"""Net: a DAG of layers assembled from a NetParameter (book 5.5).

Assembly follows Caffe's Net::Init step by step, each step a method below:

  1. filter_net       keep the layers whose include/exclude rules match the NetState (phase, level, stages)
  2. insert_splits    a blob read by several layers gets a Split layer, so that diffs accumulate (insert_splits.py)
  3. for each layer:  create it from the registry, wire bottoms and tops (in-place when a top repeats the bottom
                      at the same index), set it up, log its top shapes, register its parameters (sharing by
                      `param { name }`, lr_mult / decay_mult)
  4. backward analysis: which layers and bottoms need backward (lr_mult, loss contribution, propagate_down,
                      force_backward)
  5. outputs:         the blobs no layer consumed
  6. run plan:        which tops keep their data until backward (Layer.top_data_kept), which runs of
                      layers execute as one fused step (fusion.py: BatchNorm + Scale in place), and the
                      BatchNorm statistics packed into one tensor (running_sums.py)
"""
import collections
import contextlib
import functools
import os

import torch

from ..errors import BrewnetError, LayerError, NetError
from ..log import get_logger
from ..proto import caffe_pb2
from ..proto.io import read_net_param
from . import common, deferred, device_checks, fusion, running_sums
from .blob import AllocationError, Blob
from .debug_info import NetDebugInfo, fmt as _fmt
from .insert_splits import insert_splits
from .net_weights import NetWeights
from .net_state import filter_net
from .registry import create_layer

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


class Net(NetWeights, NetDebugInfo):
    # Run fusable layer groups (fusion.py) as one step in forward/backward.  Assign False on a net, or set
    # BREWNET_FUSE=0 in the environment, to run every layer on its own.
    fuse_layers = os.environ.get("BREWNET_FUSE", "1") != "0"
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
        self._init(param)
        if weights is not None:
            self.copy_trained_layers_from(weights)

    # --- assembly --------------------------------------------------------------------------------------------
    def _init(self, in_param):
        filtered = filter_net(in_param, log)
        log.info("Initializing net from parameters: \n%s", filtered)
        param = insert_splits(filtered)
        self.name = param.name
        self.net_param = param
        self.debug_info = param.debug_info
        self.layers, self.layer_names = [], []
        self.bottom_vecs, self.top_vecs, self.bottom_ids, self.top_ids = [], [], [], []
        self.bottom_need_backward, self.layer_need_backward = [], []
        self._blobs, self.blob_names, self.blob_need_backward = [], [], []
        self.blob_loss_weights = []
        self.input_blob_ids = []
        self.params, self.param_owners, self.param_display_names, self.param_layer_indices = [], [], [], []
        self.param_id_vecs = []
        self.learnable_params, self.learnable_param_ids = [], []
        self.params_lr, self.params_weight_decay, self.has_params_lr, self.has_params_decay = [], [], [], []
        self._param_names_index = {}
        self.memory_used = 0
        name_to_id, available = {}, set()

        for layer_id, lp in enumerate(param.layer):
            if not lp.HasField("phase"):
                lp.phase = self.phase
            if len(lp.propagate_down) and len(lp.propagate_down) != len(lp.bottom):
                raise NetError(f"layer '{lp.name}': propagate_down must be given 0 or {len(lp.bottom)} "
                               f"times (once per bottom), got {len(lp.propagate_down)}")
            log.info("Creating Layer %s", lp.name)
            layer = create_layer(lp)
            layer.net = self
            self.layers.append(layer)
            self.layer_names.append(lp.name)
            for vec in (self.bottom_vecs, self.top_vecs, self.bottom_ids, self.top_ids,
                        self.bottom_need_backward, self.param_id_vecs):
                vec.append([])
            need_backward = False
            for bottom_id in range(len(lp.bottom)):
                blob_id = self._append_bottom(lp, layer_id, bottom_id, available, name_to_id)
                need_backward |= self.blob_need_backward[blob_id]
            num_top = len(lp.top)
            for top_id in range(num_top):
                self._append_top(lp, layer_id, top_id, available, name_to_id)
                if lp.type == "Input":
                    self.input_blob_ids.append(len(self._blobs) - 1)
            if layer.auto_top_blobs:
                for top_id in range(num_top, max(layer.min_top_blobs, layer.exact_num_top_blobs)):
                    self._append_top(lp, layer_id, top_id, None, None)
            self._setup_layer(layer_id)
            need_backward |= self._register_params(layer_id)
            self.layer_need_backward.append(need_backward)
            if need_backward:
                for blob_id in self.top_ids[layer_id]:
                    self.blob_need_backward[blob_id] = True

        self._analyse_backward()
        if param.force_backward:
            self._force_backward()
        for layer, need in zip(self.layers, self.layer_need_backward):
            layer.need_backward = need
        self._find_kept_tops()
        self._group_of = {i: g for g in fusion.find_groups(self) for i in range(g.first, g.last + 1)}
        self.output_blob_ids = [name_to_id[name] for name in sorted(available)]
        for name in sorted(available):
            log.info("This network produces output %s", name)
        self.blobs = collections.OrderedDict((n, b) for n, b in zip(self.blob_names, self._blobs))
        self._layer_index = {n: i for i, n in enumerate(self.layer_names)}
        self._share_weights()
        if self.pack_running_sums:
            self._running_sums = running_sums.pack(self)
        log.info("Network initialization done.")

    def _new_blob(self, name):
        return Blob(name=name, dtype=self.dtype, device=self.device)

    def _append_top(self, lp, layer_id, top_id, available, name_to_id):
        name = lp.top[top_id] if top_id < len(lp.top) else "(automatic)"
        if name_to_id is not None and top_id < len(lp.bottom) and name == lp.bottom[top_id]:
            log.info("%s -> %s (in-place)", lp.name, name)
            blob_id = name_to_id[name]
        elif name_to_id is not None and name in name_to_id:
            raise NetError(f"Top blob '{name}' produced by multiple sources (layer '{lp.name}', top index "
                           f"{top_id}); only in-place use (top == bottom at the same index) may reuse a name")
        else:
            log.info("%s -> %s", lp.name, name)
            blob_id = len(self._blobs)
            self._blobs.append(self._new_blob(name))
            self.blob_names.append(name)
            self.blob_need_backward.append(False)
            if name_to_id is not None:
                name_to_id[name] = blob_id
        self.top_ids[layer_id].append(blob_id)
        self.top_vecs[layer_id].append(self._blobs[blob_id])
        if available is not None:
            available.add(name)

    def _append_bottom(self, lp, layer_id, bottom_id, available, name_to_id):
        name = lp.bottom[bottom_id]
        if name not in available:
            known = ", ".join(sorted(available)) or "none"
            raise NetError(f"Unknown bottom blob '{name}' (layer '{lp.name}', bottom index {bottom_id}); "
                           f"blobs available at this point: {known}")
        blob_id = name_to_id[name]
        log.info("%s <- %s", lp.name, name)
        self.bottom_vecs[layer_id].append(self._blobs[blob_id])
        self.bottom_ids[layer_id].append(blob_id)
        available.discard(name)
        need = self.blob_need_backward[blob_id]
        if len(lp.propagate_down):
            need = lp.propagate_down[bottom_id]
        self.bottom_need_backward[layer_id].append(need)
        return blob_id

    def _setup_layer(self, layer_id):
        layer = self.layers[layer_id]
        for blob in layer.blobs:
            blob.to(self.device, self.dtype)
        try:
            layer.setup(self.bottom_vecs[layer_id], self.top_vecs[layer_id])
        except AllocationError as exc:
            raise LayerError(str(exc), layer.name, layer.type) from None
        log.info("Setting up %s", layer.name)
        for top_id, blob in enumerate(self.top_vecs[layer_id]):
            blob_id = self.top_ids[layer_id][top_id]
            while len(self.blob_loss_weights) <= blob_id:
                self.blob_loss_weights.append(0.0)
            self.blob_loss_weights[blob_id] = layer.loss(top_id)
            log.info("Top shape: %s", blob.shape_string())
            if layer.loss(top_id):
                log.info("    with loss weight %s", _fmt(layer.loss(top_id)))
            self.memory_used += blob.count()
        log.info("Memory required for data: %d", self.memory_used * self._dtype_size())

    def _dtype_size(self):
        return torch.empty((), dtype=self.dtype).element_size()

    def _register_params(self, layer_id):
        """Caffe's AppendParam: number the layer's parameter blobs, share named ones, record lr/decay mults."""
        layer, lp = self.layers[layer_id], self.layers[layer_id].layer_param
        if len(lp.param) > len(layer.blobs):
            raise NetError(f"Too many params specified for layer '{lp.name}': {len(lp.param)} param {{ }} "
                           f"blocks for {len(layer.blobs)} parameter blobs")
        need_backward = False
        default = caffe_pb2.ParamSpec()
        for param_id in range(len(layer.blobs)):
            spec = lp.param[param_id] if param_id < len(lp.param) else default
            layer.set_param_propagate_down(param_id, spec.lr_mult != 0)
            need_backward |= spec.lr_mult != 0
        for param_id in range(len(layer.blobs)):
            spec = lp.param[param_id] if param_id < len(lp.param) else default
            self._append_param(layer_id, param_id, spec)
        return need_backward

    def _append_param(self, layer_id, param_id, spec):
        layer = self.layers[layer_id]
        name = spec.name
        self.param_display_names.append(name or str(param_id))
        net_param_id = len(self.params)
        blob = layer.blobs[param_id]
        if blob.name is None:
            blob.name = f"{layer.name}.{param_id}"
        self.params.append(blob)
        self.param_id_vecs[layer_id].append(net_param_id)
        self.param_layer_indices.append((layer_id, param_id))
        if not name or name not in self._param_names_index:
            self.param_owners.append(-1)
            if name:
                self._param_names_index[name] = net_param_id
            self.learnable_param_ids.append(len(self.learnable_params))
            self.learnable_params.append(blob)
            self.has_params_lr.append(spec.HasField("lr_mult"))
            self.has_params_decay.append(spec.HasField("decay_mult"))
            self.params_lr.append(spec.lr_mult)
            self.params_weight_decay.append(spec.decay_mult)
            return
        owner_id = self._param_names_index[name]
        self.param_owners.append(owner_id)
        owner_layer_id, owner_param_id = self.param_layer_indices[owner_id]
        owner_layer = self.layers[owner_layer_id]
        log.info("Sharing parameters '%s' owned by layer '%s', param index %d", name, owner_layer.name,
                 owner_param_id)
        owner = owner_layer.blobs[owner_param_id]
        where = (f"Cannot share param '{name}' owned by layer '{owner_layer.name}' with layer "
                 f"'{layer.name}'")
        if spec.share_mode == caffe_pb2.ParamSpec.PERMISSIVE:
            if blob.count() != owner.count():
                raise NetError(f"{where}; count mismatch.  Owner layer param shape is {owner.shape_string()}; "
                               f"sharing layer shape is {blob.shape_string()}")
        elif blob.shape != owner.shape:
            raise NetError(f"{where}; shape mismatch.  Owner layer param shape is {owner.shape_string()}; "
                           f"sharing layer expects shape {blob.shape_string()}")
        learnable_id = self.learnable_param_ids[owner_id]
        self.learnable_param_ids.append(learnable_id)
        for has, values, field, what in ((self.has_params_lr, self.params_lr, "lr_mult", "lr_mult"),
                                         (self.has_params_decay, self.params_weight_decay, "decay_mult",
                                          "decay_mult")):
            if spec.HasField(field):
                if has[learnable_id] and getattr(spec, field) != values[learnable_id]:
                    raise NetError(f"Shared param '{name}' has mismatched {what} (layer '{layer.name}': "
                                   f"{getattr(spec, field)}, owner: {values[learnable_id]})")
                has[learnable_id] = True
                values[learnable_id] = getattr(spec, field)

    def _share_weights(self):
        """Shared parameters point at their owner's memory for data and diff (Caffe's ShareWeights)."""
        for net_param_id, owner_id in enumerate(self.param_owners):
            if owner_id < 0:
                continue
            layer_id, param_id = self.param_layer_indices[net_param_id]
            owner = self.params[owner_id]
            mine = self.params[net_param_id]
            if mine.shape == owner.shape:
                shared = owner
            else:   # PERMISSIVE: same count, the sharing layer sees its own shape over the owner's memory
                shared = Blob(mine.shape, dtype=self.dtype, device=self.device, name=mine.name)
                shared.share_data(owner)
                shared.share_diff(owner)
            self.layers[layer_id].blobs[param_id] = shared
            self.params[net_param_id] = shared

    def _analyse_backward(self):
        """Walk the net backwards: a layer needs backward only if it contributes to a loss and some bottom or
        parameter below it wants a gradient (Caffe's blobs_under_loss / blobs_skip_backp analysis)."""
        under_loss, skip_backp = set(), set()
        for layer_id in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[layer_id]
            contributes, skip = False, True
            for top_id, blob_id in enumerate(self.top_ids[layer_id]):
                name = self.blob_names[blob_id]
                if layer.loss(top_id) or name in under_loss:
                    contributes = True
                if name not in skip_backp:
                    skip = False
                if contributes and not skip:
                    break
            if self.layer_need_backward[layer_id] and skip:
                self.layer_need_backward[layer_id] = False
                self.bottom_need_backward[layer_id] = [False] * len(self.bottom_ids[layer_id])
            if not contributes:
                self.layer_need_backward[layer_id] = False
            log.info("%s %s backward computation.", layer.name,
                     "needs" if self.layer_need_backward[layer_id] else "does not need")
            for bottom_id, blob_id in enumerate(self.bottom_ids[layer_id]):
                name = self.blob_names[blob_id]
                if contributes:
                    under_loss.add(name)
                else:
                    self.bottom_need_backward[layer_id][bottom_id] = False
                if not self.bottom_need_backward[layer_id][bottom_id]:
                    skip_backp.add(name)

    def _find_kept_tops(self):
        """Tell every layer whether its tops keep their data from its Forward to its Backward: no later layer
        writes them in place, directly or through a view (the tops of Split, Flatten and Reshape are the
        bottom's memory, so writing one of those in place writes the bottom)."""
        memory = list(range(len(self._blobs)))          # blob id -> id of the blob that owns its memory
        for i, layer in enumerate(self.layers):
            if layer.aliases_top_data:
                for blob_id in self.top_ids[i]:
                    memory[blob_id] = memory[self.bottom_ids[i][0]]
        last_writer = {}
        for i, layer in enumerate(self.layers):
            if not layer.aliases_top_data:
                for blob_id in self.top_ids[i]:
                    last_writer[memory[blob_id]] = i
        for i, layer in enumerate(self.layers):
            layer.top_data_kept = all(last_writer.get(memory[b], i) <= i for b in self.top_ids[i])

    def _force_backward(self):
        for layer_id, layer in enumerate(self.layers):
            self.layer_need_backward[layer_id] = True
            for bottom_id, blob_id in enumerate(self.bottom_ids[layer_id]):
                need = self.bottom_need_backward[layer_id][bottom_id] or layer.allow_force_backward(bottom_id)
                self.bottom_need_backward[layer_id][bottom_id] = need
                self.blob_need_backward[blob_id] = self.blob_need_backward[blob_id] or need
            for param_id in range(len(layer.blobs)):
                layer.set_param_propagate_down(param_id, True)

    # --- running ---------------------------------------------------------------------------------------------
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
