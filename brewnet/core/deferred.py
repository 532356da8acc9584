"""Small element-wise updates of parameter blobs, gathered over one pass of the Net and applied together.

Every BatchNorm adds its batch statistics to its three blobs in Forward (blob <- maf * blob + value), the
fused BatchNorm + Scale adds d(gamma) and d(beta) to Scale's parameter diffs in Backward, and Convolution
its weight and bias gradients.  Done layer by layer that is a kernel launch each on a GPU (ResNet-50: 212 of
the 618 launches of a training step; 2 + 3 gathered).  Nothing reads those blobs during the pass (the statistics only in
TEST mode, the diffs only in the solver's update), so the Net opens a `gathered()` scope around Forward and
Backward and the layers hand the updates to `scale_add` / `add`; the scope applies them at its end in two
multi-tensor ops.  The arithmetic is the layer-by-layer one: per element the same multiply and add in the
same order.  A blob that receives a second update within one scope (shared statistics or parameters) first
gets the pending ones, so repeated updates stay sequential.  Outside a scope (a layer run on its own, the
gradient checks) the updates happen at once.
"""
import contextlib
import threading

import torch

_local = threading.local()


def _active():
    stack = getattr(_local, "stack", None)
    return stack[-1] if stack else None


class Gathered:
    """The updates of one scope: `factors[i]` (or None) scales targets[i] before values[i] is added."""

    def __init__(self):
        self.targets, self.factors, self.values, self.storages = [], [], [], set()

    def put(self, targets, factor, values):
        self.apply_for(targets)         # a blob updated twice in one pass: keep the two updates in order
        self.storages.update(t.untyped_storage().data_ptr() for t in targets)
        self.targets += targets
        self.factors += [factor] * len(targets)
        self.values += values

    def apply_for(self, targets):
        """Apply what is pending if any of `targets` is among it."""
        if self.storages.intersection(t.untyped_storage().data_ptr() for t in targets):
            self.apply()

    def apply(self):
        if not self.targets:
            return
        groups = {}
        for target, factor, value in zip(self.targets, self.factors, self.values):
            groups.setdefault((target.device, target.dtype), []).append((target, factor, value))
        for members in groups.values():
            by_factor = {}
            for target, factor, _ in members:
                if factor is not None:
                    by_factor.setdefault(factor, []).append(target)
            for factor, targets in by_factor.items():
                torch._foreach_mul_(targets, factor)
            torch._foreach_add_([m[0] for m in members], [m[2] for m in members])
        self.__init__()


@contextlib.contextmanager
def gathered():
    """Gather scale_add / add calls made inside and apply them when the scope ends (also on an error: the
    layers that ran did their updates, as they would have one by one)."""
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    scope = Gathered()
    stack.append(scope)
    try:
        yield scope
    finally:
        stack.pop()
        scope.apply()


def scale_add(targets, factor, values):
    """targets[i] <- factor * targets[i] + values[i] (scale, then add, as Caffe's axpby rounds)."""
    scope = _active()
    if scope is None:
        torch._foreach_mul_(targets, factor)
        torch._foreach_add_(targets, values)
    else:
        scope.put(list(targets), factor, list(values))


# On the CPU an op is a function call, not a kernel launch: gathering saves little there, and holding large
# gradients (convolution weights) until the end of the pass costs their memory and their cache lines
# (ResNet-50: +100 MiB).  Smaller ones are gathered on every device alike.
CPU_HOLD_LIMIT = 1 << 16


def add(targets, values):
    """targets[i] += values[i]."""
    scope = _active()
    if scope is not None and values and values[0].device.type == "cpu" \
            and sum(v.numel() for v in values) > CPU_HOLD_LIMIT:
        scope.apply_for(targets)            # what is pending for these targets comes first
        scope = None
    if scope is None:
        torch._foreach_add_(targets, values)
    else:
        scope.put(list(targets), None, list(values))
