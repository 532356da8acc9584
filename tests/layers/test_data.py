"""Data layer: the batches Caffe's own Data layer produced (golden/files), labels, errors, shutdown."""
import threading

import numpy as np
import pytest

from brewnet.data import db as dbm
from brewnet.errors import LayerError, DataError
from brewnet.proto import caffe_pb2
from brewnet.proto.io import write_binary

from ._data_helpers import check_exact_resume, layer_from_file, layer_from_text, setup

CASES = ["datalayer_mnist", "datalayer_mnist_leveldb", "datalayer_images_raw", "datalayer_images_gray32",
         "datalayer_images_encoded_color", "datalayer_images_encoded_force_gray"]


@pytest.mark.parametrize("case", CASES)
def test_golden_batches(golden, monkeypatch, case):
    """Crop centre, mean file / mean values, scale, LevelDB, encoded PNG: Caffe's first three batches."""
    monkeypatch.chdir(golden / "files")
    expected = np.load(f"{case}.npz")
    layer = layer_from_file(f"{case}.prototxt")
    top = setup(layer)
    try:
        assert top[0].shape == expected["batch0/data"].shape
        for k in range(3):
            layer.Forward([], top)
            np.testing.assert_allclose(top[0].data.numpy(), expected[f"batch{k}/data"], rtol=1e-6, atol=1e-6)
            assert np.array_equal(top[1].data.numpy(), expected[f"batch{k}/label"])
    finally:
        layer.close()


def test_without_label_top(golden, monkeypatch):
    monkeypatch.chdir(golden / "files")
    layer = layer_from_text('name: "d" type: "Data" top: "data" '
                            'data_param { source: "mnist1000_lmdb" backend: LMDB batch_size: 2 }')
    top = setup(layer, 1)
    layer.Forward([], top)
    layer.close()
    images = np.load("mnist1000.npz")["images"][:2]
    assert np.array_equal(top[0].data.numpy()[:, 0], images.astype(np.float32))


def test_close_joins_threads(golden, monkeypatch):
    monkeypatch.chdir(golden / "files")
    before, envs_before = set(threading.enumerate()), set(dbm._lmdb_envs)
    layer = layer_from_text('name: "d" type: "Data" top: "data" top: "label" '
                            'data_param { source: "mnist1000_lmdb" backend: LMDB batch_size: 100 prefetch: 2 }')
    top = setup(layer)
    layer.Forward([], top)
    assert len(set(threading.enumerate()) - before) == 2
    layer.close()
    layer.stop()   # idempotent alias
    assert set(threading.enumerate()) == before
    assert set(dbm._lmdb_envs) == envs_before      # its database closed (other tests' may still be open)


def test_missing_db(tmp_path):
    layer = layer_from_text(f'name: "d" type: "Data" top: "data" '
                            f'data_param {{ source: "{tmp_path / "no_lmdb"}" backend: LMDB batch_size: 2 }}')
    with pytest.raises(LayerError, match="no_lmdb' does not exist"):
        setup(layer)


def test_record_not_a_datum_names_key(tmp_path):
    with dbm.open_db(tmp_path / "db", "lmdb", dbm.NEW) as database:
        txn = database.transaction()
        txn.put("00000000", caffe_pb2.Datum(channels=1, height=1, width=1, data=b"\x01").SerializeToString())
        txn.put("00000001", b"\xff\xfe not a datum")
        txn.commit()
    layer = layer_from_text(f'name: "d" type: "Data" top: "data" '
                            f'data_param {{ source: "{tmp_path / "db"}" backend: LMDB batch_size: 2 }}')
    top = setup(layer, 1)
    try:
        with pytest.raises(DataError, match="00000001.*not a serialized Datum"):
            layer.Forward([], top)
    finally:
        layer.close()


def test_mean_file_shape_mismatch(golden, tmp_path):
    proto = caffe_pb2.BlobProto(num=1, channels=3, height=28, width=28)
    proto.data.extend([0.0] * (3 * 28 * 28))
    write_binary(proto, tmp_path / "mean.binaryproto")
    layer = layer_from_text(f'name: "d" type: "Data" top: "data" '
                            f'transform_param {{ mean_file: "{tmp_path / "mean.binaryproto"}" }} '
                            f'data_param {{ source: "{golden / "files" / "mnist1000_lmdb"}" batch_size: 2 '
                            f'backend: LMDB }}')
    top = setup(layer, 1)
    try:
        with pytest.raises(DataError, match=r"Expect: mean of shape \(1, 28, 28\).*Actual: \(3, 28, 28\)"):
            layer.Forward([], top)
    finally:
        layer.close()


