"""The proximal L1 step (brewnet's, not Caffe's): `proximal_l1: true` with `regularization_type: "L1"`.

Caffe regularizes L1 by its subgradient, g += decay * sign(w): a weight that should be zero jumps across zero
by lr * decay at every step and never stays there (book 8.4's lasso shows the small non-zeros it leaves).
The proximal gradient method instead takes the step on the data term alone and then applies the proximal
operator of t * |w|, the soft threshold, with t = local_rate * local_decay (lr * lr_mult * weight_decay *
decay_mult):

    w = sign(w) * max(|w| - t, 0)        computed as   w -= clamp(w, -t, t)

so every weight within t of zero becomes exactly +0 (w - w), and the others move t towards zero.  In the
update pipeline (update_pipeline.run) the L1 term is then left out of the gradient, and the threshold is
applied after w -= g.

With plain SGD (no momentum) this is the proximal gradient method (ISTA) exactly.  With momentum or the
adaptive rules the data term's step is the rule's own, while the threshold stays lr * decay: the usual
"proximal SGD" heuristic, which still gives exact zeros but is not the proximal step of the rule's
per-coordinate rates.
"""
import functools

import torch

from ..errors import SolverError


def enabled(param):
    """Whether the solver's parameters ask for the proximal L1 step."""
    return bool(param.proximal_l1)


def validate(param, where):
    if param.proximal_l1 and param.regularization_type != "L1":
        raise SolverError(f"{where}: proximal_l1 (brewnet's solver field) is the proximal step of L1 "
                          f"regularization; regularization_type is '{param.regularization_type}', set it to "
                          f"\"L1\" or drop proximal_l1")


def soft_threshold_part(solver, part, rate):
    """The soft threshold for the weights of one Part, each with its own t = lr * lr_mult * weight_decay *
    decay_mult (rounded in the blobs' precision as the other scalars of the update)."""
    F, weight_decay, net = solver.F, solver.param.weight_decay, solver.net
    by_threshold = {}
    for position, param_id in enumerate(part.ids):
        threshold = _threshold(F, rate, net.params_lr[param_id], weight_decay, net.params_weight_decay[param_id])
        by_threshold.setdefault(threshold, []).append(part.weights[position])
    for threshold, weights in by_threshold.items():
        if threshold > 0:
            shrink(weights, threshold)


@functools.lru_cache(maxsize=256)
def _threshold(F, rate, lr_mult, weight_decay, decay_mult):
    """(lr * lr_mult) * (weight_decay * decay_mult) in precision F.  Cached, as update_pipeline's products are:
    NumPy scalar arithmetic costs as much as a small tensor op, and every step asks for the same few values."""
    return float((F(rate) * F(lr_mult)) * (F(weight_decay) * F(decay_mult)))


def shrink(weights, threshold):
    """w -= clamp(w, -t, t) for each tensor: w - t above t, w + t below -t, exactly +0 in between."""
    clipped = torch._foreach_clamp_max(weights, threshold)
    torch._foreach_clamp_min_(clipped, -threshold)
    torch._foreach_sub_(weights, clipped)
