"""RMSProp (Caffe's RMSPropSolver): AdaGrad with a decaying average of squared gradients.

    h = rms_decay * h + (1 - rms_decay) * g^2
    g = lr * g / (sqrt(h) + delta)
    w -= g
"""
import torch

from ..errors import SolverError
from .registry import register_solver
from .sgd import SGDSolver
from .update_pipeline import _scale_all



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

    def compute_update_value(self, grads, histories, local_rate):
        (h,) = histories
        decay = self.F(self.param.rms_decay)
        _scale_all(h, float(decay))
        torch._foreach_add_(h, torch._foreach_mul(grads, grads), alpha=float(self.F(1) - decay))
        denominator = torch._foreach_sqrt(h)
        torch._foreach_add_(denominator, self.param.delta)
        update = torch._foreach_div(grads, denominator)
        _scale_all(update, local_rate)
        torch._foreach_copy_(grads, update)
