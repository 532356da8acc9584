"""AdaDelta (Caffe's AdaDeltaSolver, Zeiler 2012), with Caffe's learning rate on top.

Two histories per parameter: h (squared gradients) and u (squared updates), both decaying by `momentum`:

    h  = momentum * h + (1 - momentum) * g^2
    dx = g * sqrt((u + delta) / (h + delta))
    u  = momentum * u + (1 - momentum) * dx^2
    g  = lr * dx
    w -= g

The solverstate holds the h blobs first, then the u blobs (Caffe's order).
"""
import torch

from .registry import register_solver
from .sgd import SGDSolver
from .update_pipeline import _scale_all



@register_solver("AdaDelta")
class AdaDeltaSolver(SGDSolver):
    history_per_param = 2

    def compute_update_value(self, grads, histories, local_rate):
        h, u = histories
        momentum, delta = self.F(self.param.momentum), float(self.F(self.param.delta))
        rest = float(self.F(1) - momentum)
        _scale_all(h, float(momentum))
        torch._foreach_add_(h, torch._foreach_mul(grads, grads), alpha=rest)
        ratio = torch._foreach_div(torch._foreach_add(u, delta), torch._foreach_add(h, delta))
        torch._foreach_sqrt_(ratio)
        torch._foreach_mul_(grads, ratio)
        _scale_all(u, float(momentum))
        torch._foreach_add_(u, torch._foreach_mul(grads, grads), alpha=rest)
        _scale_all(grads, local_rate)
