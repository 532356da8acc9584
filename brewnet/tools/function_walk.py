"""Walk a small function with brewnet's solvers (book ch. 8): the point x is the blob of a Parameter layer,
the function is the net's loss, and the solver (SGD, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam) moves x.

    net = parameter_net(2, python_loss("mypackage.functions:bend"))      # or built-in loss layers on "x"
    walk = walk_function('type: "Adam" base_lr: 0.1 momentum: 0.9', net, start=[5, 5], iterations=50)
    walk.points[-1], walk.losses, walk.grads                             # NumPy arrays, one row per step

The solver is `caffe.get_solver(...)` on a SolverParameter holding the net, so every rule is Caffe's.  A
function that built-in layers cannot express is a `FunctionLoss` Python layer: its param_str names
"module:function", a function of a NumPy array x returning (f(x), gradient of f at x), written by hand.
"""
import dataclasses
import importlib

import numpy as np

from ..core import common
from ..errors import BrewnetError, SolverError
from ..layers.python_layer import PythonLayerBase
from ..log import quiet
from ..proto import caffe_pb2
from ..proto.io import parse_text


class FunctionWalkError(BrewnetError):
    """A function for FunctionLoss that cannot be found or returns the wrong shapes."""


def parameter_net(dim, loss_layers, name="function"):
    """Prototxt text: a Parameter layer "x" of `dim` values (the point) followed by `loss_layers` (text of
    layers reading bottom "x")."""
    return (f'name: "{name}" force_backward: true\n'
            f'layer {{ name: "x" type: "Parameter" top: "x" parameter_param {{ shape {{ dim: {dim} }} }} }}\n'
            f'{loss_layers}')


def python_loss(function, name="f"):
    """Prototxt text of a FunctionLoss layer on "x" for `function`, named "module:function"."""
    return (f'layer {{ name: "{name}" type: "Python" bottom: "x" top: "{name}" loss_weight: 1 '
            f'python_param {{ module: "{__name__}" layer: "FunctionLoss" param_str: "{function}" }} }}')


def resolve(spec):
    """The function a "module:function" string names."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise FunctionWalkError(f"FunctionLoss param_str {spec!r}: expected 'module:function'")
    function = getattr(importlib.import_module(module_name), attr, None)
    if not callable(function):
        raise FunctionWalkError(f"FunctionLoss param_str {spec!r}: module '{module_name}' has no function "
                                f"'{attr}'")
    return function


class FunctionLoss(PythonLayerBase):
    """Python layer: top (one value) = f(x); backward: dx = loss weight * grad f(x), both from the function
    named by param_str, which returns (value, gradient) for a NumPy array x."""

    def setup(self, bottom, top):
        self.function = resolve(self.param_str)
        self.grad = None

    def reshape(self, bottom, top):
        top[0].reshape(1)

    def forward(self, bottom, top):
        value, grad = self.function(np.array(bottom[0].data, dtype=np.float64))
        grad = np.asarray(grad, dtype=np.float64)
        if grad.shape != bottom[0].data.shape:
            raise FunctionWalkError(f"FunctionLoss {self.param_str}: the gradient has shape {grad.shape}, "
                                    f"x has shape {bottom[0].data.shape}")
        top[0].data[...] = value
        self.grad = grad

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff[0] * self.grad


@dataclasses.dataclass
class Walk:
    points: np.ndarray      # (iterations + 1, dim): the start, then x after each update
    losses: np.ndarray      # (iterations,): the loss at the point each update started from
    grads: np.ndarray       # (iterations, dim): the gradient there (before the solver's regularization)
    stopped: str = None     # why the walk ended early: the solver refused a non-finite loss (a divergence)


def walk_function(solver_text, net_text, start, iterations, dtype=None, rate=None):
    """Run `iterations` solver steps from x = `start` and record the path.

    solver_text: SolverParameter fields (type, base_lr, momentum, ...; lr_policy defaults to "fixed").
    dtype: torch.float64 for a run in double (Caffe<double>); the default is brewnet's default dtype.
    rate: a learning rate used instead of the lr policy's, in the blobs' precision: SolverParameter.base_lr is
    a float (0.1 is 0.100000001490116 there), so a float64 walk with a rate such as 0.1 needs it here.
    """
    from ..pycaffe.solver import get_solver     # caffe.get_solver

    if "lr_policy" not in solver_text:
        solver_text += ' lr_policy: "fixed"'
    param = parse_text(f'{solver_text} display: 0 max_iter: {int(iterations)}\nnet_param {{ {net_text} }}',
                       caffe_pb2.SolverParameter())
    previous = common.default_dtype()
    common.set_default_dtype(dtype or previous)
    try:
        with quiet():       # the solver logs every construction; a walk runs many
            solver = get_solver(param)
    finally:
        common.set_default_dtype(previous)
    if rate is not None:
        exact = solver._solver
        exact.get_learning_rate = lambda: float(exact.F(rate))
    x = solver.net.params["x"][0]
    x.data[...] = np.asarray(start, dtype=np.float64).reshape(x.data.shape)
    losses, grads = [], []

    weighted = _weighted_loss_tops(solver._solver.net)

    def record():
        losses.append(sum(weight * float(blob.data.sum()) for blob, weight in weighted))
        grads.append(np.array(x.diff, dtype=np.float64).ravel())
    solver.add_callback(lambda: None, record)
    points = [np.array(x.data, dtype=np.float64).ravel()]
    # The solver's smoothed loss is kept in float32 even for a float64 net (base.py), so a diverging float64
    # walk (the book's step 100) overflows it long before its own numbers do: that cast's warning is noise here.
    stopped = None
    with np.errstate(over="ignore"):
        for _ in range(int(iterations)):
            try:
                solver.step(1)
            except SolverError as error:        # a NaN or infinite loss: brewnet stops where Caffe goes on
                stopped = str(error)
                break
            points.append(np.array(x.data, dtype=np.float64).ravel())
    return Walk(np.array(points), np.array(losses[:len(points) - 1]), np.array(grads[:len(points) - 1]),
                stopped)


def _weighted_loss_tops(net):
    """[(blob, loss weight)] of the core net's loss tops: the loss the solver minimises is their weighted sum."""
    return [(net.blobs[name], weight) for name, weight in zip(net.blob_names, net.blob_loss_weights) if weight]


__all__ = ["FunctionLoss", "FunctionWalkError", "Walk", "parameter_net", "python_loss", "resolve",
           "walk_function"]
