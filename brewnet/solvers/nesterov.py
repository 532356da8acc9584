"""Nesterov's accelerated gradient (Caffe's NesterovSolver).

    h_new = momentum * h + lr * g
    g     = (1 + momentum) * h_new - momentum * h        (step back to h, then over-step along h_new)
    w    -= g
"""
from .registry import register_solver
from .sgd import SGDSolver



@register_solver("Nesterov")
class NesterovSolver(SGDSolver):
    def compute_update_value(self, param_id, rate):
        g = self.net.learnable_params[param_id].diff
        h = self.history[param_id].data
        momentum = self.F(self.param.momentum)
        previous = h.clone()
        h.mul_(float(momentum)).add_(g, alpha=self.local_rate(param_id, rate))
        g.copy_(previous.mul_(float(-momentum)).add_(h, alpha=float(self.F(1) + momentum)))
