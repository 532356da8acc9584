"""Snapshots: exact resume (beyond Caffe), the side file, formats, and the errors of a bad snapshot."""
import os
import zipfile

import numpy as np
import pytest
import torch

from brewnet.errors import SolverError, WeightsError
from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text, read_binary
from brewnet.solvers import get_solver
from brewnet.solvers import snapshot as snap

from ._nets import golden_workdir

# Random data every forward (DummyData, torch's generator) and Dropout: a resumed run can only match an
# uninterrupted one if the random generators come back exactly.
RANDOM_NET = """
name: "noisy"
layer { name: "data" type: "DummyData" top: "x" top: "y"
        dummy_data_param { shape { dim: 8 dim: 5 } shape { dim: 8 dim: 3 }
                           data_filler { type: "gaussian" std: 1 } data_filler { type: "uniform" min: -1 max: 1 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "h" inner_product_param { num_output: 6
        weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "h" top: "h" }
layer { name: "drop" type: "Dropout" bottom: "h" top: "h" dropout_param { dropout_ratio: 0.3 } }
layer { name: "ip2" type: "InnerProduct" bottom: "h" top: "p" inner_product_param { num_output: 3
        weight_filler { type: "xavier" } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "p" bottom: "y" top: "loss" }
"""


def random_solver(tmp_path, extra=""):
    text = (f'type: "Adam" base_lr: 0.01 momentum: 0.9 momentum2: 0.999 lr_policy: "step" gamma: 0.5 '
            f'stepsize: 3 weight_decay: 0.001 display: 0 random_seed: 7 max_iter: 100 '
            f'snapshot_prefix: "{tmp_path}/snap" {extra} net_param {{ {RANDOM_NET} }}')
    return get_solver(parse_text(text, caffe_pb2.SolverParameter()))


def params(solver):
    return [p.data.clone() for p in solver.net.learnable_params]


@pytest.mark.parametrize("fmt", ["BINARYPROTO", "HDF5"])
def test_2n_equals_n_resume_n_bit_for_bit(tmp_path, fmt):
    n = 5
    straight = random_solver(tmp_path, f"snapshot_format: {fmt}")
    straight.step(2 * n)
    expected = params(straight)

    first = random_solver(tmp_path, f"snapshot_format: {fmt}")
    first.step(n)
    state_file = first.snapshot()
    torch.manual_seed(12345)          # whatever happens in between must not matter
    np.random.seed(12345)
    resumed = random_solver(tmp_path, f"snapshot_format: {fmt}")
    resumed.restore(state_file)
    assert resumed.iter == n and resumed.current_step == first.current_step
    resumed.step(n)
    for got, want in zip(params(resumed), expected):
        assert torch.equal(got, want)
    assert float(resumed.net.blobs["loss"].data) == float(straight.net.blobs["loss"].data)


def test_without_side_file_resume_is_caffes_not_exact(tmp_path):
    """The control experiment: drop the side file and the data (random here) differs after the restore."""
    n = 4
    straight = random_solver(tmp_path)
    straight.step(2 * n)
    first = random_solver(tmp_path)
    first.step(n)
    state_file = first.snapshot()
    os.remove(snap.side_file(state_file))
    resumed = random_solver(tmp_path)
    resumed.restore(state_file)
    resumed.step(n)
    assert not all(torch.equal(a, b) for a, b in zip(params(resumed), params(straight)))


def test_snapshot_files_and_caffe_compatible_solverstate(tmp_path):
    solver = random_solver(tmp_path)
    solver.step(3)
    state_file = solver.snapshot()
    assert state_file == f"{tmp_path}/snap_iter_3.solverstate"
    assert sorted(os.listdir(tmp_path)) == ["snap_iter_3.caffemodel", "snap_iter_3.solverstate",
                                            "snap_iter_3.solverstate.brewnet"]
    state = read_binary(state_file, caffe_pb2.SolverState())
    # exactly Caffe's fields: nothing a Caffe reader would not know
    assert [f.name for f, _ in state.ListFields()] == ["iter", "learned_net", "history", "current_step"]
    assert (state.iter, state.learned_net, state.current_step) == (3, f"{tmp_path}/snap_iter_3.caffemodel", 0)
    assert len(state.history) == 2 * len(solver.net.learnable_params)      # Adam: m and v
    np.testing.assert_array_equal(np.asarray(state.history[0].data).reshape(solver.history[0].shape),
                                  solver.history[0].data.numpy())
    # the side file is a plain zip of JSON + .npy: no pickle anywhere
    with zipfile.ZipFile(snap.side_file(state_file)) as z:
        names = z.namelist()
    assert "state.json" in names and "rng/torch_cpu.npy" in names
    meta, arrays = snap.read_side_file(snap.side_file(state_file))
    assert meta["iter"] == 3 and arrays["rng/numpy_keys"].dtype == np.uint32


