"""The runtime's side of one Net: the four hooks core/net.py calls, and the speed switches of a net.

Net (book 5.5) runs its layers; what brewnet adds for speed is here, reached only through

    pass_scope()                 the scope of a forward or a backward pass: autograd off; the layers' small blob
                                 updates (BatchNorm statistics, gradients) gathered and applied together at its
                                 end (deferred.py); their checks of device values collected (device_checks.py)
    fused_group(i, low, high)    layers that run as one step (fusion.py asks each layer's `fusion`: BatchNorm's
                                 is layers/batch_norm_scale.py, an in-place BatchNorm + Scale pair)
    check_values()               raise what the checks of the last pass found: one read of the device
    clear_param_diffs()          every diff zeroed, or dropped when nothing else holds it (Blob.release_diff)

Built once per net at the end of its assembly (net_assembly.py), which also packs the BatchNorm statistics
into one tensor (running_sums.py).
"""
import contextlib

import torch

from .. import switches
from . import deferred, device_checks, fusion, running_sums

_NOTHING = contextlib.nullcontext()


class _GradOff:
    """torch.no_grad() for a scope entered with autograd on: the same switch, without building torch's
    context object (decorator machinery that costs as much as a small layer's kernel).  Stateless, so one
    instance serves every thread (grad mode is per thread)."""
    __slots__ = ()

    def __enter__(self):
        torch._C._set_grad_enabled(False)

    def __exit__(self, *exc_info):
        torch._C._set_grad_enabled(True)
        return False


_GRAD_OFF = _GradOff()


def no_grad():
    """A scope with autograd off: Layer math runs without it (Caffe has no autograd).  Nothing to do when it
    is off already (a solver's step turns it off once around forward and backward)."""
    return _GRAD_OFF if torch.is_grad_enabled() else _NOTHING


class _PassScope:
    """no_grad + gathered updates + collected checks, as one object entered by every pass of the net."""
    __slots__ = ("runtime", "stack")

    def __init__(self, runtime):
        self.runtime, self.stack = runtime, []      # a stack: a layer may run a pass of the same net inside

    def __enter__(self):
        runtime = self.runtime
        entered = [scope for scope in (no_grad(), runtime.gather_scope(), runtime.collect_scope())
                   if scope is not _NOTHING]
        for scope in entered:
            scope.__enter__()
        self.stack.append(entered)

    def __exit__(self, *exc_info):
        for scope in reversed(self.stack.pop()):
            scope.__exit__(*exc_info)
        return False


class NetRuntime:
    # Run fusable layer groups (fusion.py) as one step.  Assign False on a net's runtime, or set BREWNET_FUSE=0
    # (switches.py; read when a net is built), to run every layer on its own.
    fuse_layers = None
    # Keep the TRAIN-mode BatchNorm statistics in one tensor per net, updated in two ops a pass
    # (running_sums.py).  Read when the net is built.
    pack_running_sums = True
    # Whether clear_param_diffs may drop the diffs instead of zeroing them (a CUDA-graph replay writes into the
    # recorded memory, so the compiled path turns this off).
    lazy_clear = True
    # On the CPU, diffs of this many values or more are zeroed in place: glibc serves blocks of 32 MiB and up
    # with fresh mmaps, and faulting them in again every iteration costs more than zeroing.  GPU memory comes
    # from torch's caching allocator: every diff may be dropped there.
    LAZY_CLEAR_CPU_LIMIT = 8 << 20

    def __init__(self, net):
        self.net = net
        if self.fuse_layers is None:
            self.fuse_layers = switches.on("BREWNET_FUSE")
        self.group_of = {i: g for g in fusion.find_groups(net) for i in range(g.first, g.last + 1)}
        self.running_sums = running_sums.pack(net) if self.pack_running_sums else []
        self.checks = device_checks.Checks()     # checks of device values a forward leaves pending
        self.on_cpu = torch.device(net.device).type == "cpu"
        self._gather = deferred.gathered()        # one scope object per net: empty again after applying
        self._scope = _PassScope(self)
        self._droppable = self._receivers = None

    # --- hook 1: the scope of a pass ---------------------------------------------------------------------------
    def pass_scope(self):
        return self._scope

    def gather_scope(self):
        """Layers' blob updates applied together at the end of the pass; with debug_info layer by layer, since
        its log shows each layer's parameters right after the layer."""
        return _NOTHING if self.net.debug_info else self._gather

    def collect_scope(self):
        """Layers hand their checks of device values to this net; none on the CPU, which checks at once
        (unless the tests ask it to defer)."""
        if self.on_cpu and not device_checks.DEFER_ON_CPU:
            return _NOTHING
        return device_checks.collecting(self.checks)

    # --- hook 2: fused layers -----------------------------------------------------------------------------------
    @property
    def steps_by_layer(self):
        """Whether every layer runs on its own in plain order (no fused groups): the small nets' loop."""
        return not self.group_of

    def fused_group(self, i, low, high):
        """The fused group layer i belongs to, if it may run as one step: fusion on, no per-layer debug log,
        and the whole group inside layers low..high."""
        group = self.group_of.get(i)
        if group is None or not self.fuse_layers or self.net.debug_info:
            return None
        return group if low <= group.first and group.last <= high else None

    def unfused(self, i):
        """Layer i runs on its own this pass: its group (if any) forgets what a fused forward left."""
        group = self.group_of.get(i)
        if group is not None:
            group.fused_forward = False

    def unfuse_for_backward(self, i):
        group = self.group_of.get(i)
        if group is not None:
            group.unfuse()      # the layers' own backward needs their own state

    # --- hook 3: the checks of a pass -------------------------------------------------------------------------
    def check_values(self):
        if self.checks.flags:           # none on the CPU: its layers checked at once
            self.checks.resolve()

    # --- hook 4: clearing the gradients -----------------------------------------------------------------------
    def clear_param_diffs(self):
        """Every learnable parameter's diff = 0, ahead of a backward that accumulates into it.  A diff that
        nothing else holds is dropped instead (it reads as zeros; the first gradient added becomes the diff,
        Blob.accumulate_diff): no pass over the memory to zero it and none to add into it."""
        params = self.net.learnable_params
        held = [b for b, drop in zip(params, self._droppable_diffs()) if not (drop and b.release_diff())]
        if held:
            torch._foreach_zero_([blob.diff for blob in held])

    def _droppable_diffs(self):
        """Per learnable parameter: whether clear_param_diffs may drop its diff (if nothing else holds it).
        Kept while lazy_clear and the limit stay (parameter shapes do not change)."""
        key = (self.lazy_clear, self.LAZY_CLEAR_CPU_LIMIT)
        if self._droppable is None or self._droppable[0] != key:
            self._droppable = (key, [
                self.lazy_clear and receives and not (self.on_cpu and blob.count() >= self.LAZY_CLEAR_CPU_LIMIT)
                for blob, receives in zip(self.net.learnable_params, self._receives_gradient())])
        return self._droppable[1]

    def _receives_gradient(self):
        """Per learnable parameter: whether Backward adds a gradient to it.  The others (BatchNorm statistics,
        frozen layers) keep their zeroed diff: dropping it would only cost a fresh one per iteration."""
        if self._receivers is None:
            net = self.net
            receivers = [False] * len(net.learnable_params)
            for net_param_id, (layer_id, param_id) in enumerate(net.param_layer_indices):
                if net.layer_need_backward[layer_id] and net.layers[layer_id].param_propagate(param_id):
                    receivers[net.learnable_param_ids[net_param_id]] = True
            self._receivers = receivers
        return self._receivers
