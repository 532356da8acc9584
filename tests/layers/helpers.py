"""Small builders shared by the layer tests, and `check_layer`, the checks every layer's tests run."""
import contextlib

import torch

from brewnet.core import common
from brewnet.core.blob import Blob
from brewnet.runtime.capture import HostSyncs
from brewnet.core.gradient_check import GradientChecker
from brewnet.core.registry import create_layer
from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text


def make_layer(text):
    """A layer named L from the text of a LayerParameter (without the name)."""
    return create_layer(parse_text('name: "L" ' + text, caffe_pb2.LayerParameter()))


def blob(values, name="x"):
    """A blob of torch's default dtype holding `values` (nested lists or a tensor)."""
    t = torch.as_tensor(values, dtype=torch.get_default_dtype())
    b = Blob(t.shape, name=name)
    b.data.copy_(t)
    return b


def tensor_blob(values):
    """A blob with the dtype of the tensor `values` (float64 for gradient checks), holding a copy of it."""
    b = Blob(values.shape, dtype=values.dtype)
    b.data = values.clone()
    return b


def assert_matches_autograd(layer, bottom, top, x, oracle):
    """After `layer` ran forward on `x`: its top and its backward of a random top diff equal `oracle` (torch
    ops) and autograd's gradient."""
    dy = torch.randn(top[0].shape)
    top[0].diff.copy_(dy)
    layer.Backward(top, [True], bottom)
    leaf = x.clone().requires_grad_()
    y = oracle(leaf)
    y.backward(dy)
    torch.testing.assert_close(top[0].data, y.detach())
    torch.testing.assert_close(bottom[0].diff, leaf.grad)


# --- check_layer: the checks every layer's tests run --------------------------------------------------------

@contextlib.contextmanager
def _float64():
    previous = common.default_dtype()
    common.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        common.set_default_dtype(previous)


def _layer_param(layer, phase):
    param = parse_text('name: "L" ' + layer, caffe_pb2.LayerParameter()) if isinstance(layer, str) else layer
    copy = caffe_pb2.LayerParameter()
    copy.CopyFrom(param)
    if phase is not None:
        copy.phase = phase
    return copy


def assert_close(what, actual, expected, tol):
    """tinygrad-style comparison: the failure names what differs, the shapes, the worst element, the tolerance."""
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {tuple(actual.shape)}, expected {tuple(expected.shape)}")
    error = (actual - expected).abs()
    allowed = tol + tol * expected.abs()
    if error.numel() and not bool((error <= allowed).all()):
        i = int(torch.argmax(error - allowed))
        raise AssertionError(f"{what} differs (atol = rtol = {tol:g}) in {int((error > allowed).sum())} of "
                             f"{error.numel()} elements of shape {tuple(actual.shape)}; worst at flat index {i}: "
                             f"{actual.reshape(-1)[i].item()!r}, expected {expected.reshape(-1)[i].item()!r}")


class LayerCase:
    """One layer built from its LayerParameter on float64 copies of given bottom values; `run` is a forward
    then, for a top diff, a backward (parameter diffs cleared first), reseeding torch for stochastic layers."""

    def __init__(self, param, bottoms, seed, layer_class=None):
        self.values, self.seed = [torch.as_tensor(v, dtype=torch.float64) for v in bottoms], seed
        torch.manual_seed(seed)
        self.layer = layer_class(param) if layer_class else create_layer(param)

    def blobs(self, count):
        """Fresh bottoms holding the values, and `count` empty tops."""
        return [tensor_blob(v) for v in self.values], [Blob(dtype=torch.float64, name=f"top{i}")
                                                       for i in range(count)]

    def run(self, bottom, top, top_diffs=None, propagate_down=None):
        torch.manual_seed(self.seed)
        self.layer.Forward(bottom, top)
        if top_diffs is not None:
            for blob, dy in zip(top, top_diffs):
                blob.diff.copy_(dy)
            for p in self.layer.blobs:
                p.diff.zero_()
            self.layer.Backward(top, propagate_down, bottom)


