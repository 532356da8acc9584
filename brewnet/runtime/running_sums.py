"""The running statistics of a Net's BatchNorm layers in one tensor, updated in two ops per pass.

Every BatchNorm in TRAIN adds its batch statistics to its three blobs in each Forward,

    blob <- maf * blob + value      for (sum of means, sum of variances, scale factor) and (mean, var, 1),

and runtime/deferred.py gathers those updates over a pass.  Over ResNet-50's 53 BatchNorms that is still 159
small tensors a pass: two multi-tensor ops whose lists the host builds layer by layer, and on the CPU a
multi-tensor op is a loop over its tensors (for the thin ResNet-50, as long as its 53 batch-norm kernels).  So the Net lays the three blobs of its BatchNorms out in one tensor, `sums` (each
blob's data is a view of its part: pycaffe arrays, snapshots and test nets sharing the blobs see the same
memory), and the statistics the batch-norm kernels write in a second one of the same layout, `batch` (a
layer's `_stats_buffers` are views of its part; the scale factor's slots hold 1).  A pass then ends with

    sums.mul_(maf); sums.add_(batch)

the same multiply, then add, per element as layer by layer (Caffe's axpby).  A pass that ran only some of
the layers (Net.forward(start, end)) updates their parts alone.

Members are the layers whose statistics nothing else updates: those that keep running statistics
(Layer.keeps_running_statistics(): TRAIN-mode BatchNorms, use_global_stats off) with blobs of their own
(not shared by `param { name }`), of one moving_average_fraction, dtype and device per group.  A member
whose blob was given other memory since (`blob.data = ...`, Blob.from_proto) or whose kernels need other
buffers (another dtype) is no longer packed: it updates its own blobs as before.
"""
import torch

from . import deferred
from ..core.blob import scale_all


class RunningSums:
    """One group of BatchNorm layers (one maf, dtype and device) whose statistics live in `sums`."""

    def __init__(self, layers):
        self.layers = list(layers)
        first = self.layers[0].blobs[0].data
        self.maf = self.layers[0].moving_average_fraction
        self.slices = {}            # layer -> its part of sums / batch
        size = 0
        for layer in self.layers:
            count = sum(b.count() for b in layer.blobs)
            self.slices[layer] = slice(size, size + count)
            size += count
        self.sums = torch.empty(size, dtype=first.dtype, device=first.device)
        self.batch = torch.zeros(size, dtype=first.dtype, device=first.device)
        self.views = {}             # layer -> (the three blob views, the three batch buffers)
        for layer in self.layers:
            self.views[layer] = self._adopt(layer)
        self.pending = []           # members that added statistics in the open gathered scope

    def _adopt(self, layer):
        """Move the layer's blobs into sums (values kept) and point its batch buffers at batch."""
        start = self.slices[layer].start
        blob_views, buffers = [], []
        for blob in layer.blobs:
            count = blob.count()
            part = self.sums[start:start + count]
            part.copy_(blob.data.reshape(-1))
            blob.data = part.view(blob.shape)
            blob_views.append(blob.data)
            buffers.append(self.batch[start:start + count])
            start += count
        buffers[2].fill_(1.0)       # the scale factor grows by 1 a pass
        layer._stats_buffers = tuple(buffers)
        return tuple(blob_views), layer._stats_buffers

    def packed(self, layer):
        """Whether the layer's blobs and batch buffers are still the views of sums and batch."""
        views = self.views.get(layer)
        if views is None:
            return False
        blob_views, buffers = views
        return (layer._stats_buffers is buffers
                and all(blob._data is view for blob, view in zip(layer.blobs, blob_views)))

    def add(self, layer):
        """The layer's batch statistics (in its buffers) go into its blobs: at the end of the open gathered
        scope, together with the other members', or at once outside a scope.  False when the layer is not
        packed (the caller updates its blobs itself)."""
        if not self.packed(layer):
            return False
        scope = deferred.active()
        if scope is None:
            self._update([layer])
            return True
        if layer in self.pending:       # twice in one scope: the earlier statistics first, in order
            self.flush()
        if not self.pending:
            scope.defer(self.flush)
        self.pending.append(layer)
        return True

    def flush(self):
        pending, self.pending = self.pending, []
        if pending:
            self._update(pending)

    def _update(self, layers):
        if len(layers) == len(self.layers):
            self.sums.mul_(self.maf)
            self.sums.add_(self.batch)
            return
        sums = [self.sums[self.slices[layer]] for layer in layers]
        scale_all(sums, self.maf)
        torch._foreach_add_(sums, [self.batch[self.slices[layer]] for layer in layers])


def pack(net):
    """Give the net's layers that keep running statistics (BatchNorm in TRAIN: keeps_running_statistics())
    packed running sums (see the module doc); each member's `running_sums` is its group."""
    shared = set()          # blobs of parameters shared by name: owners and sharers
    for i, owner in enumerate(net.param_owners):
        if owner >= 0:
            shared |= {id(net.params[i]), id(net.params[owner])}
    groups = {}
    for layer in net.layers:
        if not layer.keeps_running_statistics():
            continue
        if any(id(blob) in shared for blob in layer.blobs):
            continue
        data = layer.blobs[0].data
        groups.setdefault((layer.moving_average_fraction, data.dtype, data.device), []).append(layer)
    packed = []
    for layers in groups.values():
        if len(layers) < 2:         # one layer: its own three blobs are as good
            continue
        group = RunningSums(layers)
        for layer in layers:
            layer.running_sums = group
        packed.append(group)
    return packed
