"""pycaffe's solvers and Timer, over brewnet's solvers (brewnet.solvers).

    solver = caffe.SGDSolver('lenet_solver.prototxt')      # or caffe.get_solver(...) for the file's `type`
    for it in range(1000):
        solver.step(1)
        losses.append(solver.net.blobs['loss'].data.copy())

`solver.net` and `solver.test_nets` are pycaffe Nets (brewnet.pycaffe.net.Net) over the solver's own core nets, so
everything a script does to them reaches training.  As in pycaffe, `caffe.SGDSolver(file)` builds an SGD
solver whatever `type` the file names; `get_solver(file)` follows the file.  Before the core runs (step,
solve, apply_update, snapshot, restore) every host mirror of the nets' blobs is written back — on the CPU
there are none — and after each user callback too, so that gradients edited in `on_gradients_ready` count.
"""
import time

import torch

from .. import solvers as core_solvers
from ..core import common
from ..errors import SolverError
from .net import Net


class Solver:
    """The pycaffe face of a brewnet solver."""
    _core_class = None          # the brewnet solver class this wrapper builds

    def __init__(self, solver_file, precision=None):
        """brewnet only: `precision` 'fp32', 'bf16' or 'fp16' (default: caffe.set_precision's, else fp32);
        solver.set_precision(mode) changes it later."""
        if self._core_class is None:
            raise SolverError("caffe.Solver is abstract: use SGDSolver, AdamSolver, ... or get_solver(file)")
        self._attach(self._core_class(solver_file, precision=precision))

    @classmethod
    def wrap(cls, core):
        solver = cls.__new__(cls)
        solver._attach(core)
        return solver

    def _attach(self, core):
        self._solver = core
        # The nets compute in the solver's precision (solver.set_precision changes both).
        self._net = Net.wrap(core.net, lambda: core.precision)
        self._test_nets = [Net.wrap(n, lambda: core.precision) for n in core.test_nets]

    def _sync(self):
        for net in [self._net] + self._test_nets:
            net._sync()

    # --- what pycaffe exposes ---------------------------------------------------------------------------------
    @property
    def net(self):
        return self._net

    @property
    def test_nets(self):
        return list(self._test_nets)

    @property
    def iter(self):
        return self._solver.iter

    @property
    def param(self):
        return self._solver.param

    @property
    def type(self):
        return self._solver.type

    def step(self, iters):
        self._sync()
        self._solver.step(int(iters))

    def solve(self, resume_file=None):
        self._sync()
        self._solver.solve(resume_file)

    def restore(self, state_file):
        self._sync()
        self._solver.restore(state_file)

    def snapshot(self):
        self._sync()
        self._solver.snapshot()

    def apply_update(self):
        self._sync()
        self._solver.apply_update()

    def test(self, test_net_id=0):
        self._sync()
        return self._solver.test(test_net_id)

    def add_callback(self, on_start, on_gradients_ready=None):
        """pycaffe's add_callback(on_start, on_gradients_ready): two functions called every iteration (an
        object with on_start() / on_gradients_ready() methods works too, caffe.NCCL among them)."""
        if on_gradients_ready is None and hasattr(on_start, "on_gradients_ready"):
            on_start, on_gradients_ready = getattr(on_start, "on_start", None), on_start.on_gradients_ready

        def synced(function):
            if function is None:
                return None

            def call():
                function()
                self._sync()        # the user may have edited blobs through host mirrors
            return call
        self._solver.add_callback(synced(on_start), synced(on_gradients_ready) or (lambda: None))

    def share_weights(self, net):
        """Make `net` use this solver's training-net parameters (pycaffe's share_weights)."""
        self._sync()
        net._sync()
        net._net.share_trained_layers_with(self._solver.net)

    def __getattr__(self, name):
        # Anything else the brewnet solver offers (test_all, snapshot_filename, callbacks, ...).
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._solver, name)

    def __repr__(self):
        return f"<caffe.{type(self).__name__} iter {self.iter}>"


class SGDSolver(Solver):
    _core_class = core_solvers.SGDSolver

    @property
    def lr(self):
        """The learning rate of the current iteration (pycaffe's SGDSolver.lr)."""
        return self._solver.get_learning_rate()


class NesterovSolver(SGDSolver):
    _core_class = core_solvers.NesterovSolver


class AdaGradSolver(SGDSolver):
    _core_class = core_solvers.AdaGradSolver


class RMSPropSolver(SGDSolver):
    _core_class = core_solvers.RMSPropSolver


class AdaDeltaSolver(SGDSolver):
    _core_class = core_solvers.AdaDeltaSolver


class AdamSolver(SGDSolver):
    _core_class = core_solvers.AdamSolver


_BY_CORE_CLASS = {cls._core_class: cls for cls in (SGDSolver, NesterovSolver, AdaGradSolver, RMSPropSolver,
                                                   AdaDeltaSolver, AdamSolver)}


def get_solver(solver_file, precision=None):
    """The solver a solver prototxt (or SolverParameter) asks for by its `type`."""
    core = core_solvers.get_solver(solver_file, precision=precision)
    cls = next((wrapper for core_cls, wrapper in _BY_CORE_CLASS.items() if type(core) is core_cls), None)
    if cls is None:     # a user-registered solver type: the closest pycaffe class it derives from
        cls = next((w for c, w in _BY_CORE_CLASS.items() if isinstance(core, c)), Solver)
    return cls.wrap(core)


class Timer:
    """pycaffe's Timer: start(), stop(), `ms` (milliseconds between them, or until now while running).
    In GPU mode it waits for queued kernels at both ends, as Caffe's CUDA-event timer measures them."""

    def __init__(self):
        self._start = self._stop = None

    @staticmethod
    def _now():
        if common.mode() == common.GPU and torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()

    def start(self):
        self._start, self._stop = self._now(), None

    def stop(self):
        if self._start is not None and self._stop is None:
            self._stop = self._now()

    @property
    def ms(self):
        if self._start is None:
            return 0.0
        if self._stop is None:
            self.stop()
        return (self._stop - self._start) * 1000.0

    @property
    def seconds(self):
        return self.ms / 1000.0
