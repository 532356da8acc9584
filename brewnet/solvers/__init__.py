"""Solvers: the Step loop (base.py), lr policies, and the six update rules.

    solver = get_solver("lenet_solver.prototxt")     # type from `type:` (or the legacy solver_type enum)
    solver.solve()                                   # or solver.step(n), solver.snapshot(), solver.restore(f)
"""
import importlib

_MODULES = ("sgd", "nesterov", "adagrad", "rmsprop", "adadelta", "adam")


def _load_catalogue():
    for name in _MODULES:
        importlib.import_module(f"{__name__}.{name}")


from .base import Solver, SolverAction, load_solver_param  # noqa: E402
from .registry import get_solver, register_solver, solver_type_list  # noqa: E402

_load_catalogue()
from .sgd import SGDSolver  # noqa: E402
from .nesterov import NesterovSolver  # noqa: E402
from .adagrad import AdaGradSolver  # noqa: E402
from .rmsprop import RMSPropSolver  # noqa: E402
from .adadelta import AdaDeltaSolver  # noqa: E402
from .adam import AdamSolver  # noqa: E402

__all__ = ["Solver", "SolverAction", "SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver",
           "AdaDeltaSolver", "AdamSolver", "get_solver", "register_solver", "solver_type_list",
           "load_solver_param"]
