"""SGD with momentum (Caffe's SGDSolver), and the update pipeline every other solver reuses.

apply_update, for the learning rate lr of the current iteration (lr_policy.py):

    clip_gradients            if clip_gradients >= 0 and ||g||_2 (over all parameters) > clip_gradients:
                              g *= clip_gradients / ||g||_2
    for each parameter w with gradient g (= w.diff):
      normalize               g /= iter_size
      regularize              L2: g += decay * w        L1: g += decay * sign(w)
                              decay = weight_decay * decay_mult(w)
      compute_update_value    SGD: h = momentum * h + lr * lr_mult(w) * g;  g = h
    net.update()              w -= g
    iter += 1

Caffe's momentum keeps the learning rate inside the history (h = m·h + lr·g), unlike torch.optim's
v = m·v + g; w -= lr·v — the two differ as soon as the rate changes, so the rules here are written out.
The history (one blob per learnable parameter; Adam and AdaDelta keep two) is what the solverstate saves.
"""
import functools

import numpy as np
import torch

from ..core.blob import Blob, scale_all
from ..core.net import no_grad
from ..errors import SolverError
from ..proto import caffe_pb2
from ..proto.io import read_binary, write_binary
from . import lr_policy, snapshot as snap
from .base import Solver, _g, log
from .registry import register_solver



def _product(F, a, b):
    """float(F(a) * F(b)): a rate or decay times its multiplier, rounded in the blobs' precision F as Caffe
    computes it.  Cached: NumPy scalar arithmetic costs about a microsecond a product, and a step asks for the
    same few products again (a tiny net's whole update takes a few tens of microseconds).  Zeros are not
    (0.0 and -0.0 are one key)."""
    return _cached_product(F, a, b) if a and b else float(F(a) * F(b))


@functools.lru_cache(maxsize=256)
def _cached_product(F, a, b):
    return float(F(a) * F(b))


def _subset(values, positions):
    """[values[k] for k in positions], or `values` itself when the positions are all of them (one group of
    multipliers: the usual case)."""
    return values if len(positions) == len(values) else [values[k] for k in positions]


@functools.lru_cache(maxsize=16)
def _on_accelerator(device):
    return torch.device(device).type != "cpu"


_cpu_factors = {}


def _scale_all(tensors, factor):
    """blob.scale_all, with the 0-d factor tensor it makes on the CPU kept from step to step (the momentum
    factor never changes; making it costs as much as a tiny net's multiplication)."""
    if not tensors[0].is_cpu:
        scale_all(tensors, factor)
        return
    key = (factor, tensors[0].dtype)
    tensor = _cpu_factors.get(key)
    if tensor is None:
        if len(_cpu_factors) > 64:
            _cpu_factors.clear()
        tensor = _cpu_factors[key] = torch.full((), factor, dtype=tensors[0].dtype)
    torch._foreach_mul_(tensors, tensor)


