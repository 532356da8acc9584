"""Damaged databases and records: a truncated data.mdb, overwritten LMDB pages, Datums whose bytes do not fit
their shape or whose shape is not the batch's.  Each is a DataError naming the database and the record."""
import logging
import os
import struct

import numpy as np
import pytest

from brewnet.data import db as dbm
from brewnet.data import datum as dm
from brewnet.data.datum import array_to_datum
from brewnet.data.prefetch import DBRecords, Prefetcher
from brewnet.errors import DataError

PAGE = 4096


def make_images_db(path, n=100, shape=(1, 28, 28), odd=None):
    """n MNIST-sized records keyed 00000000...; `odd` = {index: Datum} replaces records."""
    odd = odd or {}
    with dbm.open_db(path, "lmdb", dbm.NEW) as database:
        txn = database.transaction()
        for i in range(n):
            datum = odd.get(i) or array_to_datum(np.full(shape, i % 256, np.uint8), i % 10)
            txn.put(dbm.format_key(i), datum.SerializeToString())
        txn.commit()
    return str(path)


def newest_meta(data_file):
    """(root page of the main database, last page in use) from LMDB's newest meta page (64-bit layout)."""
    with open(data_file, "rb") as f:
        metas = [f.read(PAGE) for _ in range(2)]
    newest = max(metas, key=lambda m: struct.unpack_from("<Q", m, 144)[0])
    return struct.unpack_from("<Q", newest, 128)[0], struct.unpack_from("<Q", newest, 136)[0]


def overwrite_page(data_file, page, nbytes=64):
    with open(data_file, "r+b") as f:
        f.seek(page * PAGE)
        f.write(b"\xff" * nbytes)


def truncate(path, keep):
    data_file = os.path.join(path, "data.mdb")
    with open(data_file, "r+b") as f:
        f.truncate(keep)
    return data_file


def test_meta_page_gives_the_size_the_file_needs(tmp_path):
    path = make_images_db(tmp_path / "db")
    needed, page_size = dbm.lmdb_needed_size(os.path.join(path, "data.mdb"))
    assert page_size == PAGE and needed == os.path.getsize(os.path.join(path, "data.mdb"))
    assert needed == (newest_meta(os.path.join(path, "data.mdb"))[1] + 1) * PAGE


