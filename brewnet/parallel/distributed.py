"""Data-parallel training on torch.distributed, with the semantics of Caffe's multi-GPU training (book 5.6.2).

Every rank runs the whole solver on its own share of the data (a Data layer of rank r of n reads records
r, r + n, r + 2n, ...).  Per iteration, as Caffe's NCCL callback does:

    on_start                    nothing to do (parameters are identical on every rank)
    iter_size x ForwardBackward local gradients of the local mini-batch
    on_gradients_ready          g = (g_0 + g_1 + ... + g_{n-1}) / n      (one all-reduce per bucket of diffs)
    ApplyUpdate                 every rank applies the same update to the same weights

Losses are means over the batch, so the mean of the n ranks' gradients is the gradient of the mean over all
n x batch_size records: n ranks with batch B step exactly as one solver with batch n·B (effective batch size
= batch_size x ranks).  Before the first step rank 0's weights (and solver history) are broadcast, as Caffe's
NCCL::Broadcast.  Only rank 0 tests, snapshots and logs at INFO level; a stop or snapshot request (signal) is
decided by rank 0 and broadcast, so that all ranks leave the loop at the same iteration.

    solver = distributed_solver("solver.prototxt")   # inside a rank (launch / torchrun); any solver type
    solver.solve()

    train("solver.prototxt", procs=4)                # `caffe train -solver S -procs 4`  (CPU, gloo)
    train("solver.prototxt", gpus=[0, 1])            # `caffe train -solver S -gpu 0,1` (NCCL)
"""
import os
import signal

import torch
import torch.distributed as dist

from ..core import common
from ..log import get_logger
from ..proto import caffe_pb2
from ..solvers import snapshot as snap
from ..solvers.base import SolverAction, load_solver_param
from ..solvers.registry import solver_class, solver_type
from .launch import (DEFAULT_GRACE, DEFAULT_TIMEOUT, DistributedError, describe_rank, init_from_environment,
                     launch, torchrun_environment)

log = get_logger("parallel")

BUCKET_BYTES = 32 << 20     # diffs travel in flat buffers of about this size (few large messages are fast)


# --- the gradient all-reduce ---------------------------------------------------------------------------------
class _Bucket:
    """Consecutive tensors of one dtype and device, copied into one flat buffer (reused every iteration)."""

    def __init__(self, tensors):
        self.sizes = [t.numel() for t in tensors]
        self.flat = tensors[0].new_empty(sum(self.sizes))

    def gather(self, tensors):
        torch.cat([t.reshape(-1) for t in tensors], out=self.flat)
        return self.flat

    def scatter(self, tensors):
        for tensor, chunk in zip(tensors, self.flat.split(self.sizes)):
            tensor.copy_(chunk.view_as(tensor))


def _buckets(tensors, bucket_bytes):
    """Index lists of consecutive tensors that share dtype and device, each up to bucket_bytes."""
    groups, current, size = [], [], 0
    for i, tensor in enumerate(tensors):
        nbytes = tensor.numel() * tensor.element_size()
        if current and (size + nbytes > bucket_bytes or (tensor.dtype, tensor.device) !=
                        (tensors[current[0]].dtype, tensors[current[0]].device)):
            groups.append(current)
            current, size = [], 0
        current.append(i)
        size += nbytes
    if current:
        groups.append(current)
    return groups


