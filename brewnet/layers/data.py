"""Data: batches of Datum records from an LMDB or LevelDB database (book 5.7).

    data_param { source: "examples/mnist/mnist_train_lmdb" backend: LMDB batch_size: 64 prefetch: 4 }
    transform_param { scale: 0.00390625 }          # see brewnet.data.transformer

top[0] = batch_size transformed images (N x C x h x w), top[1] (optional) = their labels.  Records are read
in key order and start again from the first at the end of the database; with `rand_skip: k` the first
random(0..k-1) records are skipped once.  In TRAIN phase with several solvers, each reads its own share of
the records (brewnet.data.prefetch).  The shape of each batch is that of its first record, so encoded images
of varying size work as long as the records of one batch agree (or are cropped to one size).
Its exact-resume position: the key-order index of the next record the net will see, and the crop/mirror
generator (brewnet.layers.base_data).
"""
import functools
import random

import torch

from ..core.registry import register_layer
from ..data import db as db_mod
from ..data.datum import parse_datum
from ..data.prefetch import DBRecords
from ..errors import DataError, LayerError
from ..log import logger
from .base_data import BasePrefetchingDataLayer, solver_share


def _key_text(key):
    return key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)


def load_datum_batch(transformer, output_labels, chunk, record_shape=None, source=None):
    """(key, value) records -> (data, label) tensors; runs in the prefetch thread.  `record_shape`: that of
    the database's first record, which a record of another shape is told apart from; `source` names the
    database in errors."""
    keys = [_key_text(k) for k, _ in chunk]
    try:
        datums = [parse_datum(value, key) for key, (_, value) in zip(keys, chunk)]
        data = transformer.transform_datums(datums, keys, record_shape)
    except DataError as exc:
        if source is None:
            raise
        raise DataError(f"database '{source}': {exc}") from None
    if not output_labels:
        return (data,)
    labels = torch.tensor([d.label for d in datums], dtype=transformer.dtype, device=transformer.device)
    return data, labels


@register_layer("Data")
class DataLayer(BasePrefetchingDataLayer):
    def data_layer_setup(self, bottom, top):
        param = self.param.data_param
        self.expect(param.batch_size > 0, f"Expect: data_param.batch_size > 0, Actual: {param.batch_size}")
        self.backend = db_mod.backend_name(param.backend)
        try:
            with db_mod.open_db(param.source, self.backend, db_mod.READ) as database:
                cursor = database.cursor()
                if not cursor.valid():
                    raise DataError(f"database '{param.source}' is empty")
                key, value = _key_text(cursor.key()), cursor.value()
                cursor.close()
            first = parse_datum(value, key)
            shape = self.transformer.infer_shape(first)
            self.record_shape = None if first.encoded else (first.channels, first.height, first.width)
        except DataError as exc:
            raise LayerError(str(exc), self.name, self.type) from None
        logger.info("Opened %s %s", self.backend, param.source)
        self.batch_size = param.batch_size
        top[0].reshape((param.batch_size,) + tuple(shape))
        logger.info("output data size: %s", ",".join(str(s) for s in top[0].shape))
        if self.output_labels:
            top[1].reshape((param.batch_size,))

    def make_records(self, position):
        param = self.param.data_param
        rank, count = solver_share(self.phase)
        if position is not None:
            return DBRecords(param.source, self.backend, rank, count, position["skip"], self.name,
                             start=position["index"])
        skip = random.randrange(param.rand_skip) if param.rand_skip else 0
        if skip:
            logger.info("Skipping first %d data points.", skip)
        return DBRecords(param.source, self.backend, rank, count, skip, name=self.name)

    def make_loader(self):
        return functools.partial(load_datum_batch, self.transformer, self.output_labels,
                                 record_shape=getattr(self, "record_shape", None),
                                 source=self.param.data_param.source)
