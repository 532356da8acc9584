"""Nesterov's accelerated gradient (Caffe's NesterovSolver).

    h_new = momentum * h + lr * g
    g     = (1 + momentum) * h_new - momentum * h        (step back to h, then over-step along h_new)
    w    -= g
"""
import torch

from .registry import register_solver
from .sgd import SGDSolver
from .update_pipeline import _scalar, _scale_all



@register_solver("Nesterov")
class NesterovSolver(SGDSolver):
    def compute_update_value(self, grads, histories, local_rate):
        (h,) = histories
        momentum = self.F(self.param.momentum)
        previous = torch._foreach_mul(h, _scalar(h, float(-momentum)))         # -momentum * h, before h moves
        _scale_all(h, float(momentum))
        torch._foreach_add_(h, grads, alpha=local_rate)
        torch._foreach_add_(previous, h, alpha=float(self.F(1) + momentum))
        torch._foreach_copy_(grads, previous)