class GradientAverager:
    """A solver callback (on_start / on_gradients_ready) that replaces every learnable parameter's diff by its
    mean over the ranks, and can broadcast rank 0's weights.  Usable on its own from pycaffe-style code:
    `solver.add_callback(GradientAverager(solver))` inside an initialised process group."""

    def __init__(self, solver, bucket_bytes=BUCKET_BYTES):
        if not dist.is_initialized():
            raise DistributedError("GradientAverager needs an initialised torch.distributed process group "
                                   "(run inside brewnet.parallel.launch or under torchrun)")
        self.solver, self.bucket_bytes = solver, bucket_bytes
        self.world = dist.get_world_size()
        self._layout = None

    @property
    def params(self):
        return self.solver.net.learnable_params

    def _plan(self, tensors):
        groups = _buckets(tensors, self.bucket_bytes)
        return [(group, _Bucket([tensors[i] for i in group])) for group in groups]

    def on_start(self):
        pass

    def on_gradients_ready(self):
        diffs = [p.diff for p in self.params]
        if not diffs or self.world == 1:
            return
        if self._layout is None or [d.shape for d in diffs] != self._shapes:
            self._layout, self._shapes = self._plan(diffs), [d.shape for d in diffs]
        # Every bucket is in flight before the first one is waited for; then sum / n, as Caffe scales.
        pending = []
        for group, bucket in self._layout:
            flat = bucket.gather([diffs[i] for i in group])
            pending.append(self._collective(dist.all_reduce, flat, async_op=True))
        for (group, bucket), work in zip(self._layout, pending):
            self._wait(work, "the gradient all-reduce")
            bucket.flat.mul_(1.0 / self.world)
            bucket.scatter([diffs[i] for i in group])

    def broadcast_parameters(self):
        """Rank 0's weights, and its update history when the solver keeps one, to every rank."""
        tensors = [p.data for p in self.params]
        tensors += [h.data for h in getattr(self.solver, "history", [])]
        for group, bucket in self._plan(tensors) if tensors else []:
            chunk = [tensors[i] for i in group]
            flat = bucket.gather(chunk)
            self._wait(self._collective(dist.broadcast, flat, src=0, async_op=True), "the weight broadcast")
            bucket.scatter(chunk)

    def _collective(self, operation, *args, **kwargs):
        try:
            return operation(*args, **kwargs)
        except RuntimeError as e:
            raise self._failure(operation.__name__, e) from None

    def _wait(self, work, what):
        try:
            work.wait()
        except RuntimeError as e:
            raise self._failure(what, e) from None

    def _failure(self, what, error):
        return DistributedError(f"{describe_rank()}: {what} at iteration {self.solver.iter} failed: another rank "
                                f"has died or stopped answering ({str(error).strip().splitlines()[0]})")


# --- the solver, made data-parallel --------------------------------------------------------------------------
class DistributedSolverMixin:
    """Put in front of any solver class: the Step loop is the base class's; only what Caffe does differently
    on the non-root ranks, and the agreement about stopping, are here."""

    def __init__(self, *args, **kwargs):
        if not dist.is_initialized():
            raise DistributedError("a data-parallel solver needs an initialised torch.distributed process group "
                                   "(brewnet.parallel.launch, brewnet.parallel.train, or torchrun)")
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self._testing = False
        self._synchronized = False
        super().__init__(*args, **kwargs)
        self.averager = GradientAverager(self)
        self.add_callback(self.averager)
        self._control = torch.zeros(1, dtype=torch.int64,
                                    device=common.device() if dist.get_backend() == "nccl" else "cpu")
        batch = _train_batch_size(self.net)
        log.info("Data-parallel training on %d ranks (%s): effective batch size = %s x %d = %s per iteration",
                 self.world, dist.get_backend(), batch or "batch_size", self.world,
                 batch * self.world if batch else f"{self.world} x batch_size")

    @property
    def is_root(self):
        return self.rank == 0

    def _check_snapshot_write_permissions(self):
        if self.is_root:
            super()._check_snapshot_write_permissions()

    def step(self, iters):
        if not self._synchronized:
            self.averager.broadcast_parameters()
            self._synchronized = True
        super().step(iters)

    def restore(self, state_file):
        # Every rank reads the same files (as Caffe's workers do); the next step broadcasts rank 0's state anyway.
        super().restore(state_file)
        self._synchronized = False

    def _tests_here(self):
        return True         # every rank enters test_all, which tests on rank 0 and tells the others

    def test_all(self):
        """Rank 0 tests (Caffe: if root_solver TestAll); a stop asked for during the tests reaches every rank."""
        if self.is_root:
            self._testing = True
            try:
                super().test_all()
            finally:
                self._testing = False
        self.requested_early_exit = bool(self._broadcast_control(int(self.requested_early_exit), "the test"))

    def requested_action(self):
        """Between iterations every rank asks; rank 0's answer (its signal handler) is the answer of all."""
        if self._testing:
            return super().requested_action()
        local = super().requested_action() if self.is_root else SolverAction.NONE
        return SolverAction.ALL[self._broadcast_control(SolverAction.ALL.index(local), "the stop/snapshot check")]

    def snapshot(self):
        if self.is_root:
            return super().snapshot()
        return None

    def _broadcast_control(self, value, what):
        self._control.fill_(value)
        work = self.averager._collective(dist.broadcast, self._control, src=0, async_op=True)
        self.averager._wait(work, f"the broadcast after {what}")
        return int(self._control.item())


_classes = {}


def distributed_class(cls):
    """The data-parallel version of a solver class (cached): DistributedSolverMixin in front of it."""
    if cls not in _classes:
        _classes[cls] = type(f"Distributed{cls.__name__}", (DistributedSolverMixin, cls),
                             {"__doc__": f"{cls.__name__}, one rank of a data-parallel run."})
    return _classes[cls]


