"""Checks of values that live on the device (a label outside [0, classes)), made without making the host wait.

On the CPU a check is a plain comparison, made where the value is read.  On a GPU reading a value back makes
the host wait for every kernel issued so far: a check in the middle of a forward pass (the loss layers' label
range) empties the device's queue, and the device then idles while the host issues the next layers.  So
within a Net pass a layer computes the check's flag on the device and hands it here with the function that
raises its error; the pass's owner reads all flags at once where the host waits anyway:

    Net.forward()                    at the end of forward, as it reads the loss;
    the solver's step                after backward is issued, as it reads the loss, before any update;

so a bad label still raises the layer's error, naming the value, before a weight changes.  Meanwhile the
layer computes with its labels clamped into range: an index out of range would otherwise stop the device
with an assert the process cannot recover from.  A layer run on its own (outside a Net pass) checks at once.
"""
import threading

import torch

_local = threading.local()

# The CPU checks at once (a comparison costs nothing there).  Tests set this to exercise the deferred form.
DEFER_ON_CPU = False


class Checks:
    """The flags of one Net pass and the functions that raise their errors."""

    def __init__(self):
        self.flags, self.failures = [], []

    def add(self, flag, fail):
        """flag: a 0-d bool tensor, true when the check failed; fail(): raises the error it stands for."""
        self.flags.append(flag)
        self.failures.append(fail)

    def resolve(self):
        """Read every flag (one wait for the device for all of them) and raise the first failure's error."""
        if not self.flags:
            return
        flags, failures = self.flags, self.failures
        self.flags, self.failures = [], []
        for failed, fail in zip(torch.stack(flags).tolist(), failures):
            if failed:
                fail()


class collecting:
    """Within the scope, layers on an accelerator hand their checks to `checks` (Net.forward_loss).  A class,
    not a generator-based context manager: the Net opens one per forward pass, and that costs less."""
    __slots__ = ("checks",)

    def __init__(self, checks):
        self.checks = checks

    def __enter__(self):
        stack = getattr(_local, "stack", None)
        if stack is None:
            stack = _local.stack = []
        stack.append(self.checks)
        return self.checks

    def __exit__(self, *exc_info):
        _local.stack.pop()
        return False


def deferring(tensor):
    """The Checks that a check of `tensor` goes to, or None: check at once (the CPU, or outside a Net pass)."""
    stack = getattr(_local, "stack", None)
    if not stack or (tensor.is_cpu and not DEFER_ON_CPU):
        return None
    return stack[-1]
