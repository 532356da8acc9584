"""The prefetch machinery: whole batches, bounded read-ahead, clean stop, disjoint solver shares."""
import threading
import time

import numpy as np
import pytest

from brewnet.data import db as dbm
from brewnet.data.datum import array_to_datum
from brewnet.data.prefetch import BlockingQueue, Prefetcher, Stopped, db_records
from brewnet.errors import DataError


def make_db(path, n=10):
    with dbm.open_db(path, "lmdb", dbm.NEW) as database:
        txn = database.transaction()
        for i in range(n):
            txn.put(dbm.format_key(i), array_to_datum(np.full((1, 1, 1), i, np.uint8), i).SerializeToString())
        txn.commit()
    return path


def test_blocking_queue_stop_wakes_waiters():
    q = BlockingQueue(1)
    errors = []

    def getter():
        try:
            q.get()
        except Stopped:
            errors.append("stopped")
    thread = threading.Thread(target=getter)
    thread.start()
    time.sleep(0.05)
    q.stop()
    thread.join(2)
    assert not thread.is_alive() and errors == ["stopped"]


def test_slow_consumer_sees_only_whole_batches_and_bounded_readahead():
    produced = []

    def records():
        for i in range(1000):
            produced.append(i)
            yield i

    prefetcher = Prefetcher(records(), 4, lambda chunk: list(chunk), prefetch=2)
    try:
        seen = []
        for _ in range(5):
            time.sleep(0.02)   # a slow consumer
            batch = prefetcher.next_batch()
            assert len(batch) == 4
            seen.extend(batch)
        assert seen == list(range(20))
        time.sleep(0.05)
        # Read ahead: at most 2 chunks waiting + 2 batches ready + 1 in each thread's hands.
        assert len(produced) <= 20 + 4 * 6 + 1
    finally:
        prefetcher.stop()
    assert not prefetcher.alive()


def test_stop_joins_threads_and_closes_source(tmp_path):
    path = make_db(tmp_path / "db", 10)
    before = set(threading.enumerate())
    records = db_records(path, "lmdb")
    prefetcher = Prefetcher(records, 3, lambda chunk: chunk, prefetch=1)
    prefetcher.next_batch()
    time.sleep(0.05)   # both threads now block on full queues
    prefetcher.stop()
    assert set(threading.enumerate()) == before
    assert not dbm._lmdb_envs   # the reader's LMDB environment is closed
    with pytest.raises(DataError, match="stopped"):
        prefetcher.next_batch()


def test_errors_reach_the_consumer():
    def load(chunk):
        raise DataError("bad record 00000003")
    prefetcher = Prefetcher(iter(range(100)), 2, load)
    with pytest.raises(DataError, match="00000003"):
        prefetcher.next_batch()
    prefetcher.stop()


def test_two_ranks_read_disjoint_shares_covering_the_db(tmp_path):
    path = make_db(tmp_path / "db", 11)
    shares = []
    for rank in range(2):
        records = db_records(path, "lmdb", rank=rank, num_ranks=2)
        share = [next(records)[0] for _ in range(6 if rank == 0 else 5)]
        # the next record starts the share again: the same keys every epoch
        assert next(records)[0] == share[0]
        records.close()
        shares.append(set(share))
    assert not shares[0] & shares[1]
    assert shares[0] | shares[1] == {dbm.format_key(i).encode() for i in range(11)}


def test_two_concurrent_readers_via_prefetchers(tmp_path):
    path = make_db(tmp_path / "db", 12)
    prefetchers = [Prefetcher(db_records(path, "lmdb", r, 2), 3, lambda c: [k for k, _ in c]) for r in range(2)]
    try:
        got = [set(p.next_batch() + p.next_batch()) for p in prefetchers]
    finally:
        for p in prefetchers:
            p.stop()
    assert not got[0] & got[1] and len(got[0] | got[1]) == 12


def test_skip_and_wrap(tmp_path):
    path = make_db(tmp_path / "db", 3)
    records = db_records(path, "lmdb", skip=2)
    assert [next(records)[0] for _ in range(4)] == [b"00000002", b"00000000", b"00000001", b"00000002"]
    records.close()


def test_missing_db(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        next(db_records(tmp_path / "nope", "lmdb"))


def test_position_is_that_of_the_consumed_batch_not_the_read_ahead(tmp_path):
    path = make_db(tmp_path / "db", 5)
    loaded = []

    def load(chunk):
        loaded.append(chunk)
        return [k for k, _ in chunk]
    prefetcher = Prefetcher(db_records(path, "lmdb"), 2, load, prefetch=3, loader_state=lambda: len(loaded))
    try:
        assert prefetcher.position == {"source": {"index": 0, "skip": 0}, "loader": 0}
        assert prefetcher.next_batch() == [b"00000000", b"00000001"]
        assert prefetcher.next_batch() == [b"00000002", b"00000003"]
        time.sleep(0.05)   # the threads have read and loaded further meanwhile
        assert len(loaded) > 2
        assert prefetcher.position == {"source": {"index": 4, "skip": 0}, "loader": 2}
    finally:
        prefetcher.stop()


def test_db_records_resume_from_a_position(tmp_path):
    path = make_db(tmp_path / "db", 5)
    records = db_records(path, "lmdb", skip=2)
    assert records.position() == {"index": 0, "skip": 2}
    assert [next(records)[0] for _ in range(3)] == [b"00000002", b"00000003", b"00000004"]
    assert records.position() == {"index": 5, "skip": 0}   # the end: the next record is the first again
    records.close()
    for position, first in (({"index": 5, "skip": 0}, b"00000000"), ({"index": 0, "skip": 2}, b"00000002"),
                            ({"index": 3, "skip": 0}, b"00000003")):
        resumed = db_records(path, "lmdb", skip=position["skip"], start=position["index"])
        assert next(resumed)[0] == first
        resumed.close()
    # rank 1 of 2 (records 1, 3) from index 2: record 3, then 1 again
    shared = db_records(path, "lmdb", rank=1, num_ranks=2, start=2)
    assert [next(shared)[0] for _ in range(3)] == [b"00000003", b"00000001", b"00000003"]
    shared.close()
