"""Layers that pick rows of a blob by index: BatchReindex (rows in the order of an index blob) and Filter (the
rows whose selector is non-zero).  Backward scatters the top diff back to the rows it came from.
"""
import torch

from ..core import common
from ..core.layer import Layer
from ..core.registry import register_layer
from ..errors import LayerError


def _check_indices(layer, index, limit, what):
    if index.numel() and not common.capturing():            # a recording skips the host check (capture.py)
        lo, hi = int(index.min()), int(index.max())
        if lo < 0 or hi >= limit:
            raise LayerError(f"Expect: {what} in [0, {limit}), Actual: {lo if lo < 0 else hi}",
                             layer.name, layer.type)


@register_layer("BatchReindex")
class BatchReindexLayer(Layer):
    """BatchReindex: y[n] = x[idx[n]] for the 1-D index bottom idx (values in [0, x.shape[0])).
    Backward scatters back, summing repeats: dx[j] = sum_{n: idx[n]=j} dy[n].  No gradient for idx."""
    exact_num_bottom_blobs = 2
    exact_num_top_blobs = 1

    def reshape(self, bottom, top):
        self.expect(bottom[1].num_axes == 1, f"Expect: a 1-D index bottom, Actual: shape "
                                             f"{list(bottom[1].shape)}")
        top[0].reshape((bottom[1].shape[0],) + bottom[0].shape[1:])

    def _index(self, bottom):
        index = bottom[1].data.long()
        _check_indices(self, index, bottom[0].shape[0], "reindex indices (batch size of bottom 0)")
        return index

    def forward(self, bottom, top):
        if top[0].count() == 0:
            return
        torch.index_select(bottom[0].data, 0, self._index(bottom), out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise LayerError("cannot backpropagate to the index bottom", self.name, self.type)
        if propagate_down[0]:
            dx = bottom[0].diff
            dx.zero_()
            if top[0].count():
                dx.index_add_(0, self._index(bottom), top[0].diff)


@register_layer("Filter")
class FilterLayer(Layer):
    """Filter: keeps the items n (along axis 0) whose selector (the last bottom, shape (N, 1, ...)) is nonzero,
    for each other bottom; top t = bottom t[selected].  Backward copies dy back to the selected items and
    zeros the rest.  At setup (before any data) the tops get the full batch size, as in Caffe."""
    not_recordable = "the size of its output depends on the selector's values"
    min_bottom_blobs = 2
    min_top_blobs = 1

    def layer_setup(self, bottom, top):
        self.expect(len(top) == len(bottom) - 1, f"Expect: one top per filtered bottom ({len(bottom) - 1}), "
                                                 f"Actual: {len(top)} tops")
        self.first_reshape = True

    def reshape(self, bottom, top):
        selector = bottom[-1]
        self.expect(all(s == 1 for s in selector.shape[1:]),
                    f"Expect: selector dimensions are 1 except the first, Actual: shape {list(selector.shape)}")
        for i, b in enumerate(bottom[:-1]):
            self.expect(b.shape[0] == selector.shape[0],
                        f"Expect: bottom {i} '{b.name}' has the selector's first dimension "
                        f"{selector.shape[0]}, Actual: {b.shape[0]}")
        self.indices = torch.nonzero(selector.data.reshape(-1)).reshape(-1)
        count = bottom[0].shape[0] if self.first_reshape else int(self.indices.numel())
        self.first_reshape = False
        for t, b in zip(top, bottom):
            t.reshape((count,) + b.shape[1:])

    def forward(self, bottom, top):
        for t, b in zip(top, bottom):
            torch.index_select(b.data, 0, self.indices, out=t.data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[-1]:
            raise LayerError("cannot backpropagate to the selector bottom", self.name, self.type)
        for t, b, down in zip(top, bottom, propagate_down):
            if down:
                b.diff.zero_()
                b.diff.index_copy_(0, self.indices, t.diff)
