"""LMDB and LevelDB: the databases Caffe's convert_mnist_data wrote, and our own writes."""
import os

import numpy as np
import pytest

from brewnet.data import db as dbm
from brewnet.data.datum import array_to_datum, datum_to_array, parse_datum
from brewnet.errors import DataError
from brewnet.proto import caffe_pb2
from brewnet.proto.io import read_binary


@pytest.mark.parametrize("backend", ["lmdb", "leveldb"])
def test_read_caffe_mnist_db(golden, backend):
    files = golden / "files"
    expected = np.load(files / "mnist1000.npz")
    with dbm.open_db(files / f"mnist1000_{backend}", backend) as database:
        assert len(database) == 1000
        records = list(database)
    assert [k for k, _ in records[:3]] == [b"00000000", b"00000001", b"00000002"]
    datums = [parse_datum(v, k) for k, v in records]
    images = np.stack([datum_to_array(d)[0] for d in datums])
    assert np.array_equal(images, expected["images"])
    assert np.array_equal([d.label for d in datums], expected["labels"])


def test_leveldb_readonly_copy_is_removed(golden):
    database = dbm.open_db(golden / "files" / "mnist1000_leveldb", "leveldb")
    copy = database._copy
    if not os.access(golden / "files" / "mnist1000_leveldb", os.W_OK):
        assert copy is not None and os.path.isdir(copy)
    database.close()
    assert copy is None or not os.path.exists(copy)


def test_mean_binaryproto(golden):
    expected = np.load(golden / "files" / "mnist1000.npz")["images"].astype(np.float64).mean(axis=0)
    proto = read_binary(golden / "files" / "mnist1000_mean.binaryproto", caffe_pb2.BlobProto())
    assert (proto.num, proto.channels, proto.height, proto.width) == (1, 1, 28, 28)
    np.testing.assert_allclose(np.asarray(proto.data).reshape(28, 28), expected, rtol=1e-6)


@pytest.mark.parametrize("backend", ["lmdb", "leveldb"])
def test_write_then_read(tmp_path, backend):
    path = tmp_path / "db"
    with dbm.open_db(path, backend, dbm.NEW) as database:
        txn = database.transaction()
        for i in range(25):
            txn.put(dbm.format_key(i), array_to_datum(np.full((1, 2, 2), i, np.uint8), i).SerializeToString())
            if i % 10 == 9:
                txn.commit()
        txn.commit()
    with dbm.open_db(path, backend) as database:
        cursor = database.cursor()
        seen = []
        while cursor.valid():
            seen.append((cursor.key(), parse_datum(cursor.value()).label))
            cursor.next()
        cursor.seek_to_first()
        assert cursor.key() == b"00000000"
        cursor.close()
    assert seen == [(f"{i:08d}".encode(), i) for i in range(25)]


def test_lmdb_map_grows(tmp_path):
    path = tmp_path / "big"
    with dbm.open_db(path, "lmdb", dbm.NEW) as database:
        txn = database.transaction()
        for i in range(100):
            txn.put(dbm.format_key(i), bytes(1 << 20))   # 100 MiB > the initial 64 MiB map
        txn.commit()
        assert len(database) == 100


def test_lmdb_two_readers_share_environment(golden):
    a = dbm.open_db(golden / "files" / "mnist1000_lmdb")
    b = dbm.open_db(golden / "files" / "mnist1000_lmdb")
    assert len(a) == len(b) == 1000
    a.close()
    assert len(b) == 1000   # closing one reader leaves the other working
    b.close()
    assert not dbm._lmdb_envs


def test_keys():
    assert dbm.format_key(7) == "00000007"
    assert dbm.format_key(12, "cat/1.jpg") == "00000012_cat/1.jpg"


def test_missing_and_existing_paths(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        dbm.open_db(tmp_path / "missing_lmdb", "lmdb")
    with pytest.raises(DataError, match="does not exist"):
        dbm.open_db(tmp_path / "missing_leveldb", "leveldb")
    (tmp_path / "there").mkdir()
    with pytest.raises(DataError, match="already exists"):
        dbm.open_db(tmp_path / "there", "lmdb", dbm.NEW)
    with pytest.raises(DataError, match="unknown database backend"):
        dbm.open_db(tmp_path, "rocksdb")
