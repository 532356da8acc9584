"""The update pipeline of book 5.6 over lists of tensors, and the three ways of iterating over the parameters.

A Part is a set of learnable parameters (or slices of one) given as lists: their ids in the Net, weights,
gradients (the diffs) and histories (one list per history kind: Adam's m and v, AdaDelta's h and u).
run(solver, part, rate) is Caffe's per-parameter loop and Net::Update for one Part, each step one
torch._foreach_* op over the Part (or over its parameters that share a multiplier):

    solver.normalize(grads)                                     g /= iter_size
    per decay_mult:  solver.regularize(weights, grads, decay)   L2: g += decay * w      L1: g += decay * sign(w)
    per lr_mult:     solver.compute_update_value(grads, histories, local_rate)      the rule: g = its step
    subtract(weights, grads)                                    w -= g
    proximal_l1 only (brewnet's): no L1 term above; after w -= g, w -= clamp(w, -t, t) (proximal.py)

Every step is element-wise and touches only its own parameter, so the numbers do not depend on how the
parameters are cut into Parts.  parts(solver) chooses the cut:

    per_parameter   one Part per parameter: Caffe's loop (solver.batched_update = False)
    batched         one Part for all: a kernel launch per step instead of per parameter and step (the
                    accelerators' default, and solver.batched_update = True)
    chunked         one Part per slice of CHUNK values of a large parameter: all steps pass over a slice while
                    it is in the cache, so the parameter is read from memory once instead of once per step
                    (the CPU's default for parameters over CHUNK values, the small ones going batched)
"""
import functools
import math
from typing import NamedTuple

import torch

from ..core.blob import scale_all
from . import proximal


class Part(NamedTuple):
    ids: tuple          # the parameter id (position in net.learnable_params) of each element below
    weights: list
    grads: list
    histories: list     # [[kind 0 of each element], [kind 1 of each element], ...]


def run(solver, part, rate):
    """normalize -> regularize by decay_mult group -> the rule by lr_mult group -> w -= g, for one Part."""
    F, weight_decay, proximal_l1 = solver.F, solver.param.weight_decay, solver.proximal_l1
    solver.normalize(part.grads)
    for mult, positions in _groups(solver, solver.net.params_weight_decay, part.ids):
        local_decay = _product(F, weight_decay, mult)
        if local_decay and not proximal_l1:
            solver.regularize(_subset(part.weights, positions), _subset(part.grads, positions), local_decay)
    for mult, positions in _groups(solver, solver.net.params_lr, part.ids):
        solver.compute_update_value(_subset(part.grads, positions),
                                    [_subset(kind, positions) for kind in part.histories],
                                    _product(F, rate, mult))
    subtract(part.weights, part.grads)
    if proximal_l1 and weight_decay:
        proximal.soft_threshold_part(solver, part, rate)


def subtract(weights, grads):
    """Net::Update: w -= g."""
    torch._foreach_sub_(weights, grads)


# --- the three ways ----------------------------------------------------------------------------------------------
def parts(solver):
    """The Parts of one update, by solver.batched_update: False, per parameter; True, batched; None (the
    default), batched on an accelerator, and on the CPU the parameters of up to CHUNK values batched and the
    larger ones chunked."""
    every = range(len(solver.net.learnable_params))
    if solver.batched_update is False:
        return per_parameter(solver, every)
    if solver.batched_update or _on_accelerator(solver.net.device):
        return batched(solver, every)
    small, large = _small_and_large(solver)
    return [*batched(solver, small), *chunked(solver, large, solver.CHUNK)]


def per_parameter(solver, ids):
    for i in ids:
        yield from batched(solver, (i,))


def batched(solver, ids):
    """[one Part holding the parameters `ids`], or [] when there are none (torch's foreach ops refuse empty
    lists)."""
    if not ids:
        return []
    params, history, n = solver.net.learnable_params, solver.history, len(solver.net.learnable_params)
    return [Part(tuple(ids), [params[i].data for i in ids], [params[i].diff for i in ids],
                 [[history[kind * n + i].data for i in ids] for kind in range(solver.history_per_param)])]


