"""Learning-rate policies (Caffe's SGDSolver::GetLearningRate), one small function per `lr_policy`.

With it = the current iteration (the number of updates done so far):

    fixed       base_lr
    step        base_lr * gamma ^ floor(it / stepsize)
    exp         base_lr * gamma ^ it
    inv         base_lr * (1 + gamma * it) ^ (-power)
    multistep   base_lr * gamma ^ (number of stepvalue entries already reached)
    poly        base_lr * (1 - it / max_iter) ^ power
    sigmoid     base_lr / (1 + exp(-gamma * (it - stepsize)))

Caffe<float> evaluates these in float; so do we (NumPy float32; float64 for double nets), so that logged
rates and trajectories agree.
`current_step` is Caffe's solver field of the same name: `step` recomputes it every iteration, `multistep` advances
it by at most one per call, and it is saved in the solverstate.

`validate(param)` checks up front that a policy has the fields it cannot work without: Caffe would either stop
with a bare CHECK in the middle of training (`step` without `stepsize`) or silently train with a rate that is
zero or constant (`exp` without `gamma`, `inv` without `power`).
"""
import numpy as np

from ..errors import SolverError
from ..log import get_logger

log = get_logger("solver")


# policy -> fields it requires to be set, with the condition each value must meet
_REQUIRED = {
    "fixed": (),
    "step": ("stepsize", "gamma"),
    "exp": ("gamma",),
    "inv": ("gamma", "power"),
    "multistep": ("stepvalue", "gamma"),
    "poly": ("power", "max_iter"),
    "sigmoid": ("gamma", "stepsize"),
}


def known_policies():
    return sorted(_REQUIRED)


def validate(param, source="solver"):
    """Raise SolverError naming the field when `param.lr_policy` lacks something it needs."""
    policy = param.lr_policy
    if not param.HasField("lr_policy"):
        raise SolverError(f"{source}: lr_policy is not set (one of {', '.join(known_policies())})")
    if policy not in _REQUIRED:
        raise SolverError(f"{source}: Unknown learning rate policy: '{policy}' "
                          f"(known: {', '.join(known_policies())})")
    for field in _REQUIRED[policy]:
        present = len(param.stepvalue) > 0 if field == "stepvalue" else param.HasField(field)
        if not present:
            raise SolverError(f"{source}: lr_policy \"{policy}\" requires the solver field '{field}', "
                              "which is not set")
    if policy in ("step", "sigmoid") and param.stepsize <= 0:
        raise SolverError(f"{source}: lr_policy \"{policy}\": Expect: stepsize > 0, Actual: {param.stepsize}")
    if policy == "poly" and param.max_iter <= 0:
        raise SolverError(f"{source}: lr_policy \"poly\": Expect: max_iter > 0, Actual: {param.max_iter}")
    if "gamma" in _REQUIRED[policy] and param.gamma < 0:
        raise SolverError(f"{source}: lr_policy \"{policy}\": Expect: gamma >= 0, Actual: {param.gamma:g}")


def learning_rate(param, it, current_step, F=np.float32):
    """Return (rate, current_step) for iteration `it` under `param.lr_policy`, computed in the scalar type F."""
    policy = param.lr_policy
    if policy == "fixed":       # every step of the toy nets: no NumPy scalars beyond the one rounding
        return float(F(param.base_lr)), current_step
    base_lr, gamma, power = F(param.base_lr), F(param.gamma), F(param.power)
    if policy == "step":
        current_step = it // param.stepsize
        rate = base_lr * np.power(gamma, F(current_step))
    elif policy == "exp":
        rate = base_lr * np.power(gamma, F(it))
    elif policy == "inv":
        rate = base_lr * np.power(F(1) + gamma * F(it), -power)
    elif policy == "multistep":
        if current_step < len(param.stepvalue) and it >= param.stepvalue[current_step]:
            current_step += 1
            log.info("MultiStep Status: Iteration %d, step = %d", it, current_step)
        rate = base_lr * np.power(gamma, F(current_step))
    elif policy == "poly":
        rate = base_lr * np.power(F(1) - F(it) / F(param.max_iter), power)
    elif policy == "sigmoid":
        rate = base_lr * (F(1) / (F(1) + np.exp(-gamma * (F(it) - F(param.stepsize)))))
    else:
        raise SolverError(f"Unknown learning rate policy: '{policy}' (known: {', '.join(known_policies())})")
    return float(F(rate)), current_step
