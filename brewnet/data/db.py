"""Databases of Datum records: LMDB and LevelDB, with Caffe's db.hpp interface (book 5.7).

    db = open_db("mnist_train_lmdb", "lmdb", "r")      # or "w" (new), backend "leveldb"
    cursor = db.cursor()                               # seek_to_first / next / valid / key / value
    txn = db.transaction(); txn.put(key, value); txn.commit()
    db.close()

Keys follow Caffe's tools: `format_key(i)` is "%08d" (convert_mnist_data; extract_features uses "%010d") and
`format_key(i, name)` "%08d_name" (convert_imageset); records sort by key, so reading order is writing order.

LMDB is opened read-only without the lock file (`lock=False`) for reading, as Caffe's MDB_RDONLY|MDB_NOTLS
reader effectively does, so a database on a read-only medium works and no reader slot is held.  LevelDB always
wants to write its LOCK file: a database in a read-only folder is copied to a temporary folder (removed again
on close).
"""
import os
import shutil
import tempfile
import threading

from ..errors import DataError

READ, WRITE, NEW = "r", "w", "n"


def format_key(index, name=None):
    """Caffe's key: the record index as 8 digits, then "_name" for convert_imageset."""
    return f"{index:08d}" if name is None else f"{index:08d}_{name}"


def backend_name(backend):
    """'lmdb' / 'leveldb' from a string or DataParameter.DB enum value (LEVELDB = 0, LMDB = 1)."""
    if isinstance(backend, int):
        return {0: "leveldb", 1: "lmdb"}.get(backend, str(backend))
    return str(backend).lower()


def open_db(path, backend="lmdb", mode=READ):
    backend = backend_name(backend)
    if backend == "lmdb":
        return LMDB(path, mode)
    if backend == "leveldb":
        return LevelDB(path, mode)
    raise DataError(f"unknown database backend '{backend}' (Expect: lmdb or leveldb)")


def _check_mode(path, mode):
    path = os.fspath(path)
    if mode == READ and not os.path.isdir(path):
        raise DataError(f"database '{path}' does not exist (Expect: a directory written by convert_imageset, "
                        f"convert_mnist_data or brewnet's db.open_db)")
    if mode == NEW and os.path.exists(path):
        raise DataError(f"database '{path}' already exists; remove it first")
    if mode not in (READ, WRITE, NEW):
        raise DataError(f"database mode Expect: 'r', 'w' or 'n', Actual: {mode!r}")
    return path


def _bytes(value):
    return value.encode() if isinstance(value, str) else bytes(value)


class Database:
    """What both backends offer; keys and values are bytes (str keys are encoded)."""

    def cursor(self):
        raise NotImplementedError

    def transaction(self):
        return Transaction(self)

    def __len__(self):
        raise NotImplementedError

    def __iter__(self):
        """(key, value) pairs in key order."""
        cursor = self.cursor()
        try:
            while cursor.valid():
                yield cursor.key(), cursor.value()
                cursor.next()
        finally:
            cursor.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Transaction:
    """Buffered puts, written in one go by commit() (Caffe's Transaction)."""

    def __init__(self, db):
        self.db, self.items = db, []

    def put(self, key, value):
        self.items.append((_bytes(key), _bytes(value)))

    def commit(self):
        self.db._write(self.items)
        self.items = []


class Cursor:
    """Caffe's Cursor: seek_to_first(), next(), valid(), key(), value() over an ordered iterator."""

    def __init__(self, iterate, close=lambda: None):
        self._iterate, self._close = iterate, close
        self.seek_to_first()

    def seek_to_first(self):
        self._it = self._iterate()
        self.next()

    def next(self):
        self._item = next(self._it, None)

    def valid(self):
        return self._item is not None

    def key(self):
        return self._item[0]

    def value(self):
        return self._item[1]

    def close(self):
        self._it = self._item = None
        self._close()


# py-lmdb allows one Environment per database file and process: readers of one database (a TRAIN and a TEST
# net, two solver shares, the layer's setup peek) share it, counted, and the last close() closes it.
_lmdb_envs = {}
_lmdb_lock = threading.Lock()


