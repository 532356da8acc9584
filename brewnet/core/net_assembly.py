"""Net assembly: Caffe's Net::Init step by step, each step a method of NetAssembly (a mixin of Net, book 5.5).

  1. filter_net       keep the layers whose include/exclude rules match the NetState (phase, level, stages)
  2. insert_splits    a blob read by several layers gets a Split layer, so that diffs accumulate (insert_splits.py)
  3. for each layer:  create it from the registry, wire bottoms and tops (in-place when a top repeats the bottom
                      at the same index), set it up, log its top shapes, register its parameters (sharing by
                      `param { name }`, lr_mult / decay_mult)
  4. backward analysis: which layers and bottoms need backward (lr_mult, loss contribution, propagate_down,
                      force_backward)
  5. outputs:         the blobs no layer consumed
  6. run plan:        which tops keep their data until backward (Layer.top_data_kept); then the net's
                      runtime (runtime/net_runtime.py: fused layers, packed BatchNorm statistics)
"""
import collections

import torch

from ..errors import LayerError, NetError
from ..log import get_logger
from ..proto import caffe_pb2
from ..runtime.net_runtime import NetRuntime
from .blob import AllocationError, Blob
from .debug_info import fmt as _fmt
from .insert_splits import insert_splits
from .net_state import filter_net
from .registry import create_layer

log = get_logger("net")


class NetAssembly:
    """Builds the layers, blobs and parameters of a Net from its NetParameter (called from Net.__init__)."""

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
        self.output_blob_ids = [name_to_id[name] for name in sorted(available)]
        for name in sorted(available):
            log.info("This network produces output %s", name)
        self.blobs = collections.OrderedDict((n, b) for n, b in zip(self.blob_names, self._blobs))
        self._layer_index = {n: i for i, n in enumerate(self.layer_names)}
        self._share_weights()
        self.runtime = NetRuntime(self)
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
