"""Base classes of the data layers (Caffe's BaseDataLayer / BasePrefetchingDataLayer).

A data layer has no bottoms and no backward.  A prefetching one reads and transforms its batches in the
background (brewnet.data.prefetch) and Forward only copies the next ready batch into its tops.  The threads
run from setup until `close()` (alias `stop()`), which the Net calls when it is done; they are also stopped
when the layer is garbage-collected.
"""
import weakref

from ..core import common
from ..core.layer import Layer
from ..data.transformer import DataTransformer
from ..proto import caffe_pb2


def solver_share(phase):
    """(rank, number of solvers) whose share of the records this process reads; TEST reads everything."""
    if phase == caffe_pb2.TEST:
        return 0, 1
    return common.solver_rank(), common.solver_count()


class BaseDataLayer(Layer):
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


class BasePrefetchingDataLayer(BaseDataLayer):
    """Subclasses implement `data_layer_setup` (shape the tops) and `make_prefetcher()` -> Prefetcher."""
    max_top_blobs = 2
    prefetcher = None

    def layer_setup(self, bottom, top):
        super().layer_setup(bottom, top)
        self.close()
        self.prefetcher = self.make_prefetcher()
        # Stop the threads if the layer is dropped without close(); the finalizer holds only the prefetcher.
        self._finalizer = weakref.finalize(self, self.prefetcher.stop)

    def make_prefetcher(self):
        raise NotImplementedError

    def forward(self, bottom, top):
        batch = self.prefetcher.next_batch()
        for blob, values in zip(top, batch):
            blob.reshape(values.shape)
            blob.data.copy_(values)

    def close(self):
        """Join the reader and prefetch threads (the Net calls this when it is torn down)."""
        if self.prefetcher is not None:
            self.prefetcher.stop()

    stop = close