def test_hdf5_snapshot_layout_is_caffes(tmp_path):
    import h5py
    solver = random_solver(tmp_path, "snapshot_format: HDF5")
    solver.step(2)
    state_file = solver.snapshot()
    assert state_file.endswith("snap_iter_2.solverstate.h5")
    with h5py.File(state_file, "r") as f:
        assert int(f["iter"][0]) == 2 and int(f["current_step"][0]) == 0
        assert f["learned_net"][()].decode().rstrip("\0") == f"{tmp_path}/snap_iter_2.caffemodel.h5"
        assert sorted(f["history"].keys(), key=int) == [str(i) for i in range(8)]
    with h5py.File(f"{tmp_path}/snap_iter_2.caffemodel.h5", "r") as f:
        np.testing.assert_array_equal(f["data/ip1/0"][()], solver.net.layer_by_name("ip1").blobs[0].data.numpy())


def test_snapshot_every_n_iterations_and_after_train(tmp_path):
    solver = random_solver(tmp_path, "snapshot: 4 max_iter: 10")
    solver.solve()
    names = sorted(n for n in os.listdir(tmp_path) if n.endswith(".solverstate"))
    assert names == ["snap_iter_10.solverstate", "snap_iter_4.solverstate", "snap_iter_8.solverstate"]


def test_no_snapshot_after_train_when_disabled(tmp_path):
    solver = random_solver(tmp_path, "max_iter: 3 snapshot_after_train: false")
    solver.solve()
    assert os.listdir(tmp_path) == []


def test_shape_mismatch_names_the_layer(golden, tmp_path, monkeypatch):
    source = golden_workdir(golden, tmp_path, monkeypatch)
    net = (source / "net.prototxt").read_text().replace("num_output: 5", "num_output: 7")
    (tmp_path / "wide.prototxt").write_text(net)
    param = parse_text((source / "adam.solver.prototxt").read_text().replace("net.prototxt", "wide.prototxt"),
                       caffe_pb2.SolverParameter())
    solver = get_solver(param)
    with pytest.raises(WeightsError, match=r"layer 'ip1'.*shape mismatch"):
        solver.restore(str(source / "adam_iter_6.solverstate"))


def test_history_of_another_solver_type_is_refused(golden, tmp_path, monkeypatch):
    source = golden_workdir(golden, tmp_path, monkeypatch)
    solver = get_solver(str(source / "sgd_fixed.solver.prototxt"))   # SGD: 4 history blobs, Adam's file has 8
    with pytest.raises(SolverError, match="Incorrect length of history blobs: the state has 8"):
        solver.restore(str(source / "adam_iter_6.solverstate"))


def test_missing_files(tmp_path):
    solver = random_solver(tmp_path)
    with pytest.raises(SolverError, match="solver state file not found"):
        solver.restore(str(tmp_path / "nope.solverstate"))
    solver.step(1)
    state_file = solver.snapshot()
    os.remove(f"{tmp_path}/snap_iter_1.caffemodel")
    with pytest.raises(SolverError, match=r"learned_net '.*snap_iter_1.caffemodel' was not found"):
        random_solver(tmp_path).restore(state_file)


def test_damaged_side_file_is_an_error_naming_it(tmp_path):
    solver = random_solver(tmp_path)
    state_file = solver.snapshot()
    with open(snap.side_file(state_file), "wb") as f:
        f.write(b"garbage")
    with pytest.raises(SolverError, match="solverstate.brewnet: cannot read the exact-resume state"):
        random_solver(tmp_path).restore(state_file)


def test_atomic_path_leaves_nothing_behind_on_failure(tmp_path):
    target = tmp_path / "x.bin"
    with pytest.raises(RuntimeError):
        with snap.atomic_path(target) as tmp:
            open(tmp, "wb").write(b"half")
            raise RuntimeError("killed")
    assert os.listdir(tmp_path) == []
    with snap.atomic_path(target) as tmp:
        open(tmp, "wb").write(b"whole")
    assert target.read_bytes() == b"whole" and os.listdir(tmp_path) == ["x.bin"]
