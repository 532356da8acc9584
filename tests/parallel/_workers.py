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
