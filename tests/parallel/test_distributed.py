"""Data-parallel training with real processes (gloo on localhost): 2 ranks x batch B == 1 rank x batch 2B, the
ranks read disjoint shares, and a rank that dies or hangs ends the run with an error naming it."""
import time

import numpy as np
import pytest

from brewnet.data.datum import array_to_datum
from brewnet.data.db import format_key, open_db
from brewnet.parallel import DistributedError, launch, torchrun_environment
from brewnet.proto import caffe_pb2
from brewnet.solvers import get_solver
from brewnet.tools import cli

from ._workers import record

RECORDS, BATCH, ITERS = 16, 2, 6     # 2 ranks x 2 records = 4 per iteration; 6 iterations wrap the database

NET = """
name: "dp"
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TRAIN }}
        data_param {{ source: "{db}" backend: LMDB batch_size: {batch} }} }}
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TEST }}
        data_param {{ source: "{db}" backend: LMDB batch_size: 4 }} }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        inner_product_param {{ num_output: 5 weight_filler {{ type: "gaussian" std: 0.5 }}
                               bias_filler {{ type: "constant" value: 0.1 }} }} }}
layer {{ name: "act" type: "TanH" bottom: "ip1" top: "ip1" }}
layer {{ name: "ip2" type: "InnerProduct" bottom: "ip1" top: "pred"
        inner_product_param {{ num_output: 1 weight_filler {{ type: "gaussian" std: 0.5 }} }} }}
layer {{ name: "target" type: "Reshape" bottom: "label" top: "target" reshape_param {{ shape {{ dim: -1 dim: 1 }} }} }}
layer {{ name: "scaled" type: "Power" bottom: "target" top: "scaled" power_param {{ scale: 0.05 }} }}
layer {{ name: "loss" type: "EuclideanLoss" bottom: "pred" bottom: "scaled" top: "loss" }}
"""

SOLVER = """
net: "{net}"
type: "SGD" base_lr: 0.1 momentum: 0.9 weight_decay: 0.01 lr_policy: "step" gamma: 0.5 stepsize: 4
max_iter: {iters} display: 2 test_iter: 2 test_interval: 3 random_seed: 7
snapshot_prefix: "{prefix}"
"""


def write_case(folder, batch, name):
    net = folder / f"{name}_net.prototxt"
    net.write_text(NET.format(db=folder / "db", batch=batch))
    solver = folder / f"{name}_solver.prototxt"
    solver.write_text(SOLVER.format(net=net, iters=ITERS, prefix=folder / name))
    return solver


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """An LMDB whose record i has label i, the 2-rank solver (batch B) and the 1-rank run (batch 2B) over it."""
    folder = tmp_path_factory.mktemp("dp")
    features = np.random.RandomState(3).uniform(-1, 1, (RECORDS, 1, 1, 4)).astype(np.float32)
    with open_db(folder / "db", "lmdb", "n") as db:
        txn = db.transaction()
        for i, x in enumerate(features):
            txn.put(format_key(i), array_to_datum(x, label=i).SerializeToString())
        txn.commit()
    reference = get_solver(str(write_case(folder, 2 * BATCH, "single")))
    labels = []
    reference.add_callback(None, lambda: labels.append(reference.net.blobs["label"].data.numpy().astype(int)))
    reference.solve()
    params = {name: [b.data.numpy().copy() for b in layer.blobs]
              for name, layer in zip(reference.net.layer_names, reference.net.layers) if layer.blobs}
    reference.close()
    return {"folder": folder, "solver": write_case(folder, BATCH, "ranks"), "params": params,
            "labels": np.stack(labels)}


def caffemodel_params(path):
    model = caffe_pb2.NetParameter.FromString(path.read_bytes())
    return {layer.name: [np.array(b.data, dtype=np.float32) for b in layer.blobs] for layer in model.layer
            if len(layer.blobs)}


