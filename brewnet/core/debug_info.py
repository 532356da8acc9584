"""debug_info (book 5.1.4): the per-layer lines Caffe logs when a solver or net sets `debug_info: true`.

    [Forward] Layer conv1, top blob conv1 data: 0.123      mean |value| of each top and parameter
    [Backward] Layer conv1, bottom blob data diff: ...     mean |diff| of each bottom and parameter
    [Backward] All net params (data, diff): L1 norm = (...); L2 norm = (...)

The Net mixes these in; the message texts are Caffe's, so Caffe's log tools read them.
"""
import math

from ..log import get_logger

log = get_logger("net")


def fmt(x):
    """Print a number the way C++ iostreams do by default (6 significant digits, no trailing zeros)."""
    return "%g" % x


class NetDebugInfo:
    """Net's debug_info logging (uses the Net's layers, blob ids and parameter tables)."""

    def _forward_debug_info(self, layer_id):
        layer = self.layers[layer_id]
        for blob_id, blob in zip(self.top_ids[layer_id], self.top_vecs[layer_id]):
            log.info("    [Forward] Layer %s, top blob %s data: %s", layer.name, self.blob_names[blob_id],
                     fmt(blob.asum_data() / max(blob.count(), 1)))
        for param_id, blob in enumerate(layer.blobs):
            name = self.param_display_names[self.param_id_vecs[layer_id][param_id]]
            log.info("    [Forward] Layer %s, param blob %s data: %s", layer.name, name,
                     fmt(blob.asum_data() / max(blob.count(), 1)))

    def _backward_debug_info(self, layer_id):
        layer = self.layers[layer_id]
        for bottom_id, blob in enumerate(self.bottom_vecs[layer_id]):
            if not self.bottom_need_backward[layer_id][bottom_id]:
                continue
            log.info("    [Backward] Layer %s, bottom blob %s diff: %s", layer.name,
                     self.blob_names[self.bottom_ids[layer_id][bottom_id]],
                     fmt(blob.asum_diff() / max(blob.count(), 1)))
        for param_id, blob in enumerate(layer.blobs):
            if layer.param_propagate(param_id):
                log.info("    [Backward] Layer %s, param blob %d diff: %s", layer.name, param_id,
                         fmt(blob.asum_diff() / max(blob.count(), 1)))

    def _param_norms_debug_info(self):
        asum_data = sum(b.asum_data() for b in self.learnable_params)
        asum_diff = sum(b.asum_diff() for b in self.learnable_params)
        l2_data = math.sqrt(sum(b.sumsq_data() for b in self.learnable_params))
        l2_diff = math.sqrt(sum(b.sumsq_diff() for b in self.learnable_params))
        log.error("    [Backward] All net params (data, diff): L1 norm = (%s, %s); L2 norm = (%s, %s)",
                  fmt(asum_data), fmt(asum_diff), fmt(l2_data), fmt(l2_diff))