def test_truncated_lmdb_is_refused_before_mapping(tmp_path):
    path = make_images_db(tmp_path / "db")
    full = os.path.getsize(os.path.join(path, "data.mdb"))
    truncate(path, full // 2)
    with pytest.raises(DataError) as info:
        dbm.open_db(path, "lmdb")
    message = str(info.value)
    assert f"LMDB '{path}' is truncated" in message
    assert f"has {full // 2} bytes" in message and f"({full} bytes)" in message
    with pytest.raises(DataError, match="is truncated"):
        dbm.open_db(path, "lmdb", dbm.WRITE)


def test_empty_data_file_is_a_data_error(tmp_path):
    path = make_images_db(tmp_path / "db")
    truncate(path, 0)
    with pytest.raises(DataError, match=f"cannot open LMDB '{path}'"):
        dbm.open_db(path, "lmdb")


def test_corrupt_root_page_names_the_db_at_the_first_record(tmp_path):
    path = make_images_db(tmp_path / "db")
    root, _ = newest_meta(os.path.join(path, "data.mdb"))
    overwrite_page(os.path.join(path, "data.mdb"), root)
    with dbm.open_db(path, "lmdb") as database:
        with pytest.raises(DataError) as info:
            database.cursor()
    assert str(info.value).startswith(f"LMDB '{path}' is corrupt or unreadable while reading its first record: ")
    assert "MDB_" in str(info.value)


def test_corrupt_leaf_page_names_the_last_intact_key(tmp_path):
    path = make_images_db(tmp_path / "db")
    _, last = newest_meta(os.path.join(path, "data.mdb"))
    overwrite_page(os.path.join(path, "data.mdb"), last // 2)
    read = []
    with dbm.open_db(path, "lmdb") as database:
        with pytest.raises(DataError) as info:
            for key, _ in database:
                read.append(key.decode())
    assert 0 < len(read) < 100
    assert f"while reading record #{len(read)} (the one after key '{read[-1]}')" in str(info.value)
    assert str(info.value).startswith(f"LMDB '{path}' is corrupt")


def test_corrupt_page_reaches_the_consumer_from_the_reader_thread(tmp_path):
    path = make_images_db(tmp_path / "db")
    _, last = newest_meta(os.path.join(path, "data.mdb"))
    overwrite_page(os.path.join(path, "data.mdb"), last // 2)
    prefetcher = Prefetcher(DBRecords(path, "lmdb"), 4, lambda chunk: [k for k, _ in chunk], prefetch=2)
    batches = []
    try:
        with pytest.raises(DataError, match=f"LMDB '{path}' is corrupt or unreadable while reading record #"):
            while True:
                batches.append(prefetcher.next_batch())
        with pytest.raises(DataError, match="is corrupt"):      # asked again: the same error, no hang
            prefetcher.next_batch()
    finally:
        prefetcher.stop()
    assert batches and batches[0] == [b"00000000", b"00000001", b"00000002", b"00000003"]
    assert not prefetcher.alive()


def test_short_datum_says_which_count_is_wrong():
    good = array_to_datum(np.zeros((1, 28, 28), np.uint8))
    short = array_to_datum(np.zeros((1, 28, 28), np.uint8))
    short.data = short.data[:700]
    with pytest.raises(DataError) as info:
        dm.stack_datums([good, short, good], keys=["00000000", "00000001", "00000002"])
    assert str(info.value) == ("record '00000001': holds 700 bytes of data but its shape 1 x 28 x 28 needs 784 "
                               "(a truncated or wrongly written Datum)")


def test_short_float_datum_names_its_key():
    datum = dm.caffe_pb2.Datum(channels=1, height=2, width=2)
    datum.float_data.extend([1.0, 2.0, 3.0])
    with pytest.raises(DataError) as info:
        dm.decode_datums([datum], keys=["k7"])
    assert str(info.value) == "record 'k7': Datum: Expect: 4 float values for shape 1 x 2 x 2, Actual: 3 float values"


@pytest.mark.parametrize("odd_index", [0, 1, 3])
def test_record_of_another_shape_is_named_even_first_in_the_batch(odd_index):
    keys = [f"k{i}" for i in range(4)]
    datums = [array_to_datum(np.zeros((1, 28, 28), np.uint8)) for _ in keys]
    datums[odd_index] = array_to_datum(np.zeros((1, 20, 20), np.uint8))
    with pytest.raises(DataError) as info:
        dm.stack_datums(datums, keys=keys)
    assert str(info.value).startswith(f"record 'k{odd_index}': Expect: shape (1, 28, 28)")
    assert str(info.value).endswith("Actual: (1, 20, 20)")


def test_a_tie_is_settled_by_the_expected_shape():
    datums = [array_to_datum(np.zeros((1, 20, 20), np.uint8)), array_to_datum(np.zeros((1, 28, 28), np.uint8))]
    with pytest.raises(DataError, match=r"record 'a': Expect: shape \(1, 28, 28\)"):
        dm.stack_datums(datums, keys=["a", "b"], expected=(1, 28, 28))
    with pytest.raises(DataError, match=r"record 'b': Expect: shape \(1, 20, 20\)"):
        dm.stack_datums(datums, keys=["a", "b"])


def test_restart_is_info_once_per_reader_then_debug(tmp_path, caplog):
    path = make_images_db(tmp_path / "db", n=3)
    records = DBRecords(path, "lmdb")
    with caplog.at_level(logging.DEBUG, logger="brewnet"):
        for _ in range(3 * 5 + 1):        # five full passes, then the sixth begins
            next(records)
    records.close()
    restarts = [r for r in caplog.records if r.getMessage() == "Restarting data prefetching from start."]
    assert [r.levelno for r in restarts] == [logging.INFO] + [logging.DEBUG] * 4
