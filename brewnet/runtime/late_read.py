"""Reading a step's loss after its update is issued, and UpdateUndo: a copy of what the update changes, so
that it can be taken back.

Why: on a GPU, reading the loss makes the host wait until the device has run every kernel issued so far.
Caffe's order -- read the loss, check it, then update -- puts that wait between backward and the update: the
device finishes backward, idles while the host works out and issues the update (320 parameters for
ResNet-50), runs it, and idles again while the host issues the next forward.  A PyTorch loop reads
`loss.item()` after `optimizer.step()`, so its update is issued while backward still runs.

brewnet keeps what the read-first order guarantees (a label out of range, which Caffe checks, or a NaN
loss, which brewnet adds, stops training before a weight changes) and reads late all the same: on an
accelerator the step (solver_runtime.py) saves the parameters, the solver's history, `iter` and `current_step` here
(device-to-device copies, issued behind backward), issues the update, then reads the loss and the layers'
checks; when they fail, `restore` puts everything back before the error is raised.
The copies cost twice the parameters' memory on the device (ResNet-50: 200 MB) and two passes over it per
step, small beside the step itself; BREWNET_READ_FIRST=1 reads first instead, without them.  The CPU has
nothing to overlap and always reads first (no copies).
"""
import functools

import torch

from .. import switches

# Set to 1 to read first on accelerators too, without the copies (a net whose parameters only just fit).
READ_FIRST_VARIABLE = "BREWNET_READ_FIRST"


def reads_late_by_default(device):
    """Whether a solver on `device` reads its loss after the update unless told otherwise."""
    return _on_accelerator(device) and not switches.on(READ_FIRST_VARIABLE)


@functools.lru_cache(maxsize=16)
def _on_accelerator(device):
    return torch.device(device).type != "cpu"


class UpdateUndo:
    """The parameters, the history blobs, `iter` and `current_step` of a solver, as they were at `save`."""

    def __init__(self, solver):
        self.solver = solver
        self.copies = None
        self.iter = self.current_step = None

    def _state(self):
        """The tensors apply_update writes: every learnable parameter's data and every history blob."""
        solver = self.solver
        return [p._data for p in solver.net.learnable_params] + [h._data for h in getattr(solver, "history", ())]

    def save(self):
        # The copies are made once: a parameter keeps its shape for the life of a Net (Caffe's too: loading
        # weights checks shapes, reshaping touches only the data blobs), so only their number is checked
        # here, in the host time of every step.
        tensors = self._state()
        if self.copies is None or len(self.copies) != len(tensors):
            self.copies = [torch.empty_like(t) for t in tensors]
        if tensors:
            torch._foreach_copy_(self.copies, tensors)
        self.iter, self.current_step = self.solver.iter, self.solver.current_step

    def restore(self):
        tensors = self._state()
        if tensors:
            torch._foreach_copy_(tensors, self.copies)
        self.solver.iter, self.solver.current_step = self.iter, self.current_step