# LMDB's two meta pages (pages 0 and 1) each hold, after a 16-byte page header: magic, version, the map's
# address and size, the free and main databases' records (the first record's leading field is the page size),
# the last page in use and the transaction id.  Offsets for 64-bit builds, little-endian (every LMDB that
# Caffe's tools write on x86-64 and ARM64).
_META_MAGIC = 0xBEEFC0DE
_META_PAGE_SIZE_AT, _META_LAST_PAGE_AT, _META_TXNID_AT = 40, 136, 144


def lmdb_needed_size(data_file):
    """The bytes `data_file` (an LMDB data.mdb) must hold for the pages its newest meta page says are in use,
    and the page size; None when the meta pages are not LMDB's (lmdb.open then names the problem)."""
    import struct
    with open(data_file, "rb") as handle:
        first = handle.read(_META_TXNID_AT + 8)
        if len(first) < _META_TXNID_AT + 8 or struct.unpack_from("<I", first, 16)[0] != _META_MAGIC:
            return None
        page_size = struct.unpack_from("<I", first, _META_PAGE_SIZE_AT)[0]
        if page_size < 512 or page_size & (page_size - 1):
            return None
        handle.seek(page_size)
        second = handle.read(_META_TXNID_AT + 8)
    metas = [first]
    if len(second) == len(first) and struct.unpack_from("<I", second, 16)[0] == _META_MAGIC:
        metas.append(second)
    newest = max(metas, key=lambda m: struct.unpack_from("<Q", m, _META_TXNID_AT)[0])
    last_page = struct.unpack_from("<Q", newest, _META_LAST_PAGE_AT)[0]
    return (last_page + 1) * page_size, page_size


def check_lmdb_file(path):
    """Refuse a truncated LMDB before mapping it: reading a page past the end of a mapped file kills the
    process with SIGBUS (no message, exit status 135), so the file must hold every page the meta page lists."""
    data_file = os.path.join(path, "data.mdb")
    try:
        actual = os.path.getsize(data_file)
        needed = lmdb_needed_size(data_file)
    except OSError as exc:
        raise DataError(f"cannot open LMDB '{path}': {data_file}: {exc.strerror}") from None
    if needed is not None and actual < needed[0]:
        raise DataError(f"LMDB '{path}' is truncated: {data_file} has {actual} bytes but its meta page lists "
                        f"{needed[0] // needed[1]} pages of {needed[1]} bytes ({needed[0]} bytes); the copy "
                        "is incomplete or the disk was full when it was written")


def _open_shared_lmdb(path):
    import lmdb
    real = os.path.realpath(path)
    with _lmdb_lock:
        entry = _lmdb_envs.get(real)
        if entry is None:
            check_lmdb_file(path)
            env = lmdb.open(path, readonly=True, lock=False, readahead=False, max_readers=512, subdir=True)
            entry = _lmdb_envs[real] = [env, 0]
        entry[1] += 1
        return entry[0]


def _release_shared_lmdb(env):
    with _lmdb_lock:
        for real, entry in list(_lmdb_envs.items()):
            if entry[0] is env:
                entry[1] -= 1
                if entry[1] == 0:
                    del _lmdb_envs[real]
                    env.close()
                return


