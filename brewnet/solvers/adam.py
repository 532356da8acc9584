"""Adam (Caffe's AdamSolver, Kingma & Ba 2015): bias-corrected first and second moment estimates.

Two histories per parameter, m and v; beta1 = momentum, beta2 = momentum2, eps = delta, t = iter + 1:

    m  = beta1 * m + (1 - beta1) * g
    v  = beta2 * v + (1 - beta2) * g^2
    g  = lr * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps)
    w -= g

The solverstate holds the m blobs first, then the v blobs (Caffe's order).
"""
import functools

import numpy as np
import torch

from .registry import register_solver
from .sgd import SGDSolver
from .update_pipeline import _scale_all



@register_solver("Adam")
class AdamSolver(SGDSolver):
    history_per_param = 2

    def compute_update_value(self, grads, histories, local_rate):
        m, v = histories
        beta1, beta2 = self.F(self.param.momentum), self.F(self.param.momentum2)
        _scale_all(m, float(beta1))
        torch._foreach_add_(m, grads, alpha=float(self.F(1) - beta1))
        _scale_all(v, float(beta2))
        torch._foreach_add_(v, torch._foreach_mul(grads, grads), alpha=float(self.F(1) - beta2))
        denominator = torch._foreach_sqrt(v)
        torch._foreach_add_(denominator, float(self.F(self.param.delta)))
        update = torch._foreach_div(m, denominator)
        _scale_all(update, float(self.F(local_rate) * _correction(self.F, beta1, beta2, self.iter + 1)))
        torch._foreach_copy_(grads, update)


@functools.lru_cache(maxsize=8)
def _correction(F, beta1, beta2, t):
    """sqrt(1 - beta2^t) / (1 - beta1^t) in F (cached: a step asks again for each group and slice)."""
    return np.sqrt(F(1) - np.power(beta2, F(t))) / (F(1) - np.power(beta1, F(t)))