def distributed_solver(param, source=None):
    """get_solver for a rank of a data-parallel run: a SolverParameter or a solver prototxt path."""
    if isinstance(param, (str, os.PathLike)):
        source = os.fspath(param)
        param = load_solver_param(param)
    source = source or "SolverParameter"
    cls = solver_class(solver_type(param, source), source)
    return distributed_class(cls)(param, source=source)


def _train_batch_size(net):
    """The batch size of the train net's first input (what the effective batch size multiplies), if known."""
    for blob in net.blobs.values():
        return blob.shape[0] if blob.shape else None
    return None


# --- `caffe train` with several ranks -------------------------------------------------------------------------
def train(solver, procs=1, gpus=(), snapshot=None, weights=None, source=None, sigint_effect=SolverAction.STOP,
          sighup_effect=SolverAction.SNAPSHOT, timeout=DEFAULT_TIMEOUT, grace=DEFAULT_GRACE,
          sigterm_effect=SolverAction.SNAPSHOT):
    """Train `solver` (prototxt path or SolverParameter) data-parallel: `gpus` -> one process per GPU (NCCL),
    else `procs` CPU processes (gloo).  Under torchrun this process is one rank and trains in place (then
    gpus[LOCAL_RANK] is its device, when gpus are given).  Returns 0; a failure raises DistributedError naming
    the ranks that failed."""
    if isinstance(solver, (str, os.PathLike)):
        source = os.fspath(solver)
        solver = load_solver_param(solver)
    param = caffe_pb2.SolverParameter()
    param.CopyFrom(solver)
    if snapshot and weights:
        raise DistributedError("Give a snapshot to resume training or weights to finetune but not both.")
    if snapshot:
        del param.weights[:]
    elif weights:
        del param.weights[:]
        param.weights.append(weights)
    job = (param.SerializeToString(), source, os.fspath(snapshot) if snapshot else None, sigint_effect,
           sighup_effect, sigterm_effect)
    gpus = list(gpus)
    found = torchrun_environment()
    if found is not None:
        local_rank = found[2]
        if gpus and local_rank >= len(gpus):
            raise DistributedError(f"torchrun: LOCAL_RANK {local_rank} has no GPU in -gpu "
                                   f"{','.join(map(str, gpus))}")
        init_from_environment(device=gpus[local_rank] if gpus else None, timeout=timeout)
        try:
            train_rank(*job)
        finally:
            dist.destroy_process_group()
        return 0
    if gpus:
        if procs not in (1, len(gpus)):
            raise DistributedError(f"-procs {procs} with -gpu {','.join(map(str, gpus))}: Expect: one process per "
                                   f"GPU, Actual: {procs} processes for {len(gpus)} GPUs (leave out -procs)")
        if not torch.cuda.is_available():
            raise DistributedError("-gpu: no CUDA device is available; use -procs N to train on CPU processes")
        log.info("Data-parallel training: %d processes, one per GPU (%s), NCCL", len(gpus),
                 ", ".join(map(str, gpus)))
        launch(train_rank, len(gpus), job, backend="nccl", devices=gpus, timeout=timeout, grace=grace)
    else:
        if procs < 1:
            raise DistributedError(f"-procs: Expect: a number of processes >= 1, Actual: {procs}")
        log.info("Data-parallel training: %d CPU processes (gloo)", procs)
        launch(train_rank, procs, job, backend="gloo", timeout=timeout, grace=grace)
    return 0


def train_rank(param_bytes, source, snapshot, sigint_effect, sighup_effect, sigterm_effect=SolverAction.SNAPSHOT):
    """What every rank of `train` runs: build the solver, resume if asked, solve."""
    from ..tools.signal_handler import SignalHandler     # tools import the solvers; keep this module light
    param = caffe_pb2.SolverParameter.FromString(param_bytes)
    if common.mode() == common.GPU:
        param.solver_mode = caffe_pb2.SolverParameter.GPU
        param.device_id = torch.cuda.current_device()
    handler = None
    if common.root_solver():
        handler = SignalHandler(sigint_effect, sighup_effect, sigterm_effect)
    else:
        # Only the root solver answers signals; the others follow its decision at the next iteration (a
        # scheduler's SIGTERM often reaches every process of the job).
        for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
    solver = None
    try:
        solver = distributed_solver(param, source)
        if handler is not None:
            solver.set_action_function(handler.check_for_signals)
        if snapshot:
            log.info("Resuming from %s", snapshot)
            solver.restore(snapshot)
        log.info("Starting Optimization")
        solver.solve()
        if handler is not None and handler.snapshot_before_exit \
                and not os.path.exists(snap.current_state_file(solver)):
            solver.snapshot()       # the root's own files: no collective, the other ranks are done
    finally:
        if handler is not None:
            handler.close()
        if solver is not None:
            solver.close()