def test_train_phase_random_crop_stays_inside(golden):
    layer = layer_from_text(f'name: "d" type: "Data" top: "data" top: "label" '
                            f'transform_param {{ crop_size: 20 mirror: true }} '
                            f'data_param {{ source: "{golden / "files" / "mnist1000_lmdb"}" batch_size: 8 '
                            f'backend: LMDB }}', phase=caffe_pb2.TRAIN)
    top = setup(layer)
    layer.Forward([], top)
    layer.close()
    images = np.load(golden / "files" / "mnist1000.npz")["images"][:8].astype(np.float32)
    for i in range(8):   # each output is some 20x20 window of its digit, maybe mirrored
        windows = [w for h in range(9) for x in range(9) for w in (images[i, h:h + 20, x:x + 20],
                                                                    images[i, h:h + 20, x:x + 20][:, ::-1])]
        assert any(np.array_equal(top[0].data.numpy()[i, 0], w) for w in windows)


@pytest.fixture
def two_solvers():
    """common.solver_count() == 2 for the test (as the parallel trainer sets it), 1 again afterwards."""
    from brewnet.core import common
    common.set_solver_count(2)
    yield common
    common.set_solver_count(1)
    common.set_solver_rank(0)


@pytest.mark.parametrize("backend", ["lmdb", "leveldb"])
def test_solver_ranks_read_disjoint_shares(tmp_path, two_solvers, backend):
    """Caffe's DataReader for several solvers: in TRAIN, rank r of 2 keeps record i when i % 2 == r; the two
    shares are disjoint and cover the database; in TEST every rank reads every record."""
    from brewnet.data.datum import array_to_datum
    path = tmp_path / "db"
    with dbm.open_db(path, backend, dbm.NEW) as database:
        txn = database.transaction()
        for i in range(10):
            txn.put(dbm.format_key(i), array_to_datum(np.full((1, 2, 2), 100 + i, np.uint8), i).SerializeToString())
        txn.commit()
    text = (f'name: "d" type: "Data" top: "data" top: "label" '
            f'data_param {{ source: "{path}" backend: {backend.upper()} batch_size: 5 }}')

    def batches(rank, phase):
        two_solvers.set_solver_rank(rank)
        layer = layer_from_text(text, phase)
        top = setup(layer)
        try:
            out = []
            for _ in range(2):   # the second batch starts the share over
                layer.Forward([], top)
                labels = top[1].data.numpy().astype(int)
                assert np.array_equal(top[0].data.numpy()[:, 0, 0, 0], labels + 100)
                out.append(labels.tolist())
            return out
        finally:
            layer.close()

    shares = [batches(rank, caffe_pb2.TRAIN) for rank in range(2)]
    assert shares[0] == [[0, 2, 4, 6, 8]] * 2 and shares[1] == [[1, 3, 5, 7, 9]] * 2
    assert not set(shares[0][0]) & set(shares[1][0])
    assert sorted(shares[0][0] + shares[1][0]) == list(range(10))
    assert batches(1, caffe_pb2.TEST) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


def write_random_db(path, n, shape=(1, 6, 7)):
    images = np.random.RandomState(0).randint(0, 256, (n,) + shape).astype(np.uint8)
    with dbm.open_db(path, "lmdb", dbm.NEW) as database:
        txn = database.transaction()
        for i, image in enumerate(images):
            txn.put(dbm.format_key(i), caffe_pb2.Datum(channels=shape[0], height=shape[1], width=shape[2],
                                                       data=image.tobytes(), label=i).SerializeToString())
        txn.commit()


@pytest.mark.parametrize("k", [0, 3])
def test_exact_resume_with_random_crop_mirror_and_skip(tmp_path, k):
    """7 records, batch 3: the 4 batches after the state cross the end of the database; the random crop,
    mirror and rand_skip come out the same from a fresh layer given the state (k = 0: before any Forward)."""
    write_random_db(tmp_path / "db", 7)
    text = (f'name: "d" type: "Data" top: "data" top: "label" transform_param {{ crop_size: 4 mirror: true }} '
            f'data_param {{ source: "{tmp_path / "db"}" backend: LMDB batch_size: 3 rand_skip: 5 prefetch: 2 }}')
    state = check_exact_resume(lambda: layer_from_text(text, caffe_pb2.TRAIN), 2, k, 4)
    assert set(state) == {"source", "transformer_rng"}
    if k:
        assert state["source"]["skip"] == 0   # the skip was passed over with the first batch


def test_state_dict_reports_the_consumed_batch_not_the_read_ahead(tmp_path):
    write_random_db(tmp_path / "db", 20)
    layer = layer_from_text(f'name: "d" type: "Data" top: "data" top: "label" '
                            f'data_param {{ source: "{tmp_path / "db"}" backend: LMDB batch_size: 2 prefetch: 3 }}')
    top = setup(layer)
    try:
        layer.Forward([], top)
        layer.Forward([], top)
        threading.Event().wait(0.05)   # the threads fill their queues meanwhile
        assert layer.state_dict()["source"] == {"index": 4, "skip": 0}
        assert top[1].data.tolist() == [2, 3]
        layer.load_state_dict({"source": {"index": 9, "skip": 0}, "transformer_rng": None})
        layer.Forward([], top)
        assert top[1].data.tolist() == [9, 10]
    finally:
        layer.close()