def test_two_ranks_train_like_one_rank_with_twice_the_batch(case):
    folder = case["folder"]
    # the user's path: `caffe train -solver S -procs 2` (brewnet.parallel.train underneath)
    assert cli.main(["train", "-solver", str(case["solver"]), "-procs", "2"]) == 0
    trained = caffemodel_params(folder / f"ranks_iter_{ITERS}.caffemodel")
    assert sorted(trained) == sorted(case["params"]) == ["ip1", "ip2"]
    for name, expected in case["params"].items():
        for got, want in zip(trained[name], expected):
            np.testing.assert_allclose(got, want.ravel(), rtol=1e-5, atol=1e-7, err_msg=name)
        moved = [np.abs(w).sum() for w in expected]
        assert all(m > 0 for m in moved)
    # Only rank 0 snapshots: one caffemodel and one solverstate (and its side file) for the 2-rank run.
    written = sorted(p.name for p in folder.iterdir() if p.name.startswith("ranks_iter_"))
    assert written == [f"ranks_iter_{ITERS}.caffemodel", f"ranks_iter_{ITERS}.solverstate",
                       f"ranks_iter_{ITERS}.solverstate.brewnet"]


def test_ranks_read_disjoint_shares_and_stay_identical(case, tmp_path):
    launch(record, 2, (str(case["solver"]), str(tmp_path)), timeout=60)
    labels = [np.load(tmp_path / f"labels{r}.npy") for r in range(2)]
    for rank, seen in enumerate(labels):
        assert seen.shape == (ITERS, BATCH)
        # rank r reads records r, r+2, r+4, ... in order, round and round
        expected = [[(2 * (k * BATCH + j) + rank) % RECORDS for j in range(BATCH)] for k in range(ITERS)]
        np.testing.assert_array_equal(seen, expected)
    for k in range(ITERS):
        assert set(labels[0][k]).isdisjoint(labels[1][k])
        assert set(labels[0][k]) | set(labels[1][k]) == set(case["labels"][k])
    params = [np.load(tmp_path / f"params{r}.npz") for r in range(2)]
    reference = case["params"]["ip1"] + case["params"]["ip2"]
    for i, want in enumerate(reference):
        np.testing.assert_array_equal(params[0][f"arr_{i}"], params[1][f"arr_{i}"])
        np.testing.assert_allclose(params[0][f"arr_{i}"], want, rtol=1e-5, atol=1e-7)


def test_a_killed_rank_ends_the_run_with_an_error_naming_it(case, tmp_path):
    start = time.monotonic()
    with pytest.raises(DistributedError) as info:
        launch(_kill_rank_1, 2, (str(case["solver"]), str(tmp_path)), timeout=60, grace=40)
    elapsed = time.monotonic() - start
    message = str(info.value)
    assert "first failure: rank 1" in message
    assert "rank 1" in message and "SIGKILL" in message
    # rank 0 saw the dead peer and left by itself, well before the launcher's 40 s grace period ran out
    assert "rank 0" in message and "exited with status 1" in message
    assert "died or stopped answering" in message
    assert "terminated by the launcher" not in message
    assert elapsed < 30


def _kill_rank_1(solver_path, out_dir):
    record(solver_path, out_dir, kill_rank=1)


def test_a_hung_rank_times_out_and_is_terminated(case, tmp_path):
    with pytest.raises(DistributedError) as info:
        launch(_hang_rank_1, 2, (str(case["solver"]), str(tmp_path)), timeout=3, grace=1)
    message = str(info.value)
    assert "first failure: rank 0" in message
    assert "rank 0 of 2: the broadcast after the stop/snapshot check at iteration 3 failed" in message
    assert "rank 1" in message and "terminated by the launcher" in message


def _hang_rank_1(solver_path, out_dir):
    record(solver_path, out_dir, hang_rank=1)


def test_torchrun_environment(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert torchrun_environment() is None
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    assert torchrun_environment() == (3, 4, 3)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert torchrun_environment() == (3, 4, 1)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(DistributedError, match="Expect: 0 <= RANK < WORLD_SIZE, Actual: RANK=4 WORLD_SIZE=4"):
        torchrun_environment()
