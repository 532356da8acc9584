"""What the ranks of the data-parallel tests run (spawned processes import these functions by name)."""
import os
import signal
import time

import numpy as np

from brewnet.core import common
from brewnet.parallel import distributed_solver


def record(solver_path, out_dir, kill_rank=None, hang_rank=None, at_iter=2):
    """Train, keeping the labels (= record indices) of every batch this rank read and its final weights.
    kill_rank dies by SIGKILL at iteration `at_iter`; hang_rank stops answering there."""
    rank = common.solver_rank()
    solver = distributed_solver(solver_path)
    seen = []

    def on_gradients_ready():
        if solver.iter == at_iter and rank == kill_rank:
            os.kill(os.getpid(), signal.SIGKILL)
        if solver.iter == at_iter and rank == hang_rank:
            time.sleep(120)
        seen.append(solver.net.blobs["label"].data.numpy().astype(np.int64).copy())

    solver.add_callback(None, on_gradients_ready)
    try:
        solver.solve()
    finally:
        solver.close()
    np.save(os.path.join(out_dir, f"labels{rank}.npy"), np.stack(seen))
    np.savez(os.path.join(out_dir, f"params{rank}.npz"),
             *[p.data.numpy() for p in solver.net.learnable_params])


def pycaffe_rank(solver_path, uid, rank, world, out_dir):
    """One process of BVLC's python/train.py, word for word where it talks to caffe, plus what the test
    checks: the labels this rank read, whether it tested, and its final weights."""
    import torch

    import caffe
    caffe.set_device(rank)
    if not torch.cuda.is_available():
        caffe.set_mode_gpu()            # train.py's call; without a CUDA device brewnet stays on the CPU
    caffe.set_solver_count(world)
    caffe.set_solver_rank(rank)
    caffe.set_multiprocess(True)
    solver = caffe.SGDSolver(solver_path)
    nccl = caffe.NCCL(solver, uid)
    nccl.bcast()
    seen = []
    solver.add_callback(nccl)
    solver.add_callback(lambda: None, lambda: seen.append(solver.net.blobs["label"].data.astype(np.int64).copy()))
    if solver.param.layer_wise_reduce:
        solver.net.after_backward(nccl)
    solver.step(solver.param.max_iter)
    np.save(os.path.join(out_dir, f"labels{rank}.npy"), np.stack(seen))
    np.savez(os.path.join(out_dir, f"params{rank}.npz"),
             *[b.data for name in ("ip1", "ip2") for b in solver.net.params[name]])
    np.save(os.path.join(out_dir, f"tested{rank}.npy"), getattr(solver, "test_results", None) is not None)
    solver.close()