def chunked(solver, ids, chunk):
    """A Part of one slice of `chunk` values at a time of each parameter `ids` (the same slice of its weights,
    gradient and histories)."""
    params, history, n = solver.net.learnable_params, solver.history, len(solver.net.learnable_params)
    for i in ids:
        w, g = params[i].data.view(-1), params[i].diff.view(-1)
        hs = [history[kind * n + i].data.view(-1) for kind in range(solver.history_per_param)]
        for start in range(0, w.numel(), chunk):
            part = slice(start, start + chunk)
            yield Part((i,), [w[part]], [g[part]], [[h[part]] for h in hs])


def _small_and_large(solver):
    """The learnable parameters' positions split at CHUNK values (kept: their sizes never change)."""
    key = (len(solver.net.learnable_params), solver.CHUNK)
    split = solver.__dict__.get("_split")
    if split is None or split[0] != key:
        small, large = [], []
        for i, param in enumerate(solver.net.learnable_params):
            (small if param.count() <= solver.CHUNK else large).append(i)
        split = solver._split = (key, tuple(small), tuple(large))
    return split[1:]


@functools.lru_cache(maxsize=16)
def _on_accelerator(device):
    return torch.device(device).type != "cpu"


# --- groups and scalars ------------------------------------------------------------------------------------------
def _groups(solver, multipliers, ids):
    """[(multiplier, positions in ids)] in first-seen order; positions None: all of them (the usual case, and
    always for one id).  Cached: the Net's multipliers (params_lr, params_weight_decay) are fixed when it is
    built, and the ids of a step repeat."""
    if len(ids) == 1:
        return ((multipliers[ids[0]], None),)
    key = (id(multipliers), ids)
    cache = solver.__dict__.setdefault("_group_cache", {})
    groups = cache.get(key)
    if groups is None:
        by_mult = {}
        for position, param_id in enumerate(ids):
            by_mult.setdefault(multipliers[param_id], []).append(position)
        groups = cache[key] = [(mult, None if len(positions) == len(ids) else positions)
                               for mult, positions in by_mult.items()]
    return groups


def _subset(values, positions):
    return values if positions is None else [values[k] for k in positions]


def _product(F, a, b):
    """float(F(a) * F(b)): a rate or decay times its multiplier, rounded in the blobs' precision F as Caffe
    computes it.  Cached: NumPy scalar arithmetic costs as much as a small tensor op, and a step asks for the
    same few products again (a tiny net's whole update is a handful of such ops).  Zeros are not
    (0.0 and -0.0 are one key)."""
    return _cached_product(F, a, b) if a and b else float(F(a) * F(b))


@functools.lru_cache(maxsize=256)
def _cached_product(F, a, b):
    return float(F(a) * F(b))


_cpu_factors = {}


def _scalar(tensors, value):
    """`value` as a multi-tensor op should take it for `tensors`: on the CPU a 0-d tensor of their dtype, kept
    from step to step (a Python number is wrapped into a new tensor for each list element, and making even one
    costs as much as a tiny net's multiplication); elsewhere the number.  The same product either way."""
    if not tensors[0].is_cpu:
        return value
    key = (value, math.copysign(1.0, value), tensors[0].dtype)      # 0.0 and -0.0 apart
    tensor = _cpu_factors.get(key)
    if tensor is None:
        if len(_cpu_factors) > 64:
            _cpu_factors.clear()
        tensor = _cpu_factors[key] = torch.full((), value, dtype=tensors[0].dtype)
    return tensor


def _scale_all(tensors, factor):
    """tensor *= factor for each of `tensors` (blob.scale_all with _scalar's kept CPU factor)."""
    if not tensors[0].is_cpu:
        scale_all(tensors, factor)
        return
    torch._foreach_mul_(tensors, _scalar(tensors, factor))
