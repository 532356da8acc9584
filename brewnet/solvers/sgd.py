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
      (brewnet's proximal_l1: L1 as w -= clamp(w, -lr*decay, lr*decay) here instead, proximal.py)
    iter += 1

Caffe's momentum keeps the learning rate inside the history (h = m·h + lr·g), unlike torch.optim's
v = m·v + g; w -= lr·v — the two differ as soon as the rate changes, so the rules here are written out.
The history (one blob per learnable parameter; Adam and AdaDelta keep two) is what the solverstate saves.

Each step is written once, over lists of tensors (torch._foreach_* ops); update_pipeline.py runs them over
all parameters at once, one at a time, or slice by slice (the loop above, cut differently: same numbers).
"""
import numpy as np
import torch

from ..core.blob import Blob
from ..core.net import no_grad
from ..errors import SolverError
from ..proto import caffe_pb2
from ..proto.io import read_binary, write_binary
from . import lr_policy, proximal, snapshot as snap, update_pipeline
from .base import Solver, _g, log
from .registry import register_solver
from .update_pipeline import _scale_all


@register_solver("SGD")
class SGDSolver(Solver):
    # How many history blobs each learnable parameter has (Adam and AdaDelta: 2).
    history_per_param = 1

    # How apply_update cuts the parameters into Parts (update_pipeline.parts): False, one at a time (Caffe's
    # loop); True, all at once; None (default), all at once on an accelerator (a kernel launch per step
    # instead of per parameter and step: ResNet-50 has 320 parameter blobs), and on the CPU the small ones at
    # once and those over CHUNK values slice by slice, finished while in cache (a large parameter is then
    # read from memory once instead of once per step of the pipeline).
    batched_update = None
    # Values per slice: three slices of 1 MiB (data, diff, history) stay in the cache for all the steps.
    CHUNK = 1 << 18
    # brewnet's proximal L1 step instead of Caffe's subgradient (SolverParameter.proximal_l1, proximal.py).
    proximal_l1 = False

    def pre_solve(self):
        # Scalars (rates, decays, moments) are computed in the blobs' precision, as Caffe<float>/<double> do.
        self.F = np.float64 if self.net.dtype == torch.float64 else np.float32
        self.proximal_l1 = proximal.enabled(self.param)
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
            for part in update_pipeline.parts(self):
                update_pipeline.run(self, part, rate)
        self.iter += 1

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

    # --- the steps, each over a list of parameters (or slices of one) ----------------------------------------
    def normalize(self, grads):
        """g /= iter_size (the diffs hold the sum of iter_size passes)."""
        if self.param.iter_size != 1:
            _scale_all(grads, float(self.F(1) / self.F(self.param.iter_size)))

    def regularize(self, weights, grads, local_decay):
        """L2: g += decay * w;  L1: g += decay * sign(w)  (decay = weight_decay * decay_mult, the same for all)."""
        if self.param.regularization_type != "L2":      # L1 (validated at construction)
            weights = torch._foreach_sign(weights)
        torch._foreach_add_(grads, weights, alpha=local_decay)

    def compute_update_value(self, grads, histories, local_rate):
        """The update rule for parameters sharing one local rate (lr * lr_mult): turn each gradient g into the
        step that w -= g takes, keeping `histories` (one list per history kind).  SGD: h = momentum * h +
        local_rate * g;  g = h."""
        (h,) = histories
        _scale_all(h, float(self.F(self.param.momentum)))
        torch._foreach_add_(h, grads, alpha=local_rate)
        torch._foreach_copy_(grads, h)

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