@register_solver("SGD")
class SGDSolver(Solver):
    # How many history blobs each learnable parameter has (Adam and AdaDelta: 2).
    history_per_param = 1

    def pre_solve(self):
        # Scalars (rates, decays, moments) are computed in the blobs' precision, as Caffe<float>/<double> do.
        self.F = np.float64 if self.net.dtype == torch.float64 else np.float32
        params = self.net.learnable_params
        self.history = [Blob(p.shape, dtype=p.dtype, device=p.device, name=f"history.{i}")
                        for _ in range(self.history_per_param) for i, p in enumerate(params)]

    # --- the pipeline ----------------------------------------------------------------------------------------
    def get_learning_rate(self):
        rate, self.current_step = lr_policy.learning_rate(self.param, self.iter, self.current_step,
                                                             self.F)
        return rate

    def apply_update(self):
        rate = self.get_learning_rate()
        if self.param.display and self.iter % self.param.display == 0:
            log.info("Iteration %d, lr = %s", self.iter, _g(rate))
        with no_grad():
            self.clip_gradients()
            every = range(len(self.net.learnable_params))
            if self.batched_update:
                self.update_batched(every, rate)
            elif type(self).compute_update_value is SGDSolver.compute_update_value:
                # Plain SGD on the CPU: small parameters (biases, BatchNorm statistics, thin layers) in a few
                # multi-tensor ops, where a loop would spend its time calling; large ones slice by slice.
                small, large = self._small_and_large()
                self.update_batched(small, rate)
                if large:
                    self.update_in_chunks(large, rate)
            else:
                for param_id in every:
                    self.normalize(param_id)
                    self.regularize(param_id)
                    self.compute_update_value(param_id, rate)
                self.net.update()
        self.iter += 1

    _split = (None,)

    def _small_and_large(self):
        """The learnable parameters' positions split at CHUNK values (kept: their sizes never change)."""
        key = (len(self.net.learnable_params), self.CHUNK)
        if self._split[0] != key:
            small, large = [], []
            for i, param in enumerate(self.net.learnable_params):
                (small if param.count() <= self.CHUNK else large).append(i)
            self._split = (key, small, large)
        return self._split[1:]

    def update_batched(self, ids, rate):
        """Caffe's loop and Net::Update for the parameters `ids`, each step as torch._foreach_* ops over all
        of them.  Each step touches only its own parameter, so the numbers are the loop's."""
        ids = list(ids)
        if not ids:                     # torch's foreach ops refuse empty lists
            return
        # The diffs once for all four steps: on a GPU this host work runs while the device waits for it.
        diffs = self._diffs(ids)
        self.normalize_all(ids, diffs)
        self.regularize_all(ids, diffs)
        self.compute_update_values(rate, ids, diffs)
        self.net.update(ids, diffs)

    # Elements per slice of update_in_chunks: three slices of 1 MiB (data, diff, history) stay in the cache
    # while all five steps pass over them.
    CHUNK = 1 << 18

    def update_in_chunks(self, ids, rate):
        """Caffe's loop and Net::Update (w -= g) for plain SGD and the parameters `ids`, one slice of each
        parameter at a time: every step is element-wise, so the numbers are the loop's, but a large parameter
        is read from memory once instead of once per step (ResNet-50's 23.5 M values: 32 -> 23 ms on one
        core)."""
        params = self.net.learnable_params
        momentum = float(self.F(self.param.momentum))
        scale = float(self.F(1) / self.F(self.param.iter_size)) if self.param.iter_size != 1 else None
        l1 = self.param.regularization_type != "L2"
        for param_id in ids:
            param = params[param_id]
            decay = float(self.F(self.param.weight_decay) * self.F(self.net.params_weight_decay[param_id]))
            local_rate = self.local_rate(param_id, rate)
            w, g, h = param.data.view(-1), param.diff.view(-1), self.history[param_id].data.view(-1)
            for start in range(0, w.numel(), self.CHUNK):
                part = slice(start, start + self.CHUNK)
                wc, gc, hc = w[part], g[part], h[part]
                if scale is not None:
                    gc.mul_(scale)
                if decay:
                    gc.add_(torch.sign(wc) if l1 else wc, alpha=decay)
                hc.mul_(momentum).add_(gc, alpha=local_rate)
                gc.copy_(hc)
                wc.sub_(gc)

    @property
    def batched_update(self):
        """Whether apply_update runs every step as torch._foreach_* ops over all parameters.  On an
        accelerator that saves a kernel launch per parameter and step (ResNet-50 has 320 parameter blobs).
        On the CPU a large parameter is better finished while it is in cache (ResNet-50's update: 33 ms
        batched, 23 ms in slices), so there only the small ones go batched.  Assign True/False to override."""
        if self._batched_update is not None:
            return self._batched_update
        return _on_accelerator(self.net.device)

    @batched_update.setter
    def batched_update(self, value):
        self._batched_update = value

    _batched_update = None

    # --- the steps over many parameters (update_batched: `ids` and their diffs): one torch._foreach_* op per
    # group of parameters that share a scalar (lr_mult, decay_mult), the element-wise ops of the methods below.
    def _grouped(self, multipliers, ids):
        """[(multiplier, positions in ids)] over `ids`, in first-seen order.  Cached: the Net's multipliers
        (params_lr, params_weight_decay) are fixed when it is built, and the ids of a step repeat."""
        key = (id(multipliers), tuple(ids))
        cache = self.__dict__.setdefault("_group_cache", {})
        groups = cache.get(key)
        if groups is None:
            by_mult = {}
            for position, param_id in enumerate(ids):
                by_mult.setdefault(multipliers[param_id], []).append(position)
            groups = cache[key] = list(by_mult.items())
        return groups

    def _diffs(self, ids):
        params = self.net.learnable_params
        return [params[i].diff for i in ids]

    def normalize_all(self, ids, diffs):
        if self.param.iter_size != 1 and ids:
            scale_all(diffs, float(self.F(1) / self.F(self.param.iter_size)))

    def regularize_all(self, ids, diffs):
        params = self.net.learnable_params
        for mult, positions in self._grouped(self.net.params_weight_decay, ids):
            local_decay = _product(self.F, self.param.weight_decay, mult)
            if not local_decay:
                continue
            data = [params[i].data for i in _subset(ids, positions)]
            if self.param.regularization_type != "L2":     # L1 (validated at construction)
                data = torch._foreach_sign(data)
            torch._foreach_add_(_subset(diffs, positions), data, alpha=local_decay)

    def compute_update_values(self, rate, ids, diffs):
        if type(self).compute_update_value is not SGDSolver.compute_update_value:
            # The other solvers' rules (AdaGrad, Adam, ...) go one parameter at a time.
            for param_id in ids:
                self.compute_update_value(param_id, rate)
            return
        if not ids:                     # torch's foreach ops refuse empty lists
            return
        history = [self.history[i].data for i in ids]
        _scale_all(history, float(self.F(self.param.momentum)))
        for _, positions in self._grouped(self.net.params_lr, ids):
            torch._foreach_add_(_subset(history, positions), _subset(diffs, positions),
                                alpha=self.local_rate(ids[positions[0]], rate))
        torch._foreach_copy_(diffs, history)

    def clip_gradients(self):
        clip = self.param.clip_gradients
        if clip < 0:
            return
        params = self.net.learnable_params
        l2norm = float(np.sqrt(self.F(sum(self.F(p.sumsq_diff()) for p in params))))
        if l2norm > clip:
            scale = float(self.F(clip) / self.F(l2norm))
            log.info("Gradient clipping: scaling down gradients (L2 norm %s > %s) by scale factor %s",
                     _g(l2norm), _g(clip), _g(scale))
            for p in params:
                p.scale_diff(scale)

    # --- the same steps for one parameter (Caffe's Normalize, Regularize, ComputeUpdateValue) --------------
    def normalize(self, param_id):
        if self.param.iter_size == 1:
            return
        self.net.learnable_params[param_id].diff.mul_(float(self.F(1) / self.F(self.param.iter_size)))

    def regularize(self, param_id):
        param = self.net.learnable_params[param_id]
        local_decay = float(self.F(self.param.weight_decay) * self.F(self.net.params_weight_decay[param_id]))
        if not local_decay:
            return
        if self.param.regularization_type == "L2":
            param.diff.add_(param.data, alpha=local_decay)
        else:   # L1 (validated at construction)
            param.diff.add_(torch.sign(param.data), alpha=local_decay)

    def local_rate(self, param_id, rate):
        return _product(self.F, rate, self.net.params_lr[param_id])

    def compute_update_value(self, param_id, rate):
        g = self.net.learnable_params[param_id].diff
        h = self.history[param_id].data
        h.mul_(float(self.F(self.param.momentum))).add_(g, alpha=self.local_rate(param_id, rate))
        g.copy_(h)

    # --- solver state ----------------------------------------------------------------------------------------
    def snapshot_solver_state(self, model_filename):
        if self.param.snapshot_format == caffe_pb2.SolverParameter.HDF5:
            filename = self.snapshot_filename(".solverstate.h5")
            log.info("Snapshotting solver state to HDF5 file %s", filename)
            snap.write_hdf5_state(filename, self.iter, model_filename, self.current_step,
                                  [h.data.detach().cpu().numpy() for h in self.history])
        else:
            filename = self.snapshot_filename(".solverstate")
            state = caffe_pb2.SolverState(iter=self.iter, learned_net=model_filename,
                                          current_step=self.current_step)
            for h in self.history:
                h.to_proto(state.history.add())
            log.info("Snapshotting solver state to binary proto file %s", filename)
            write_binary(state, filename)
        return filename

    def restore_solver_state_from_binary_proto(self, state_file):
        state = read_binary(state_file, caffe_pb2.SolverState())
        self.iter = state.iter
        if state.HasField("learned_net"):
            self._load_learned_net(state.learned_net, state_file)
        self.current_step = state.current_step
        self._check_history_length(len(state.history), state_file)
        log.info("SGDSolver: restoring history")
        from ..core.blob import proto_shape
        for i, blob_proto in enumerate(state.history):
            self._check_history_shape(i, proto_shape(blob_proto), state_file)
            self.history[i].from_proto(blob_proto, reshape=False, source=f"{state_file} history {i}")

    def restore_solver_state_from_hdf5(self, state_file):
        it, learned_net, current_step, history = snap.read_hdf5_state(state_file)
        self.iter = it
        if learned_net is not None:
            self._load_learned_net(learned_net, state_file)
        self.current_step = current_step
        self._check_history_length(len(history), state_file)
        for i, array in enumerate(history):
            self._check_history_shape(i, array.shape, state_file)
            h = self.history[i]
            h.data.copy_(torch.from_numpy(np.ascontiguousarray(array)).reshape(h.shape))

    def _check_history_length(self, count, state_file):
        if count != len(self.history):
            raise SolverError(f"{state_file}: Incorrect length of history blobs: the state has {count}, "
                              f"{type(self).__name__} for this net needs {len(self.history)} "
                              f"({self.history_per_param} per learnable parameter)")

    def _check_history_shape(self, index, shape, state_file):
        expected = self.history[index].shape
        if tuple(shape) != tuple(expected) and int(np.prod(shape)) != int(np.prod(expected)):
            raise SolverError(f"{state_file}: history blob {index} (for {self._param_label(index)}) has shape "
                              f"{tuple(shape)}, the net's parameter has shape {tuple(expected)}")

    def _param_label(self, history_index):
        """'layer ip1, param 0' for the learnable parameter a history blob belongs to."""
        learnable = history_index % len(self.net.learnable_params)
        owned = [i for i, owner in enumerate(self.net.param_owners) if owner < 0]
        layer_id, param_id = self.net.param_layer_indices[owned[learnable]]
        return f"layer '{self.net.layer_names[layer_id]}', param {param_id}"
