"""Solver: Caffe's training loop (book 5.6) — build the nets, step, test, display, snapshot, restore.

One iteration of `step` is Caffe's Solver::Step, in the same order:

    net.clear_param_diffs()                      diffs accumulate (+=), so they start at zero
    test_all()                                   every test_interval iterations (and at 0 if test_initialization)
    callbacks.on_start()
    iter_size x net.forward_backward()           gradients of iter_size mini-batches add up
    smoothed loss over the last average_loss iterations; display every `display` iterations
    callbacks.on_gradients_ready()
    apply_update()                               the subclass: lr policy, clipping, normalize, regularize,
                                                 compute_update_value, net.update(); iter += 1
    snapshot every `snapshot` iterations, or when a signal asks for it; stop when a signal asks for it

What brewnet adds for speed and precision reaches the loop through the hooks of `self.runtime`
(runtime/solver_runtime.py): the passes in the solver's precision or replayed under -compile, and on an
accelerator the loss read after apply_update is issued (the update taken back if the loss or a label check
fails, runtime/late_read.py).  In fp32 on the CPU each hook is one call into Net or the update rule.

The update rule and its state (history) belong to the subclasses (sgd.py and the others); this class knows the
nets, the loop, the logs and the snapshot files.  Log lines are Caffe's, word for word, so that Caffe's own
parse_log.py and plotting scripts read brewnet's logs.
"""
import math
import os
import time

import numpy as np
import torch

from .. import switches
from ..core import common
from ..runtime.precision import Precision
from ..runtime.solver_runtime import SolverRuntime
from ..errors import BrewnetError, ProtoError, SolverError
from ..log import get_logger
from ..proto import caffe_pb2
from . import lr_policy, proximal, snapshot as snap
from .solver_nets import SolverNets

log = get_logger("solver")
F = np.float32


class SolverAction:
    """What a signal (or any action function) asks of a running solver, checked between iterations."""
    NONE, STOP, SNAPSHOT = "none", "stop", "snapshot"
    ALL = (NONE, STOP, SNAPSHOT)


COMPILE_VARIABLE = "BREWNET_COMPILE"


def load_solver_param(path):
    """Read a solver prototxt as Caffe's ReadSolverParamsFromTextFileOrDie does (solver_type upgraded,
    snapshot_prefix defaulted); a misspelled field is a ProtoError naming it with file:line:col."""
    from ..proto.io import read_solver_param
    path = os.fspath(path)
    if not os.path.exists(path):
        raise SolverError(f"solver file not found: {path}")
    return read_solver_param(path)


