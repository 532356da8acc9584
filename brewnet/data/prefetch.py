"""Prefetching: a reader thread and a prefetch thread feed ready batches to a data layer (book 5.7-5.8).

    reader thread     pulls records from the source (database cursor, image list ...), groups them into
                      chunks of batch_size, puts the chunks in a bounded queue
    prefetch thread   turns a chunk into a batch (parse, decode, transform) and puts it in a second
                      bounded queue
    the layer         Forward takes the next full batch: next_batch()

Both queues hold at most `prefetch` items (DataParameter.prefetch, Caffe's PREFETCH_COUNT), so at most that
many batches are read ahead.  A consumer only ever sees whole batches.  `stop()` wakes every blocked thread,
joins them, and closes the source (which ends the database transaction): no thread or reader outlives it.
An exception in a thread is re-raised in the consumer at the next `next_batch()`.

Several solver processes training in parallel each read their own share of a database: rank r of n keeps
record i (its position in key order) when i % n == r, so the shares are disjoint and their union is the whole
database (Caffe's DataReader / DataLayer::Skip).  Within a rank the share repeats in the same order every epoch.

Positions (exact resume).  The threads run ahead of the net, so "where the source is" is not "where the net
is".  A source may offer `position()` (called in the reader thread right after each chunk) and the layer a
`loader_state()` (called in the prefetch thread right after each batch, e.g. the transformer's generator);
both values travel down the queues with their batch, and `Prefetcher.position` is always the pair recorded
with the last batch the consumer took (or the starting pair): a new source and loader started from it produce
exactly the batches the consumer has not seen yet.
"""
import collections
import logging
import threading

import numpy as np

from ..errors import DataError
from ..log import logger
from . import db as db_mod


class Stopped(Exception):
    """Raised inside a blocked put/get once the queue is stopped."""


class BlockingQueue:
    """A bounded FIFO whose blocked put/get wake up when stop() is called (Caffe's BlockingQueue)."""

    def __init__(self, maxsize):
        self.maxsize = max(1, int(maxsize))
        self._items = collections.deque()
        self._cond = threading.Condition()
        self._stopped = False

    def put(self, item):
        with self._cond:
            while len(self._items) >= self.maxsize and not self._stopped:
                self._cond.wait()
            if self._stopped:
                raise Stopped()
            self._items.append(item)
            self._cond.notify_all()

    def get(self):
        with self._cond:
            while not self._items and not self._stopped:
                self._cond.wait()
            if self._stopped:
                raise Stopped()
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def stop(self):
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def __len__(self):
        with self._cond:
            return len(self._items)


class _Failure:
    """An exception travelling down the pipeline to the consumer."""

    def __init__(self, error):
        self.error = error


class Prefetcher:
    """Runs `records` (an iterable) through `load_batch(chunk)` in two threads, batch_size records a chunk.

    `position` = {"source": records.position(), "loader": loader_state()} as they stood right after the last
    batch next_batch() returned (None for a part that is not provided)."""

    def __init__(self, records, batch_size, load_batch, prefetch=4, name="data", loader_state=None):
        if batch_size <= 0:
            raise DataError(f"{name}: Expect: batch_size > 0, Actual: {batch_size}")
        self.records, self.batch_size, self.load_batch, self.name = records, int(batch_size), load_batch, name
        self._source_state = getattr(records, "position", None) or (lambda: None)
        self._loader_state = loader_state or (lambda: None)
        self.position = {"source": self._source_state(), "loader": self._loader_state()}
        self.chunks = BlockingQueue(prefetch)
        self.full = BlockingQueue(prefetch)
        self.threads = [threading.Thread(target=self._read, name=f"{name}-reader", daemon=True),
                        threading.Thread(target=self._prefetch, name=f"{name}-prefetch", daemon=True)]
        self._stopped, self._failure = False, None
        for thread in self.threads:
            thread.start()

    def _read(self):
        try:
            chunk = []
            for record in self.records:
                chunk.append(record)
                if len(chunk) == self.batch_size:
                    self.chunks.put((chunk, self._source_state()))
                    chunk = []
        except Stopped:
            pass
        except Exception as exc:  # handed to the consumer, not lost in a thread
            self._forward_failure(self.chunks, exc)
        finally:
            close = getattr(self.records, "close", None)
            if close is not None:
                close()

    def _prefetch(self):
        try:
            while True:
                item = self.chunks.get()
                if isinstance(item, _Failure):
                    self.full.put(item)
                    return
                chunk, source = item
                batch = self.load_batch(chunk)
                self.full.put((batch, {"source": source, "loader": self._loader_state()}))
        except Stopped:
            pass
        except Exception as exc:
            self._forward_failure(self.full, exc)

    @staticmethod
    def _forward_failure(queue, exc):
        try:
            queue.put(_Failure(exc))
        except Stopped:
            pass

    def next_batch(self):
        """The next full batch; blocks until the prefetch thread has one."""
        if self._stopped:
            raise DataError(f"{self.name}: the prefetcher has been stopped")
        if self._failure is not None:      # the threads have ended: asking again must not wait forever
            raise self._failure.error
        item = self.full.get()
        if isinstance(item, _Failure):
            self._failure = item
            raise item.error
        batch, self.position = item
        return batch

    def stop(self):
        """Wake and join both threads; the source's close() runs in the reader thread on its way out."""
        if self._stopped:
            return
        self._stopped = True
        self.chunks.stop()
        self.full.stop()
        for thread in self.threads:
            if thread is not threading.current_thread():
                thread.join()

    close = stop

    def alive(self):
        return any(thread.is_alive() for thread in self.threads)