def check_layer(layer, bottoms, top_shapes, *, oracle=None, tol=1e-6, grad_bottoms=None, in_place=False,
                params=None, phase=None, checker=None, backward=True, record=True, seed=1701, layer_class=None,
                param_gradients=True):
    """The checks every layer's tests run, in float64, on the layer built from `layer` (the text of a
    LayerParameter without its name, or a LayerParameter) over tensors of `bottoms`:

    (a) setup gives tops of `top_shapes`; `params` (tensors), when given, replace the filled parameters;
    (b) the hand-written backward matches central differences for the bottoms in `grad_bottoms` (indices;
        default all) and every parameter (`checker`: a GradientChecker, for kinks and step sizes);
    (c) `oracle(*bottom_tensors, param_tensors)` -> top tensor(s), built from torch ops: the tops equal it, and
        the backward of a random top diff equals autograd's gradients; parameter diffs accumulate (+=) over a
        second Backward while bottom diffs are overwritten, as in Caffe;
    (d) `in_place`: the layer run with top == bottom gives the same tops and diffs;
    (e) `record`: forward and backward in recording mode (common.graph_capture, what -compile records) make
        no host sync (HostSyncs) and give the eager numbers.
    `backward=False` (layers without a gradient) leaves out the backward parts; `layer_class` builds a class
    that is not registered (a layer being written); `param_gradients=False`, for a layer whose parameter
    diffs are an update rule rather than a gradient (CenterLoss's centers), leaves the parameters out of (b)
    and (c) (their own tests check them; (d) and (e) still compare them).  Returns the layer of (a)."""
    param = _layer_param(layer, phase)
    grad_bottoms = range(len(bottoms)) if grad_bottoms is None else grad_bottoms
    propagate_down = [backward and i in grad_bottoms for i in range(len(bottoms))]
    with _float64():
        case = LayerCase(param, bottoms, seed, layer_class)
        bottom, top = case.blobs(len(top_shapes))
        case.layer.setup(bottom, top)
        shapes = [tuple(t.shape) for t in top]
        assert shapes == [tuple(s) for s in top_shapes], \
            f"{case.layer.type} '{case.layer.name}': top shapes {shapes}, expected {[tuple(s) for s in top_shapes]}"
        for blob, value in zip(case.layer.blobs, params or []):
            blob.data.copy_(torch.as_tensor(value, dtype=torch.float64))
        torch.manual_seed(seed)
        dys = [torch.randn(s, dtype=torch.float64) for s in shapes] if backward else None
        case.run(bottom, top, dys, propagate_down)
        if oracle is not None:
            _check_oracle(case, bottom, top, dys, propagate_down, oracle, tol, param_gradients)
        if in_place:
            _check_in_place(case, bottom, top, dys, propagate_down)
        if record:
            _check_recording(case, bottom, top, dys, propagate_down)
        if backward:
            gradient = LayerCase(param, bottoms, seed, layer_class)     # its own: the check perturbs blobs
            if not param_gradients:
                for i in range(len(case.layer.blobs)):
                    gradient.layer.set_param_propagate_down(i, False)
            checker = checker or GradientChecker(stepsize=1e-4, threshold=1e-5)
            for i in ([-1] if len(grad_bottoms) == len(bottoms) else grad_bottoms):
                checker.check_gradient(gradient.layer, *gradient.blobs(len(top_shapes)), check_bottom=i)
    return case.layer


def _check_oracle(case, bottom, top, dys, propagate_down, oracle, tol, param_gradients=True):
    name = f"{case.layer.type} '{case.layer.name}'"
    xs = [v.clone().requires_grad_(down) for v, down in zip(case.values, propagate_down)]
    ps = [p.data.clone().requires_grad_(dys is not None and param_gradients) for p in case.layer.blobs]
    torch.manual_seed(case.seed)
    ys = oracle(*xs, ps)
    ys = [ys] if isinstance(ys, torch.Tensor) else list(ys)
    for i, (blob, y) in enumerate(zip(top, ys)):
        assert_close(f"{name}: top {i} against the oracle", blob.data, y.detach(), tol)
    if dys is None:
        return
    torch.autograd.backward(ys, dys)
    for i, (blob, x) in enumerate(zip(bottom, xs)):
        if x.requires_grad:
            assert_close(f"{name}: bottom {i} diff against autograd", blob.diff, x.grad, tol)
    for i, (blob, p) in enumerate(zip(case.layer.blobs, ps)):
        if p.requires_grad:
            assert_close(f"{name}: param {i} diff against autograd", blob.diff, p.grad, tol)
    case.layer.Backward(top, propagate_down, bottom)
    for i, (blob, x) in enumerate(zip(bottom, xs)):
        if x.requires_grad:
            assert_close(f"{name}: bottom {i} diff after a second Backward (overwritten)", blob.diff, x.grad, tol)
    for i, (blob, p) in enumerate(zip(case.layer.blobs, ps)):
        if p.requires_grad:
            assert_close(f"{name}: param {i} diff after a second Backward (accumulated)", blob.diff,
                         2 * p.grad, tol)


def _outputs(case, bottom, top):
    """{name: copy} of what a run computes: the tops, the bottom diffs and the parameter diffs."""
    return {**{f"top {i}": t.data.clone() for i, t in enumerate(top)},
            **{f"bottom {i} diff": b.diff.clone() for i, b in enumerate(bottom)},
            **{f"param {i} diff": p.diff.clone() for i, p in enumerate(case.layer.blobs)}}


def _assert_same_outputs(what, actual, expected):
    for name, value in expected.items():
        assert_close(f"{what}: {name}", actual[name], value, 1e-12)


def _check_in_place(case, bottom, top, dys, propagate_down):
    case.run(bottom, top, dys, propagate_down)
    expected = _outputs(case, bottom, top)
    both = tensor_blob(case.values[0])
    case.run([both], [both], dys, propagate_down)
    _assert_same_outputs(f"{case.layer.type} '{case.layer.name}' in place", _outputs(case, [both], [both]),
                         expected)


def _check_recording(case, bottom, top, dys, propagate_down):
    case.run(bottom, top, dys, propagate_down)           # eager, with the host-side checks: the warm-up
    expected = _outputs(case, bottom, top)
    for p in case.layer.blobs:
        p.diff.zero_()
    torch.manual_seed(case.seed)
    with common.graph_capture(), HostSyncs() as syncs:
        case.layer.forward_loss(bottom, top)
        if dys is not None:
            for blob, dy in zip(top, dys):          # after forward_loss, which sets a loss top's diff
                blob.diff.copy_(dy)
            case.layer.Backward(top, propagate_down, bottom)
    assert syncs.found == [], f"{case.layer.type} '{case.layer.name}' waits for the device when recorded: " \
                              f"{syncs.found}"
    _assert_same_outputs(f"{case.layer.type} '{case.layer.name}' recorded", _outputs(case, bottom, top), expected)