class Solver(SolverNets):
    type = None     # set by @register_solver

    def __init__(self, param, source=None, precision=None):
        """`precision`: 'fp32', 'bf16' or 'fp16' (or a core.precision.Precision); None takes the default of
        brewnet.runtime.precision.get_precision() (caffe.set_precision, $BREWNET_PRECISION, else fp32)."""
        if isinstance(param, (str, os.PathLike)):
            source = os.fspath(param)
            param = load_solver_param(param)
        copy = caffe_pb2.SolverParameter()
        copy.CopyFrom(param)
        self.param = copy
        self.source = source or "SolverParameter"
        log.info("Initializing solver from parameters: \n%s", self.param)
        self._validate()
        self.precision = Precision.of(precision)
        self._check_snapshot_write_permissions()
        if self.param.random_seed >= 0:
            common.set_random_seed(self.param.random_seed)
        self.net = self._init_train_net()
        self.test_nets = self._init_test_nets()
        log.info("Solver scaffolding done.")
        if self.precision.enabled:
            self._log_precision()
        self.iter = 0
        self.current_step = 0
        self.callbacks = []
        self.action_function = None
        self.requested_early_exit = False
        self.compile = switches.on(COMPILE_VARIABLE)
        self.losses, self.smoothed_loss = [], 0.0
        self._timer_start, self._iterations_last = time.perf_counter(), 0
        self.runtime = SolverRuntime(self)
        self.pre_solve()

    # --- construction ----------------------------------------------------------------------------------------
    def _validate(self):
        p, where = self.param, self.source
        if p.average_loss < 1:
            raise SolverError(f"{where}: average_loss should be >= 1, got {p.average_loss}")
        if p.iter_size < 1:
            raise SolverError(f"{where}: iter_size should be >= 1, got {p.iter_size}")
        if p.regularization_type not in ("L1", "L2"):
            raise SolverError(f"{where}: Unknown regularization type: '{p.regularization_type}' (L1 or L2)")
        if p.display < 0 or p.snapshot < 0 or p.test_interval < 0:
            raise SolverError(f"{where}: display, snapshot and test_interval must be >= 0")
        lr_policy.validate(p, where)
        proximal.validate(p, where)

    def _check_snapshot_write_permissions(self):
        if not self.param.snapshot:
            return
        if not self.param.HasField("snapshot_prefix"):
            raise SolverError(f"{self.source}: snapshot is specified but snapshot_prefix is not")
        probe = self.snapshot_filename(".tempfile", it=0)
        try:
            with open(probe, "w"):
                pass
            os.remove(probe)
        except OSError as e:
            raise SolverError(f"Cannot write to snapshot prefix '{self.param.snapshot_prefix}' ({e.strerror}). "
                              "Make sure that the directory exists and is writable.") from None

    # --- precision (brewnet only: Caffe's SolverParameter has no field for it) ---------------------------------
    def set_precision(self, precision, **scaler_args):
        """Compute in 'fp32', 'bf16' or 'fp16' from the next iteration on; parameters, their history and the
        snapshots stay fp32.  fp16 takes LossScaler's keyword arguments (init_scale, growth_interval, ...)."""
        self.precision = precision if isinstance(precision, Precision) else Precision(precision, **scaler_args)
        self._log_precision()

    def _log_precision(self):
        p = self.precision
        log.info("Precision: %s compute, fp32 master weights%s", p.mode,
                 f"; [fp16] loss scale {_g(p.scaler.scale)} (dynamic)" if p.scaler is not None else "")

    # --- hooks for the update rules --------------------------------------------------------------------------
    def pre_solve(self):
        """Create the update rule's state (history); SGDSolver and its children override this."""

    def apply_update(self):
        raise NotImplementedError(f"{type(self).__name__} must implement apply_update")

    def snapshot_solver_state(self, model_filename):
        raise NotImplementedError

    def restore_solver_state_from_binary_proto(self, state_file):
        raise NotImplementedError

    def restore_solver_state_from_hdf5(self, state_file):
        raise NotImplementedError

    # --- callbacks and actions -------------------------------------------------------------------------------
    def add_callback(self, callback, on_gradients_ready=None):
        """Add an object with on_start() / on_gradients_ready(), or the two functions (pycaffe's signature)."""
        if on_gradients_ready is not None or callable(callback):
            callback = _FunctionCallback(callback, on_gradients_ready)
        self.callbacks.append(callback)

    def set_action_function(self, function):
        """`function()` returns a SolverAction (or None); the CLI's signal handler is one."""
        self.action_function = function

    def requested_action(self):
        if self.action_function is None:
            return SolverAction.NONE
        action = self.action_function()
        return action or SolverAction.NONE

    # --- the loop --------------------------------------------------------------------------------------------
    def step(self, iters):
        p, runtime = self.param, self.runtime
        start_iter, stop_iter = self.iter, self.iter + int(iters)
        self.losses, self.smoothed_loss = [], 0.0
        self._timer_start, self._iterations_last = time.perf_counter(), self.iter
        while self.iter < stop_iter:
            self.net.clear_param_diffs()
            if p.test_interval and self.iter % p.test_interval == 0 and (self.iter > 0 or p.test_initialization) \
                    and self._tests_here():
                self.test_all()
                if self.requested_early_exit:
                    break
            for callback in self.callbacks:
                callback.on_start()
            display = p.display and self.iter % p.display == 0
            self.net.debug_info = bool(display and p.debug_info)
            late = runtime.reads_late(display)      # the loss read after the update (an accelerator)
            losses = []
            for _ in range(p.iter_size):
                batch_loss = runtime.forward_backward(read=not late)
                if not late and not math.isfinite(batch_loss):
                    self._stop_on_non_finite(batch_loss)
                losses.append(batch_loss)
            runtime.finish_gradients()
            if not late:
                self._record_loss(losses, start_iter, display)
            for callback in self.callbacks:
                callback.on_gradients_ready()
            runtime.update(late, losses, start_iter)        # apply_update(), in the runtime's order
            request = self.requested_action()
            if ((p.snapshot and self.iter % p.snapshot == 0) or request == SolverAction.SNAPSHOT) \
                    and common.root_solver():
                self.snapshot()
            if request == SolverAction.STOP:
                self.requested_early_exit = True
                break

    # The opt-in compiled path (runtime/capture.py): `caffe train -compile`, `solver.compile = True` before
    # stepping, or BREWNET_COMPILE=1 (how -compile reaches data-parallel ranks).
    def forward_backward(self, read=True):
        """One forward and backward of the train net in the solver's precision (compiled when asked): the loss
        as a float, the layers' checks made; read=False: the loss as the device left it, checks pending."""
        return self.runtime.forward_backward(read)

    @property
    def read_after_update(self):
        """Whether a step issues its update before it reads the loss (taking the update back when the loss or
        a label check fails).  Default: on an accelerator, unless $BREWNET_READ_FIRST=1.  Assign True/False to
        override (the tests run it on the CPU)."""
        return self.runtime.reads_after_update()

    @read_after_update.setter
    def read_after_update(self, value):
        self.runtime.read_after_update = value

    def _record_loss(self, losses, start_iter, display, iteration=None):
        """The iteration's loss (mean over iter_size) into the smoothed loss; the display lines."""
        iter_size = self.param.iter_size
        loss = float(F(sum(losses)) / F(iter_size)) if iter_size != 1 else float(F(sum(losses)))
        self._update_smoothed_loss(loss, start_iter, self.param.average_loss, iteration)
        if display:
            self._display()

    def solve(self, resume_file=None):
        p = self.param
        log.info("Solving %s", self.net.name)
        log.info("Learning Rate Policy: %s", p.lr_policy)
        self.requested_early_exit = False
        if resume_file:
            log.info("Restoring previous solver status from %s", resume_file)
            self.restore(resume_file)
        start_iter = self.iter
        self.step(p.max_iter - self.iter)
        if p.snapshot_after_train and (not p.snapshot or self.iter % p.snapshot != 0) and common.root_solver():
            self.snapshot()
        if self.requested_early_exit:
            log.info("Optimization stopped early.")
            return
        # One more forward pass to show the loss of the final weights, and a last test (as Caffe).
        if p.display and self.iter % p.display == 0:
            with torch.no_grad():
                loss = self.runtime.forward(self.net)
            self._update_smoothed_loss(loss, start_iter, p.average_loss)
            log.info("Iteration %d, loss = %s", self.iter, _g(self.smoothed_loss))
        if p.test_interval and self.iter % p.test_interval == 0 and self._tests_here():
            self.test_all()
        log.info("Optimization Done.")

    def close(self):
        """Stop the data layers' threads of the train and test nets."""
        for net in [self.net] + list(self.test_nets):
            net.close()

    def _update_smoothed_loss(self, loss, start_iter, average_loss, iteration=None):
        """Caffe's UpdateSmoothedLoss: running mean over the last `average_loss` iterations of this step()
        (`iteration`: the loss's, when the update has counted it already)."""
        if len(self.losses) < average_loss:
            self.losses.append(loss)
            size = len(self.losses)
            if size == 1 and loss and math.isfinite(self.smoothed_loss) and float(F(loss)) == loss:
                # (s * 0 + loss) / 1 is the loss itself (a zero keeps the NumPy form: its sign depends on s);
                # a loop of step(1) calls, the toy nets' way, comes here every iteration.
                self.smoothed_loss = loss
            else:
                self.smoothed_loss = float((F(self.smoothed_loss) * F(size - 1) + F(loss)) / F(size))
        else:
            index = ((self.iter if iteration is None else iteration) - start_iter) % average_loss
            self.smoothed_loss = float(F(self.smoothed_loss) + (F(loss) - F(self.losses[index])) / F(average_loss))
            self.losses[index] = loss

    def _display(self):
        lapse = time.perf_counter() - self._timer_start
        per_s = (self.iter - self._iterations_last) / (lapse if lapse else 1.0)
        log.info("Iteration %d (%s iter/s, %ss/%d iters), loss = %s", self.iter, _g(per_s), _g(lapse),
                 self.param.display, _g(self.smoothed_loss))
        self._timer_start, self._iterations_last = time.perf_counter(), self.iter
        for line in _output_lines(self.net, [_values(b) for b in self.net.output_blobs]):
            log.info("    Train net output #%s", line)

    def _stop_on_non_finite(self, loss):
        """Find the first layer whose output (or parameter) is NaN/Inf, log it, and stop training."""
        culprit = None
        for layer_id, layer in enumerate(self.net.layers):
            for blob_id, blob in zip(self.net.top_ids[layer_id], self.net.top_vecs[layer_id]):
                if not bool(torch.isfinite(blob.data).all()):
                    culprit = (f"layer '{layer.name}' (type {layer.type}) produced a non-finite value in top "
                               f"blob '{self.net.blob_names[blob_id]}'")
                    bad_params = [str(i) for i, b in enumerate(layer.blobs) if not bool(torch.isfinite(b.data).all())]
                    if bad_params:
                        culprit += f"; its parameter blob(s) {', '.join(bad_params)} already hold NaN/Inf"
                    break
            if culprit:
                break
        culprit = culprit or "no layer output is NaN/Inf; the loss sum itself overflowed"
        message = f"Iteration {self.iter}: the loss is {loss}: {culprit}. Training stopped " \
                  "(try a lower base_lr, clip_gradients, or check the input data)."
        log.error(message)
        raise SolverError(message)

    # --- testing ---------------------------------------------------------------------------------------------
    def _tests_here(self):
        """Whether the Step loop tests on this process: as in Caffe, only the root solver (solver_rank 0) tests
        and snapshots when several solvers train together (caffe.set_solver_rank, as BVLC's train.py does).
        The data-parallel solver (parallel/distributed.py) enters test_all on every rank and decides there."""
        return common.root_solver()

    def test_all(self):
        """Test every test net; returns their results (see `test`)."""
        results = []
        for test_net_id in range(len(self.test_nets)):
            if self.requested_early_exit:
                break
            results.append(self.test(test_net_id))
        return results

    def test(self, test_net_id=0):
        """Run test_iter batches of a test net and log the averaged outputs as Caffe does.  Returns
        {output blob name: mean value(s)} (a float for one-element outputs), also kept in `self.test_results`."""
        p = self.param
        log.info("Iteration %d, Testing net (#%d)", self.iter, test_net_id)
        test_net = self.test_nets[test_net_id]
        test_net.share_trained_layers_with(self.net)
        scores, loss = None, F(0)
        for _ in range(p.test_iter[test_net_id]):
            request = self.requested_action()
            while request != SolverAction.NONE:
                if request == SolverAction.SNAPSHOT:
                    self.snapshot()
                elif request == SolverAction.STOP:
                    self.requested_early_exit = True
                request = self.requested_action()
            if self.requested_early_exit:
                break
            with torch.no_grad():
                iter_loss = self.runtime.forward(test_net)
            if p.test_compute_loss:
                loss += F(iter_loss)
            values = [_values(b) for b in test_net.output_blobs]
            # Caffe adds the scores up in float; so do we, so that the printed means agree digit for digit.
            scores = values if scores is None else [s + v for s, v in zip(scores, values)]
        if self.requested_early_exit:
            log.info("Test interrupted.")
            return None
        if p.test_compute_loss:
            log.info("Test loss: %s", _g(loss / F(p.test_iter[test_net_id])))
        means = [s / F(p.test_iter[test_net_id]) for s in scores or []]
        for line in _output_lines(test_net, means):
            log.info("    Test net output #%s", line)
        results = {test_net.blob_names[blob_id]: (float(m[0]) if m.size == 1 else m)
                   for blob_id, m in zip(test_net.output_blob_ids, means)}
        self.test_results, self.test_results_iter = results, self.iter
        return results

    # --- snapshots -------------------------------------------------------------------------------------------
    def snapshot_filename(self, extension, it=None):
        return f"{self.param.snapshot_prefix}_iter_{self.iter if it is None else it}{extension}"

    def snapshot(self):
        """Write the weights, the exact-resume side file, then the solver state (last, so it marks a complete
        snapshot).  Returns the solver state's file name."""
        fmt = self.param.snapshot_format
        if fmt == caffe_pb2.SolverParameter.BINARYPROTO:
            model_filename = self.snapshot_filename(".caffemodel")
            log.info("Snapshotting to binary proto file %s", model_filename)
            self.net.save(model_filename, write_diff=self.param.snapshot_diff)
            state_filename = self.snapshot_filename(".solverstate")
        elif fmt == caffe_pb2.SolverParameter.HDF5:
            model_filename = self.snapshot_filename(".caffemodel.h5")
            log.info("Snapshotting to HDF5 file %s", model_filename)
            with snap.atomic_path(model_filename) as tmp:
                self.net.save_hdf5(tmp, write_diff=self.param.snapshot_diff)
            state_filename = self.snapshot_filename(".solverstate.h5")
        else:
            raise SolverError(f"Unsupported snapshot format {fmt}")
        snap.write_side_file(snap.side_file(state_filename), self.iter, self._stateful_nets())
        self.snapshot_solver_state(model_filename)
        return state_filename

    def _stateful_nets(self):
        return [("train", self.net)] + [(f"test{i}", net) for i, net in enumerate(self.test_nets)]

    def restore(self, state_file):
        """Continue from a solver state (Caffe's or brewnet's); the side file, when present, also restores the
        data positions and random generators, so that the run continues exactly as if never stopped."""
        state_file = os.fspath(state_file)
        if not os.path.exists(state_file):
            raise snap.missing_state_error(state_file)
        if state_file.endswith(".h5"):
            self.restore_solver_state_from_hdf5(state_file)
        else:
            self.restore_solver_state_from_binary_proto(state_file)
        side = snap.side_file(state_file)
        if os.path.exists(side):
            snap.load_side_file(side, self._stateful_nets(), self.iter, log)
        else:
            log.info("No %s: data layers start from their beginning (Caffe's behaviour)", side)

    def _resolve_learned_net(self, learned_net, state_file):
        """Caffe opens learned_net relative to the working directory; fall back to the solverstate's folder."""
        candidates = [learned_net, os.path.join(os.path.dirname(os.path.abspath(state_file)),
                                                os.path.basename(learned_net))]
        for candidate in candidates:
            if os.path.exists(candidate):
                return candidate
        raise SolverError(f"{state_file}: its learned_net '{learned_net}' was not found (looked in "
                          f"{os.getcwd()} and next to the solver state)")

    def _load_learned_net(self, learned_net, state_file):
        path = self._resolve_learned_net(learned_net, state_file)
        try:
            self.net.copy_trained_layers_from(path)
        except ProtoError:
            raise
        except BrewnetError as e:
            raise type(e)(f"restoring {state_file}: {e}") from None


class _FunctionCallback:
    def __init__(self, on_start, on_gradients_ready):
        self._on_start, self._on_gradients_ready = on_start, on_gradients_ready

    def on_start(self):
        if self._on_start is not None:
            self._on_start()

    def on_gradients_ready(self):
        if self._on_gradients_ready is not None:
            self._on_gradients_ready()


def _values(blob):
    return blob.data.detach().to("cpu", torch.float32).numpy().ravel().copy()


def _output_lines(net, values_per_output):
    """'#k: name = v (* w = w*v loss)' for every element of every output blob, numbered as Caffe does."""
    lines, index = [], 0
    for blob_id, values in zip(net.output_blob_ids, values_per_output):
        name = net.blob_names[blob_id]
        weight = F(net.blob_loss_weights[blob_id])
        for v in values:
            suffix = f" (* {_g(weight)} = {_g(weight * F(v))} loss)" if weight else ""
            lines.append(f"{index}: {name} = {_g(v)}{suffix}")
            index += 1
    return lines


def _g(x):
    """A number as C++ iostreams print it by default: 6 significant digits, no trailing zeros."""
    return "%g" % float(x)
