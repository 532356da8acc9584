"""Adam (Caffe's AdamSolver, Kingma & Ba 2015): bias-corrected first and second moment estimates.

Two histories per parameter, m and v; beta1 = momentum, beta2 = momentum2, eps = delta, t = iter + 1:

    m  = beta1 * m + (1 - beta1) * g
    v  = beta2 * v + (1 - beta2) * g^2
    g  = lr * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps)
    w -= g

The solverstate holds the m blobs first, then the v blobs (Caffe's order).
"""
import numpy as np

from .registry import register_solver
from .sgd import SGDSolver



@register_solver("Adam")
class AdamSolver(SGDSolver):
    history_per_param = 2

    def compute_update_value(self, param_id, rate):
        g = self.net.learnable_params[param_id].diff
        m = self.history[param_id].data
        v = self.history[len(self.net.learnable_params) + param_id].data
        beta1, beta2 = self.F(self.param.momentum), self.F(self.param.momentum2)
        t = self.iter + 1
        correction = np.sqrt(self.F(1) - np.power(beta2, self.F(t))) / (self.F(1) - np.power(beta1, self.F(t)))
        m.mul_(float(beta1)).add_(g, alpha=float(self.F(1) - beta1))
        v.mul_(float(beta2)).add_(g * g, alpha=float(self.F(1) - beta2))
        update = m / v.sqrt().add_(float(self.F(self.param.delta)))
        g.copy_(update.mul_(float(self.F(self.local_rate(param_id, rate)) * self.F(correction))))
