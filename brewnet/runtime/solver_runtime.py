"""The runtime's side of a Solver: the hooks solvers/base.py calls in each iteration of Solver.step.

    reads_late(display)            whether this iteration reads its loss after issuing the update (late_read.py)
    forward_backward(read)         the train net's passes: in the solver's precision (precision.py), replayed from a
                                   CUDA graph under -compile (capture.py), else Net.forward_backward itself
    forward(net)                   a forward in the solver's precision (testing, the final loss)
    finish_gradients()             fp16: the gradients divided by the loss scale
    update(late, losses, ...)      apply_update, then the late read; or fp16's check that may skip the update

In fp32 on the CPU (no -compile) each hook is one call into Net or the update rule: Caffe's Solver::Step.
"""
import math

from .late_read import UpdateUndo, reads_late_by_default
from .net_runtime import no_grad


class SolverRuntime:
    def __init__(self, solver):
        self.solver = solver
        self.read_after_update = None       # None: the device's default (late_read.reads_late_by_default)
        self._compiled = None
        self._undo = None

    # --- reading the loss early or late ----------------------------------------------------------------------
    def reads_after_update(self):
        if self.read_after_update is not None:
            return self.read_after_update
        net = self.solver.net
        return not net.runtime.on_cpu and reads_late_by_default(net.device)      # the CPU: always first

    def reads_late(self, display):
        """Display iterations read first, so that the loss is logged before the update's lr line (Caffe's log
        order, which parse_log.py reads); iter_size > 1 reads each pass before the next one (the culprit search
        looks at the pass that made the NaN); fp16 reads the gradients before its update anyway."""
        solver = self.solver
        return (self.reads_after_update() and not display and solver.param.iter_size == 1
                and solver.precision.scaler is None)

    # --- the passes --------------------------------------------------------------------------------------------
    def forward_backward(self, read=True):
        """One forward and backward of the train net: the loss as a float, the layers' checks made;
        read=False: the loss as the device left it, checks pending."""
        solver, net = self.solver, self.solver.net
        if solver.compile and not net.debug_info:      # debug_info logs every layer: eager
            compiled = self._compiled_step()
            if compiled:
                return compiled.forward_backward(read)
        with no_grad():     # once for both passes: the Net's own scopes then cost nothing
            if solver.precision.enabled:
                return solver.precision.forward_backward(net, read)
            return net.forward_backward(read)

    def _compiled_step(self):
        """The opt-in compiled path (capture.py): on a CUDA device forward + backward replay from a CUDA graph;
        elsewhere None, and the eager path."""
        if self._compiled is None:
            from .capture import compiled_step
            self._compiled = compiled_step(self.solver.net, self.solver.precision) or False
        return self._compiled

    def forward(self, net):
        precision = self.solver.precision
        return precision.forward(net) if precision.enabled else net.forward()

    # --- the update --------------------------------------------------------------------------------------------
    def finish_gradients(self):
        precision = self.solver.precision
        if precision.enabled:
            precision.unscale(self.solver.net.learnable_params)     # fp16: the diffs carry the loss scale

    def update(self, late, losses, start_iter):
        solver = self.solver
        if late:
            self._update_then_read(losses, start_iter)
        # fp16: gradients with inf/NaN (checked after the callbacks, so after a data-parallel average, for every
        # rank alike) skip the update; the iteration still counts, as in torch.amp.
        elif not solver.precision.enabled or solver.precision.accept_update(solver.net.learnable_params,
                                                                            solver.iter):
            solver.apply_update()
        else:
            solver.iter += 1

    def _update_then_read(self, losses, start_iter):
        """apply_update, then the one read of the loss and the layers' checks; a failure takes it back."""
        solver = self.solver
        if self._undo is None:
            self._undo = UpdateUndo(solver)
        iteration = solver.iter
        self._undo.save()
        solver.apply_update()
        try:
            solver.net.check_values()
            losses = [float(loss) for loss in losses]
        except Exception:
            self._undo.restore()
            raise
        for loss in losses:
            if not math.isfinite(loss):
                self._undo.restore()
                solver._stop_on_non_finite(loss)
        solver._record_loss(losses, start_iter, False, iteration)
