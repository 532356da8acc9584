"""caffe.NCCL and solver_count / solver_rank as BVLC's python/train.py uses them, in real processes (gloo on
the CPU): the ranks read disjoint shares, their gradients are averaged, so 2 ranks x batch B train exactly as
1 rank x batch 2B, and only rank 0 tests."""
import multiprocessing
import os
import tempfile

import numpy as np
import pytest

import caffe
from brewnet.pycaffe import functions as pycaffe_functions
from brewnet.core import common
from brewnet.parallel import DistributedError

from ._workers import pycaffe_rank
from .test_distributed import BATCH, ITERS, RECORDS, case  # noqa: F401  (case: the shared fixture)


def test_train_py_processes_average_gradients(case, tmp_path):  # noqa: F811
    assert caffe.has_nccl()
    uid = caffe.NCCL.new_uid()
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=pycaffe_rank, args=(str(case["solver"]), uid, rank, 2, str(tmp_path)))
                 for rank in range(2)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(120)
    assert [p.exitcode for p in processes] == [0, 0]
    assert not os.path.exists(os.path.join(tempfile.gettempdir(), uid.decode()))      # the rendezvous file
    labels = [np.load(tmp_path / f"labels{r}.npy") for r in range(2)]
    for rank, seen in enumerate(labels):
        # rank r of 2 reads records r, r + 2, ... (Caffe's DataLayer skips the other ranks' records)
        expected = [[(2 * (k * BATCH + j) + rank) % RECORDS for j in range(BATCH)] for k in range(ITERS)]
        np.testing.assert_array_equal(seen.reshape(ITERS, BATCH), expected)
    params = [np.load(tmp_path / f"params{r}.npz") for r in range(2)]
    reference = case["params"]["ip1"] + case["params"]["ip2"]          # one solver, batch 2B
    for i, want in enumerate(reference):
        np.testing.assert_array_equal(params[0][f"arr_{i}"], params[1][f"arr_{i}"])
        np.testing.assert_allclose(params[0][f"arr_{i}"], want, rtol=1e-5, atol=1e-7)
    assert [bool(np.load(tmp_path / f"tested{r}.npy")) for r in range(2)] == [True, False]


def test_uids_and_one_solver(case):  # noqa: F811
    uids = {caffe.NCCL.new_uid() for _ in range(3)}
    assert len(uids) == 3 and all(isinstance(u, bytes) and u.startswith(b"brewnet-nccl-") for u in uids)
    assert caffe.solver_count() == 1 and caffe.solver_rank() == 0
    solver = caffe.SGDSolver(str(case["solver"]))
    try:
        with pytest.raises(DistributedError, match=r"Expect: a uid from caffe.NCCL.new_uid\(\), Actual: b'junk'"):
            caffe.NCCL(solver, b"junk")
        nccl = caffe.NCCL(solver, caffe.NCCL.new_uid())     # one solver: nothing to reduce, no process group
        before = solver.net.params["ip1"][0].data.copy()
        nccl.bcast()
        solver.add_callback(nccl)
        assert solver.param.layer_wise_reduce
        solver.net.after_backward(nccl)         # train.py's call: nothing per layer, passes stay whole
        assert solver.net._net._layer_callbacks is None
        solver.step(1)
        assert not np.array_equal(before, solver.net.params["ip1"][0].data)
        caffe.set_solver_rank(1)                            # rank 1 of 1 does not exist
        with pytest.raises(DistributedError, match="Expect: 0 <= solver_rank < solver_count, Actual: solver_rank "
                                                   "1, solver_count 1"):
            caffe.NCCL(solver, caffe.NCCL.new_uid())
    finally:
        caffe.set_solver_rank(0)
        solver.close()


def test_set_mode_gpu_without_cuda_falls_back_to_the_cpu_with_a_warning(caplog, monkeypatch):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: set_mode_gpu uses it")
    monkeypatch.delenv("BREWNET_REQUIRE_GPU", raising=False)
    caffe.set_multiprocess(True)
    assert caffe.multiprocess()
    caffe.set_multiprocess(False)
    monkeypatch.setattr(pycaffe_functions, "_fallback_warned", [])            # the warning comes once per process
    try:
        with caplog.at_level("WARNING", logger="brewnet"):
            caffe.set_device(1)
            caffe.set_mode_gpu()
            caffe.set_mode_gpu()
        assert common.mode() == common.CPU and str(common.device()) == "cpu"
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert warnings == ["set_mode_gpu: no CUDA device is available (torch.cuda.is_available() is False); "
                            "brewnet computes on the CPU instead (BREWNET_REQUIRE_GPU=1 makes this an error)"]
        monkeypatch.setenv("BREWNET_REQUIRE_GPU", "1")
        with pytest.raises(Exception, match="set_mode_gpu: no CUDA device is available"):
            caffe.set_mode_gpu()
    finally:
        caffe.set_device(0)
        caffe.set_mode_cpu()
