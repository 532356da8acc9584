"""pycaffe's caffe.NCCL, on torch.distributed: what BVLC's python/train.py drives its multi-process training with.

    uid = caffe.NCCL.new_uid()                  # in the parent, before the solver processes start
    # in each of n processes (multiprocessing), rank r:
    caffe.set_solver_count(n); caffe.set_solver_rank(r); caffe.set_multiprocess(True)
    solver = caffe.SGDSolver('solver.prototxt')
    nccl = caffe.NCCL(solver, uid)               # joins the n processes in one process group
    nccl.bcast()                                 # rank 0's weights to every rank
    solver.add_callback(nccl)                    # gradients averaged over the ranks every iteration
    solver.step(solver.param.max_iter)

As with Caffe's NCCL class, the ranks' diffs are summed and scaled by 1 / solver_count before the update
(brewnet.parallel.GradientAverager does the all-reduce), every rank reads its share of the records (rank r
of n reads r, r + n, ...: the data layers follow solver_rank / solver_count), and only rank 0 tests and
snapshots.  The uid names a rendezvous file in the temporary directory (torch.distributed.FileStore), so the
processes must share a machine, as Caffe's NCCL uid also assumes.  The collective backend is NCCL in GPU mode
and gloo on the CPU: without a CUDA device caffe.set_mode_gpu() leaves brewnet on the CPU (with a warning),
so train.py runs its processes on the CPU.

One difference: Caffe reduces layer by layer during backward when `layer_wise_reduce` is on
(`solver.net.after_backward(nccl)`), to overlap communication with computation.  brewnet's NCCL accepts that
registration but reduces all diffs at once when the solver calls on_gradients_ready, which gives the same
sums; the solver callback (`solver.add_callback(nccl)`) is therefore required, as it is in train.py.
"""
import datetime
import os
import secrets
import tempfile

import torch
import torch.distributed as dist

from .. import switches
from ..core import common
from ..log import get_logger
from .distributed import GradientAverager
from .launch import DEFAULT_TIMEOUT, DistributedError

log = get_logger("parallel")

_UID_PREFIX = "brewnet-nccl-"


def _rendezvous_file(uid):
    if isinstance(uid, str):
        uid = uid.encode()
    if not isinstance(uid, bytes) or not uid.startswith(_UID_PREFIX.encode()) or len(uid) > 128 \
            or not uid[len(_UID_PREFIX):].isalnum():
        raise DistributedError(f"caffe.NCCL: Expect: a uid from caffe.NCCL.new_uid(), Actual: {uid!r}")
    return os.path.join(tempfile.gettempdir(), uid.decode())


class NCCL:
    """One rank of a multi-process data-parallel run (pycaffe's NCCL(solver, uid)); a solver callback."""

    def __init__(self, solver, uid, timeout=DEFAULT_TIMEOUT):
        self.solver = getattr(solver, "_solver", solver)          # a pycaffe Solver, or brewnet's own
        self.rank, self.world = common.solver_rank(), common.solver_count()
        if not 0 <= self.rank < self.world:
            raise DistributedError(f"caffe.NCCL: Expect: 0 <= solver_rank < solver_count, Actual: solver_rank "
                                   f"{self.rank}, solver_count {self.world} (caffe.set_solver_rank / "
                                   f"set_solver_count)")
        path = _rendezvous_file(uid)
        self.averager = None
        if self.world > 1:
            self._join(path, switches.dist_timeout(timeout))
            self.averager = GradientAverager(self.solver)
        log.info("NCCL: solver %d of %d (torch.distributed, %s)", self.rank, self.world,
                 dist.get_backend() if dist.is_initialized() else "one solver: nothing to reduce")

    def _join(self, path, timeout):
        if dist.is_initialized():
            if (dist.get_rank(), dist.get_world_size()) != (self.rank, self.world):
                raise DistributedError(f"caffe.NCCL: this process is already rank {dist.get_rank()} of "
                                       f"{dist.get_world_size()}, not solver {self.rank} of {self.world}")
            return
        gpu = common.mode() == common.GPU
        backend = "nccl" if gpu else "gloo"
        if gpu:
            torch.cuda.set_device(common.device())
        try:
            store = dist.FileStore(path, self.world)
            dist.init_process_group(backend, store=store, rank=self.rank, world_size=self.world,
                                    timeout=datetime.timedelta(seconds=timeout))
        except (RuntimeError, ValueError) as e:
            raise DistributedError(f"caffe.NCCL: solver {self.rank} of {self.world} cannot join the others "
                                   f"through {path} ({backend}): {e}") from None
        # Once every rank has joined, the rendezvous file has served: rank 0 removes it (FileStore would only
        # at the ranks' clean shutdown, which multiprocessing's children, exiting through os._exit, never reach).
        dist.barrier()
        if self.rank == 0:
            try:
                os.remove(path)
            except OSError:
                pass

    @staticmethod
    def new_uid():
        """A fresh session id (bytes, as pycaffe's under Python 3), handed to every rank's NCCL(solver, uid)."""
        return (_UID_PREFIX + secrets.token_hex(16)).encode()

    def bcast(self):
        """Rank 0's weights (and update history) to every rank (Caffe's NCCL::Broadcast)."""
        if self.averager is not None:
            self.averager.broadcast_parameters()

    # --- as a solver callback ------------------------------------------------------------------------------
    def on_start(self):
        pass

    def on_gradients_ready(self):
        """Every learnable diff becomes its mean over the ranks."""
        if self.averager is not None:
            self.averager.on_gradients_ready()

    # --- as a net callback (solver.net.after_backward(nccl), for layer_wise_reduce) ------------------------
    per_layer_noop = True       # pycaffe's Net does not even register it (passes stay fused)

    def __call__(self, layer):
        """Nothing per layer: on_gradients_ready reduces every diff at once (see the module's note)."""
