"""AdaGrad (Caffe's AdaGradSolver): per-weight rates from the sum of squared gradients.

    h += g^2
    g  = lr * g / (sqrt(h) + delta)
    w -= g
"""
import torch

from ..errors import SolverError
from .registry import register_solver
from .sgd import SGDSolver
from .update_pipeline import _scale_all


@register_solver("AdaGrad")
class AdaGradSolver(SGDSolver):
    def _validate(self):
        super()._validate()
        if self.param.momentum != 0:
            raise SolverError(f"{self.source}: Momentum cannot be used with AdaGrad "
                              f"(Expect: momentum 0, Actual: {self.param.momentum:g})")

    def compute_update_value(self, grads, histories, local_rate):
        (h,) = histories
        torch._foreach_add_(h, torch._foreach_mul(grads, grads))
        denominator = torch._foreach_sqrt(h)
        torch._foreach_add_(denominator, self.param.delta)
        update = torch._foreach_div(grads, denominator)
        _scale_all(update, local_rate)
        torch._foreach_copy_(grads, update)
