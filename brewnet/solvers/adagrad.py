"""AdaGrad (Caffe's AdaGradSolver): per-weight rates from the sum of squared gradients.

    h += g^2
    g  = lr * g / (sqrt(h) + delta)
    w -= g
"""
from ..errors import SolverError
from .registry import register_solver
from .sgd import SGDSolver


@register_solver("AdaGrad")
class AdaGradSolver(SGDSolver):
    def _validate(self):
        super()._validate()
        if self.param.momentum != 0:
            raise SolverError(f"{self.source}: Momentum cannot be used with AdaGrad "
                              f"(Expect: momentum 0, Actual: {self.param.momentum:g})")

    def compute_update_value(self, param_id, rate):
        g = self.net.learnable_params[param_id].diff
        h = self.history[param_id].data
        h.add_(g * g)
        update = g / h.sqrt().add_(self.param.delta)
        g.copy_(update.mul_(self.local_rate(param_id, rate)))
