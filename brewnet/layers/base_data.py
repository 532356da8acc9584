"""Base classes of the data layers (Caffe's BaseDataLayer / BasePrefetchingDataLayer).

A data layer has no bottoms and no backward.  A prefetching one reads and transforms its batches in the
background (brewnet.data.prefetch) and Forward only copies the next ready batch into its tops.  The threads
run from setup until `close()` (alias `stop()`), which the Net calls when it is done; they are also stopped
when the layer is garbage-collected.

Exact resume (brewnet.solvers.snapshot): `state_dict()` is the position of the next batch the *net* will
consume (the source's position and the transformer's generator, as recorded with the last batch Forward took,
brewnet.data.prefetch), not that of the threads running ahead; `load_state_dict(d)` stops the threads, drops
every batch they prefetched, and starts them again from the recorded position.
"""
import weakref

import numpy as np
import torch

from ..core import common
from ..core.layer import Layer
from ..data.prefetch import Prefetcher
from ..data.transformer import DataTransformer
from ..errors import DataError
from ..proto import caffe_pb2


def read_lines(path, what):
    """The lines of a text file the layer is given (an image list, a window file ...); DataError naming it."""
    try:
        with open(path, "r", encoding="utf-8") as handle:
            return handle.read().splitlines()
    except OSError as exc:
        raise DataError(f"Failed to open {what} {path}: {exc.strerror}") from None


def solver_share(phase):
    """(rank, number of solvers) whose share of the records this process reads; TEST reads everything."""
    if phase == caffe_pb2.TEST:
        return 0, 1
    return common.solver_rank(), common.solver_count()


class BaseDataLayer(Layer):
    # Each forward hands the tops the next batch, made on the host: a replay would repeat the recorded one.
    not_recordable = "it makes each batch on the host every iteration"
    exact_num_bottom_blobs = 0
    min_top_blobs = 1

    def layer_setup(self, bottom, top):
        self.output_labels = len(top) > 1
        self.transformer = DataTransformer(self.param.transform_param, self.phase,
                                           device=top[0].device, dtype=top[0].dtype)
        self.data_layer_setup(bottom, top)

    def data_layer_setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        # Data layers shape their tops in forward, from the batch they hand out.
        pass

    def backward(self, top, propagate_down, bottom):
        pass

    def close(self):
        pass

    stop = close


def generator_state(generator):
    """A torch.Generator's state (None for no generator), safe to keep while the generator moves on."""
    return None if generator is None else generator.get_state()


def set_generator_state(generator, state):
    if generator is not None and state is not None:
        if not isinstance(state, torch.Tensor):   # from a snapshot: a NumPy array
            state = torch.from_numpy(np.array(state, dtype=np.uint8))
        generator.set_state(state.to("cpu", torch.uint8).clone())


class BasePrefetchingDataLayer(BaseDataLayer):
    """Subclasses implement `data_layer_setup` (shape the tops, set `self.batch_size`), `make_records(position)`
    (the record source, from its start when position is None, else from a source position it reported) and
    `make_loader()` (chunk of records -> tuple of tensors, run in the prefetch thread)."""
    max_top_blobs = 2
    prefetcher = None
    _finalizer = None

    def layer_setup(self, bottom, top):
        super().layer_setup(bottom, top)
        self._start(self.make_records(None))

    def make_records(self, position):
        raise NotImplementedError

    def make_loader(self):
        raise NotImplementedError

    def _start(self, records):
        self.close()
        generator = self.transformer.generator
        self.prefetcher = Prefetcher(records, self.batch_size, self.make_loader(), self.param.data_param.prefetch,
                                     name=self.name, loader_state=lambda: generator_state(generator))
        # Stop the threads if the layer is dropped without close(); the finalizer holds only the prefetcher.
        if self._finalizer is not None:
            self._finalizer.detach()
        self._finalizer = weakref.finalize(self, self.prefetcher.stop)

    def forward(self, bottom, top):
        batch = self.prefetcher.next_batch()
        for blob, values in zip(top, batch):
            blob.reshape(values.shape)
            blob.data.copy_(values)

    def state_dict(self):
        position = self.prefetcher.position
        return {"source": position["source"], "transformer_rng": position["loader"]}

    def load_state_dict(self, state):
        self.close()   # joins the threads: nothing draws from the transformer's generator any more
        set_generator_state(self.transformer.generator, state.get("transformer_rng"))
        self._start(self.make_records(state["source"]))

    def close(self):
        """Join the reader and prefetch threads (the Net calls this when it is torn down)."""
        if self.prefetcher is not None:
            self.prefetcher.stop()

    stop = close
