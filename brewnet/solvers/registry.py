"""SolverRegistry: `type:` string -> solver class (Caffe's SolverRegistry / REGISTER_SOLVER_CLASS).

`get_solver(param)` builds the solver a SolverParameter (or a solver prototxt path) asks for, by its `type`
field or by the legacy `solver_type` enum of old prototxts.
"""
import difflib
import os

from ..errors import SolverError
from ..proto import caffe_pb2

_registry = {}

# The legacy enum (SolverParameter.SolverType) and the type string each value stands for.
LEGACY_SOLVER_TYPES = {0: "SGD", 1: "Nesterov", 2: "AdaGrad", 3: "RMSProp", 4: "AdaDelta", 5: "Adam"}


def register_solver(type_name):
    def decorate(cls):
        if type_name in _registry and _registry[type_name] is not cls:
            raise ValueError(f"solver type '{type_name}' registered twice "
                             f"({_registry[type_name].__name__} and {cls.__name__})")
        cls.type = type_name
        _registry[type_name] = cls
        return cls
    return decorate


def solver_type_list():
    from . import _load_catalogue
    _load_catalogue()
    return sorted(_registry)


def solver_type(param, source="solver"):
    """The solver type a SolverParameter asks for, upgrading the legacy `solver_type` enum as Caffe does."""
    if param.HasField("solver_type"):
        if param.HasField("type"):
            raise SolverError(f"{source}: the old solver_type field (enum) and the new type field (string) "
                              "cannot both be specified")
        if param.solver_type not in LEGACY_SOLVER_TYPES:
            raise SolverError(f"{source}: unknown solver_type enum value {param.solver_type}")
        return LEGACY_SOLVER_TYPES[param.solver_type]
    return param.type


def solver_class(type_name, source="solver"):
    from . import _load_catalogue
    _load_catalogue()
    if type_name not in _registry:
        close = difflib.get_close_matches(type_name, _registry, n=2, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise SolverError(f"{source}: Unknown solver type: '{type_name}'{hint} "
                          f"(known types: {', '.join(sorted(_registry))})")
    return _registry[type_name]


def get_solver(param, source=None, precision=None):
    """Create the solver for `param`: a SolverParameter or the path of a solver prototxt (pycaffe's get_solver).
    `source` names the solver file in messages (and locates relative net paths) when param is a message;
    `precision` ('fp32', 'bf16', 'fp16'; brewnet only) defaults to core.precision.get_precision()."""
    from .base import load_solver_param
    source = source or "SolverParameter"
    if isinstance(param, (str, os.PathLike)):
        source = os.fspath(param)
        param = load_solver_param(param)
    elif not isinstance(param, caffe_pb2.SolverParameter):
        raise SolverError(f"get_solver: expected a SolverParameter or a prototxt path, got {type(param).__name__}")
    cls = solver_class(solver_type(param, source), source)
    if precision is not None:
        return cls(param, source=source, precision=precision)
    return cls(param, source=source)
