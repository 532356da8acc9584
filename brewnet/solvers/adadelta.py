"""AdaDelta (Caffe's AdaDeltaSolver, Zeiler 2012), with Caffe's learning rate on top.

Two histories per parameter: h (squared gradients) and u (squared updates), both decaying by `momentum`:

    h  = momentum * h + (1 - momentum) * g^2
    dx = g * sqrt((u + delta) / (h + delta))
    u  = momentum * u + (1 - momentum) * dx^2
    g  = lr * dx
    w -= g

The solverstate holds the h blobs first, then the u blobs (Caffe's order).
"""
from .registry import register_solver
from .sgd import SGDSolver



@register_solver("AdaDelta")
class AdaDeltaSolver(SGDSolver):
    history_per_param = 2

    def compute_update_value(self, param_id, rate):
        g = self.net.learnable_params[param_id].diff
        h = self.history[param_id].data
        u = self.history[len(self.net.learnable_params) + param_id].data
        momentum, delta = self.F(self.param.momentum), float(self.F(self.param.delta))
        h.mul_(float(momentum)).add_(g * g, alpha=float(self.F(1) - momentum))
        g.mul_(((u + delta) / (h + delta)).sqrt_())
        u.mul_(float(momentum)).add_(g * g, alpha=float(self.F(1) - momentum))
        g.mul_(self.local_rate(param_id, rate))