class DBRecords:
    """Endless (key, value) records of a database, this rank's share, from the first record again at the end.

    `skip` records of the share are passed over once at the start (DataParameter.rand_skip).  `position()` is
    {"index": key-order index of the next record to consider, "skip": share records still to pass over};
    DBRecords(..., start=index, skip=skip) goes on from there.  The database opens at the first record asked.
    """

    def __init__(self, source, backend, rank=0, num_ranks=1, skip=0, name="data", start=0):
        if not 0 <= rank < num_ranks:
            raise DataError(f"{name}: Expect: 0 <= rank < {num_ranks}, Actual: rank {rank}")
        self.source, self.backend, self.rank, self.num_ranks, self.name = source, backend, rank, num_ranks, name
        self.index, self.skip = int(start), int(skip)
        self._records = self._generate()

    def position(self):
        return {"index": self.index, "skip": self.skip}

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._records)

    def close(self):
        self._records.close()

    _restarts = 0

    def _log_restart(self):
        """Caffe logs every wrap of the cursor; a small database read for many epochs would fill the log
        with it, so only a reader's first wrap is INFO, the later ones DEBUG (glog's VLOG: hidden by default)."""
        self._restarts += 1
        level = logging.INFO if self._restarts == 1 else logging.DEBUG
        logger.log(level, "Restarting data prefetching from start.")

    def _generate(self):
        database = db_mod.open_db(self.source, self.backend, db_mod.READ)
        cursor = None
        try:
            start = self.index   # a resumed first pass begins part-way through
            while True:
                cursor = database.cursor()
                if not cursor.valid():
                    raise DataError(f"{self.name}: database '{self.source}' is empty")
                index, kept = 0, 0
                while cursor.valid():
                    if index >= start and index % self.num_ranks == self.rank:
                        kept += 1
                        if self.skip > 0:
                            self.skip -= 1
                        else:
                            self.index = index + 1
                            yield cursor.key(), cursor.value()
                    index += 1
                    cursor.next()
                cursor.close()
                cursor = None
                if kept == 0 and start == 0:
                    raise DataError(f"{self.name}: database '{self.source}' has {index} records, none for rank "
                                    f"{self.rank} of {self.num_ranks}")
                start = 0
                self._log_restart()
        finally:
            if cursor is not None:
                cursor.close()
            database.close()


db_records = DBRecords


def random_state(rng):
    """A random.Random's state as JSON values and an array (the snapshot side file's protocol; no pickle)."""
    version, internal, gauss_next = rng.getstate()
    return {"version": version, "internal": np.asarray(internal, dtype=np.uint64), "gauss_next": gauss_next}


def set_random_state(rng, state):
    rng.setstate((int(state["version"]), tuple(int(x) for x in np.asarray(state["internal"])),
                  state["gauss_next"]))
