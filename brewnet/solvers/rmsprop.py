"""RMSProp (Caffe's RMSPropSolver): AdaGrad with a decaying average of squared gradients.

    h = rms_decay * h + (1 - rms_decay) * g^2
    g = lr * g / (sqrt(h) + delta)
    w -= g
"""
from ..errors import SolverError
from .registry import register_solver
from .sgd import SGDSolver



@register_solver("RMSProp")
class RMSPropSolver(SGDSolver):
    def _validate(self):
        super()._validate()
        if self.param.momentum != 0:
            raise SolverError(f"{self.source}: Momentum cannot be used with RMSProp "
                              f"(Expect: momentum 0, Actual: {self.param.momentum:g})")
        if not 0 <= self.param.rms_decay < 1:
            raise SolverError(f"{self.source}: rms_decay should lie between 0 and 1 "
                              f"(Expect: 0 <= rms_decay < 1, Actual: {self.param.rms_decay:g})")

    def compute_update_value(self, param_id, rate):
        g = self.net.learnable_params[param_id].diff
        h = self.history[param_id].data
        decay = self.F(self.param.rms_decay)
        h.mul_(float(decay)).add_(g * g, alpha=float(self.F(1) - decay))
        update = g / h.sqrt().add_(self.param.delta)
        g.copy_(update.mul_(self.local_rate(param_id, rate)))
