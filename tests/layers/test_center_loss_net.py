"""CenterLoss inside nets and solvers: the solver moves the centers by lr * caffe-face's update, the centers
are written to caffemodel / HDF5 snapshots, copied by -weights, restored by -snapshot (training then goes on
bit-identically), and train in bf16."""
import numpy as np
import pytest
import torch

from brewnet.core.net import Net
from brewnet.data.datum import array_to_datum
from brewnet.data.db import format_key, open_db
from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text
from brewnet.solvers import get_solver
from tests.layers.test_center_loss import caffe_face_center_diff

RECORDS, CLASSES = 24, 3

NET = """
name: "centers"
layer {{ name: "data" type: "Data" top: "data" top: "label"
        data_param {{ source: "{db}" backend: LMDB batch_size: 6 }} }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        inner_product_param {{ num_output: 2 weight_filler {{ type: "gaussian" std: 0.5 }} }} }}
layer {{ name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param {{ num_output: 3 weight_filler {{ type: "gaussian" std: 0.5 }} }} }}
layer {{ name: "softmax_loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "softmax_loss" }}
layer {{ name: "center_loss" type: "CenterLoss" bottom: "ip1" bottom: "label" top: "center_loss"
        param {{ lr_mult: 1 decay_mult: 0 }} loss_weight: 0.1
        center_loss_param {{ num_output: 3 center_filler {{ type: "gaussian" std: 1 }} }} }}
"""


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """An LMDB of 24 records of 4 values, labels cycling 0, 1, 2."""
    folder = tmp_path_factory.mktemp("centers")
    values = np.random.RandomState(5).uniform(-1, 1, (RECORDS, 1, 1, 4)).astype(np.float32)
    with open_db(folder / "db", "lmdb", "n") as handle:
        txn = handle.transaction()
        for i, x in enumerate(values):
            txn.put(format_key(i), array_to_datum(x + (i % CLASSES), label=i % CLASSES).SerializeToString())
        txn.commit()
    return folder / "db"


def solver(db, tmp_path, extra="", precision=None):
    text = (f'type: "SGD" base_lr: 0.05 momentum: 0.9 weight_decay: 0.001 lr_policy: "fixed" display: 0 '
            f'random_seed: 3 max_iter: 100 snapshot_prefix: "{tmp_path}/snap" {extra} '
            f'net_param {{ {NET.format(db=db)} }}')
    return get_solver(parse_text(text, caffe_pb2.SolverParameter()), precision=precision)


def centers(s):
    return s.net.layer_by_name("center_loss").blobs[0].data.numpy().copy()


def test_the_solver_moves_centers_by_lr_times_caffe_face_update(db, tmp_path):
    s = solver(db, tmp_path)
    before = centers(s)
    s.net.forward()
    features = s.net.blobs["ip1"].data.numpy().astype(np.float64).copy()
    labels = s.net.blobs["label"].data.numpy().copy()
    s2 = solver(db, tmp_path)             # the same first batch, stepped by the solver
    s2.step(1)
    expected = before - 0.05 * caffe_face_center_diff(features, labels, before.astype(np.float64))
    np.testing.assert_allclose(centers(s2), expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(centers(s2), before)


@pytest.mark.parametrize("fmt", ["BINARYPROTO", "HDF5"])
def test_centers_survive_snapshot_and_resume_bit_for_bit(db, tmp_path, fmt):
    straight = solver(db, tmp_path, f"snapshot_format: {fmt}")
    straight.step(8)
    first = solver(db, tmp_path, f"snapshot_format: {fmt}")
    first.step(4)
    at_snapshot = centers(first)
    state_file = first.snapshot()
    resumed = solver(db, tmp_path, f"snapshot_format: {fmt}")
    assert not np.array_equal(centers(resumed), at_snapshot)
    resumed.restore(state_file)
    np.testing.assert_array_equal(centers(resumed), at_snapshot)
    resumed.step(4)
    for got, want in zip(resumed.net.learnable_params, straight.net.learnable_params):
        np.testing.assert_array_equal(got.data.numpy(), want.data.numpy())
    np.testing.assert_array_equal(centers(resumed), centers(straight))


def test_centers_are_in_the_caffemodel_and_copied_by_weights(db, tmp_path):
    s = solver(db, tmp_path)
    s.step(3)
    path = tmp_path / "trained.caffemodel"
    s.net.save(str(path))
    model = caffe_pb2.NetParameter.FromString(path.read_bytes())
    stored = next(layer for layer in model.layer if layer.name == "center_loss")
    assert list(stored.blobs[0].shape.dim) == [3, 2]
    np.testing.assert_array_equal(np.array(stored.blobs[0].data, dtype=np.float32).reshape(3, 2), centers(s))
    fresh = Net(parse_text(NET.format(db=db), caffe_pb2.NetParameter()), phase="TRAIN", weights=str(path))
    loaded = fresh.layer_by_name("center_loss").blobs[0].data.numpy()
    np.testing.assert_array_equal(loaded, centers(s))


def test_center_loss_trains_in_bf16_with_fp32_centers(db, tmp_path):
    full, low = solver(db, tmp_path), solver(db, tmp_path, precision="bf16")
    full.step(5)
    low.step(5)
    assert low.net.layer_by_name("center_loss").blobs[0].data.dtype == torch.float32
    assert np.isfinite(float(low.net.blobs["center_loss"].data))
    np.testing.assert_allclose(centers(low), centers(full), rtol=0.05, atol=0.02)
    assert not np.array_equal(centers(low), centers(full))         # bf16 really computed something