class LMDB(Database):
    backend = "lmdb"

    def __init__(self, path, mode=READ):
        import lmdb
        self.path, self.mode = _check_mode(path, mode), mode
        try:
            if mode == READ:
                self.env = _open_shared_lmdb(self.path)
            else:
                if mode == NEW:
                    os.makedirs(self.path)
                elif os.path.exists(os.path.join(self.path, "data.mdb")):
                    check_lmdb_file(self.path)      # appending maps the file too
                # The map grows on demand (see _write), as Caffe 1.0's LMDB does.
                self.env = lmdb.open(self.path, map_size=1 << 26, subdir=True)
        except lmdb.Error as exc:
            raise DataError(f"cannot open LMDB '{self.path}': {exc}") from None

    def cursor(self):
        import lmdb
        try:
            txn = self.env.begin(buffers=False)
            raw = txn.cursor()
        except lmdb.Error as exc:
            raise self._corrupt(exc) from None

        def iterate():
            # LMDB reports a damaged page (MDB_CORRUPTED, MDB_PAGE_NOTFOUND, ...) when the cursor steps onto
            # it: name the database and the last key read intact, so the user knows where the damage is.
            count, last = 0, None
            try:
                if not raw.first():
                    return
                for item in raw.iternext(keys=True, values=True):
                    yield item
                    count, last = count + 1, item[0]
            except lmdb.Error as exc:
                where = ("its first record" if last is None else
                         f"record #{count} (the one after key '{last.decode('utf-8', 'replace')}')")
                raise self._corrupt(exc, f" while reading {where}") from None

        def close():
            raw.close()
            txn.abort()  # a read transaction ends by abort: releases its snapshot
        return Cursor(iterate, close)

    def _corrupt(self, exc, where=""):
        return DataError(f"LMDB '{self.path}' is corrupt or unreadable{where}: {exc}")

    def get(self, key):
        import lmdb
        try:
            with self.env.begin() as txn:
                return txn.get(_bytes(key))
        except lmdb.Error as exc:
            raise self._corrupt(exc, f" while reading key '{key}'") from None

    def __len__(self):
        import lmdb
        try:
            return self.env.stat()["entries"]
        except lmdb.Error as exc:
            raise self._corrupt(exc) from None

    def _write(self, items):
        import lmdb
        if self.mode == READ:
            raise DataError(f"LMDB '{self.path}' was opened read-only")
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    for key, value in items:
                        txn.put(key, value)
                return
            except lmdb.MapFullError:
                self.env.set_mapsize(self.env.info()["map_size"] * 2)

    def close(self):
        if self.env is not None:
            if self.mode == READ:
                _release_shared_lmdb(self.env)
            else:
                self.env.close()
            self.env = None


class LevelDB(Database):
    backend = "leveldb"

    def __init__(self, path, mode=READ):
        import plyvel
        self.path, self.mode = _check_mode(path, mode), mode
        self._copy = None
        where = self.path
        if mode == READ and not os.access(self.path, os.W_OK):
            # LevelDB must create its LOCK file: read a private copy of a read-only database.
            self._copy = tempfile.mkdtemp(prefix="brewnet_leveldb_")
            where = os.path.join(self._copy, "db")
            shutil.copytree(self.path, where)
            for root, dirs, files in os.walk(where):
                os.chmod(root, 0o755)
                for name in files:
                    os.chmod(os.path.join(root, name), 0o644)
        try:
            self.db = plyvel.DB(where, create_if_missing=mode != READ, error_if_exists=mode == NEW,
                                block_size=65536, write_buffer_size=268435456, max_open_files=100)
        except plyvel.Error as exc:
            self._remove_copy()
            raise DataError(f"cannot open LevelDB '{self.path}': {exc}") from None

    def cursor(self):
        snapshot = self.db.snapshot()
        holder = {}

        def iterate():
            holder["it"] = snapshot.iterator()
            return holder["it"]

        def close():
            if "it" in holder:
                holder["it"].close()
            snapshot.close()
        return Cursor(iterate, close)

    def get(self, key):
        return self.db.get(_bytes(key))

    def __len__(self):
        return sum(1 for _ in self.db.iterator(include_value=False))

    def _write(self, items):
        if self.mode == READ:
            raise DataError(f"LevelDB '{self.path}' was opened read-only")
        with self.db.write_batch() as batch:
            for key, value in items:
                batch.put(key, value)

    def _remove_copy(self):
        if self._copy is not None:
            shutil.rmtree(self._copy, ignore_errors=True)
            self._copy = None

    def close(self):
        if getattr(self, "db", None) is not None:
            self.db.close()
            self.db = None
        self._remove_copy()
