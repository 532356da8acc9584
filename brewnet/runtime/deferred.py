"""Small updates of parameter blobs, gathered over one pass of the Net and applied together.

Every BatchNorm adds its batch statistics to its three blobs in Forward (blob <- maf * blob + value), and in
Backward the fused BatchNorm + Scale, Convolution and InnerProduct add their parameter gradients to the
diffs.  Done layer by layer each is a kernel launch on a GPU (ResNet-50: 212 of the 618 launches of a training step).  Nothing
reads those blobs during the pass (the statistics only in TEST mode, the diffs in the solver's update), so
the Net opens a `gathered()` scope around Forward and Backward and the layers hand the updates to
`scale_add` / `add_to_diffs`; the scope applies them at its end: one multi-tensor op for the scaling, one for
the additions, and nothing at all for a diff the Net cleared (Blob.accumulate_diff takes the gradient as the
diff).  The arithmetic is the layer-by-layer one: per element the same multiply and add, in the same order.
A blob that receives a second update within one scope (shared statistics or weights) first gets the pending
ones, so repeated updates stay sequential.  Outside a scope (a layer run on its own, the gradient checks)
updates happen at once, and so do gradients on the CPU (GATHER_CPU_GRADIENTS below).
"""
import threading

import torch

from ..core.blob import scale_all

_local = threading.local()

# On the CPU an op is a function call, not a kernel launch, so gathering gradients saves nothing there: a
# gradient into a cleared diff needs no op at all, and holding large ones (convolution weights) until the end
# of the pass costs their memory and cache lines (ResNet-50: +100 MiB).  The CPU adds them at once, in
# Caffe's order, and gathers only BatchNorm's running sums (one multi-tensor op beats two per layer).  Tests
# set this to exercise on the CPU the gathering accelerators do.
GATHER_CPU_GRADIENTS = False


def active():
    """The innermost open gathered scope, or None."""
    stack = getattr(_local, "stack", None)
    return stack[-1] if stack else None


def _memory(tensor):
    return tensor.untyped_storage().data_ptr()


def _blob_key(blob):
    """A parameter blob's diff memory, or the blob itself while it has none (cleared)."""
    return _memory(blob._diff) if blob._diff is not None else ("blob", id(blob))


class Gathered:
    """The updates of one scope: tensors scaled then added to (statistics), and diffs added to."""

    def __init__(self):
        self.targets, self.factors, self.values = [], [], []
        self.diff_blobs, self.diff_values = [], []
        self.keys = set()
        self.deferred = []          # callables run when the scope applies (running_sums.RunningSums.flush)

    def _claim(self, keys):
        keys = set(keys)
        if self.keys & keys:
            self.apply()                # updated twice in one pass: the pending update first, in order
        self.keys |= keys

    def scale_add(self, targets, factor, values):
        self._claim(_memory(t) for t in targets)
        self.targets += targets
        self.factors += [factor] * len(targets)
        self.values += values

    def add_to_diffs(self, blobs, values):
        self._claim(_blob_key(b) for b in blobs)
        self.diff_blobs += blobs
        self.diff_values += values

    def defer(self, apply):
        """Call `apply()` when the scope applies its updates."""
        self.deferred.append(apply)

    def holds(self, blobs):
        return bool(self.keys.intersection(_blob_key(b) for b in blobs))

    def apply(self):
        if not self.keys and not self.deferred:     # nothing gathered (a small net on the CPU: every pass)
            return
        targets, factors, values, calls = self.targets, self.factors, self.values, self.deferred
        for blob, value in zip(self.diff_blobs, self.diff_values):
            if blob._diff is None:
                blob.accumulate_diff(value)             # a cleared diff: the gradient becomes it
            else:
                targets.append(blob.diff.view(-1))
                factors.append(None)
                values.append(value.reshape(-1))
        self.__init__()
        groups = {}
        for target, factor, value in zip(targets, factors, values):
            groups.setdefault((target.device, target.dtype), []).append((target, factor, value))
        for members in groups.values():
            by_factor = {}
            for target, factor, _ in members:
                if factor is not None:
                    by_factor.setdefault(factor, []).append(target)
            for factor, scaled in by_factor.items():
                scale_all(scaled, factor)
            torch._foreach_add_([m[0] for m in members], [m[2] for m in members])
        for apply in calls:
            apply()


    # The scope itself (`with gathered() as scope`): a class rather than a generator-based context manager,
    # which costs a few microseconds per use, and the Net opens two per training step.
    def __enter__(self):
        stack = getattr(_local, "stack", None)
        if stack is None:
            stack = _local.stack = []
        stack.append(self)
        return self

    def __exit__(self, *exc_info):
        _local.stack.pop()
        self.apply()
        return False


def gathered():
    """Gather scale_add / add_to_diffs calls made inside and apply them when the scope ends (also on an
    error: the layers that ran did their updates, as they would have one by one)."""
    return Gathered()


def scale_add(targets, factor, values):
    """targets[i] <- factor * targets[i] + values[i] (scale, then add, as Caffe's axpby rounds)."""
    scope = active()
    if scope is None:
        scale_all(targets, factor)
        torch._foreach_add_(targets, values)
    else:
        scope.scale_add(list(targets), factor, list(values))


def add_to_diff(blob, value):
    """add_to_diffs for one blob (InnerProduct's weight and bias), without the lists."""
    scope = active()
    if scope is None or (value.is_cpu and not GATHER_CPU_GRADIENTS):
        blob.accumulate_diff(value)
    else:
        scope.add_to_diffs([blob], [value])


def add_to_diffs(blobs, values):
    """blob.diff += value for parameter blobs (Blob.accumulate_diff: a cleared diff takes the value itself,
    so the values must be fresh tensors the caller drops, such as a kernel's outputs)."""
    scope = active()
    if scope is not None and values and values[0].is_cpu and not GATHER_CPU_GRADIENTS:
        scope = None
    if scope is None:
        for blob, value in zip(blobs, values):
            blob.accumulate_diff(value)
    else:
        scope.add_to_diffs(list(blobs), list(values))
