"""Second derivatives through hand-written layers: the parameter gradient of a gradient penalty (WGAN-GP).

WGAN-GP's critic loss has the term  P = weight * mean_n (||g_n|| - target)^2,  g_n = dD(x_n)/dx_n,  and the
solver needs dP/dtheta for the critic's parameters theta.  g is itself a backward pass, so dP/dtheta goes
through the backward pass: a double backward.  A critic here is a chain of layers from an input blob to an
output blob (one bottom and one top each; a Split on the way passes on the branch that was followed).  With
a_0 = x, a_l = f_l(a_(l-1); theta_l), one pass of each kind, all on the blobs' tensors (no autograd):

1. forward   the net's own, already run on x (the blobs hold every a_l);
2. backward  d_L = 1 (D summed per sample), d_(l-1) = J_l^T d_l, and g = d_0;
3. adjoint of step 2, upwards: with gbar = dP/dg and, per layer, the adjoint dbar_(l-1) of its output
   d_(l-1), the layer's `adjoint` gives dbar_l (d_(l-1) is linear in d_l), its parameters' share of dP/dtheta
   (J_l^T also depends on theta) and abar_(l-1), the adjoint of its input a_(l-1) (J_l^T depends on a_(l-1)
   unless the layer is piecewise linear);
4. backward of the forward pass, downwards, started from the abar_l of step 3 (skipped when all are zero,
   as in a ReLU critic): the parameter gradients of f_l at those adjoints.

Each layer type answers three questions in a Rule below, on tensors (x, y: the layer's bottom and top data):
    backward(x, y, dy)          dx = J^T dy                                       (steps 2 and 4)
    param_grads(x, y, dy)       the gradients of <dy, f(x; theta)> for layer.blobs, or None each  (step 4)
    adjoint(x, y, dy, dxbar)    (dybar, xbar, param bars) of <dxbar, J^T dy>       (step 3)
For a layer linear in x and in its weight (InnerProduct, Convolution, Deconvolution) <dxbar, J^T dy> =
<J dxbar, dy> = <f(dxbar; W) - b, dy>: dybar is the forward (without bias) of dxbar, the weight's bar is the
weight gradient with dxbar as the input and dy as the top diff, and xbar is 0.  For an element-wise y = f(x):
dybar = f'(x) dxbar and xbar = f''(x) dy dxbar, with f' and f'' read from y where the layer may run in place
(ReLU, LeakyReLU i.e. ReLU with negative_slope: f'' = 0; TanH: 1 - y^2, -2y(1 - y^2); Sigmoid: y(1 - y),
y(1 - y)(1 - 2y)).  MAX pooling is piecewise linear (dybar gathers dxbar at the argmax), AVE pooling linear
(dybar is AVE pooling of dxbar); Flatten, Reshape and Split only move values.

`gradient_penalty(net, input, output)` runs steps 2-4 after the caller's forward of the interpolates and
adds dP/dtheta to the parameter diffs (accumulating, as every Backward does).  The layers' own Backward is
not involved, so the net's diffs hold nothing else of it; tests/layers/test_double_backward.py checks the
result against torch autograd's double backprop.
"""
import torch

from ..errors import LayerError, NetError
from ..proto import caffe_pb2
from .pooling import ave_pool

P = caffe_pb2.PoolingParameter


class DoubleBackwardError(NetError):
    """A net whose path from input to output has a layer without second derivatives here, or no such path."""


# ---------------------------------------------------------------- the rules, one per layer type

class Rule:
    """The defaults suit a layer without parameters that is (piecewise) linear in x: a subclass gives
    `backward` (J^T dy) and `forward_linear` (J dxbar); the adjoint of its backward is then J dxbar alone,
    with no share for x or parameters.  Other layers override `adjoint` and `param_grads`."""

    def check(self, layer, bottoms, tops):
        """Raise when this layer's configuration is outside what the rule computes."""

    def param_grads(self, layer, x, y, dy):
        return [None] * len(layer.blobs)

    def adjoint(self, layer, x, y, dy, dxbar):
        return self.forward_linear(layer, x, y, dxbar), None, [None] * len(layer.blobs)


class MoveRule(Rule):
    """Flatten, Reshape, Split: the same values in another shape (Split: the branch followed)."""

    def backward(self, layer, x, y, dy):
        return dy.reshape(x.shape)

    def forward_linear(self, layer, x, y, dxbar):
        return dxbar.reshape(y.shape)


class ElementwiseRule(Rule):
    """y = f(x) element by element; subclasses give f' and f'' (None: 0) from x and y."""

    def backward(self, layer, x, y, dy):
        return self.first(layer, x, y) * dy

    def adjoint(self, layer, x, y, dy, dxbar):
        second = self.second(layer, x, y)
        xbar = None if second is None else second * dy * dxbar
        return self.first(layer, x, y) * dxbar, xbar, []

    def second(self, layer, x, y):
        return None


class ReLURule(ElementwiseRule):
    """f' = 1 where x > 0, else negative_slope; f'' = 0.  With a slope >= 0, x > 0 exactly where y > 0, so y
    serves in place too."""

    def check(self, layer, bottoms, tops):
        if layer.param.relu_param.negative_slope < 0 and bottoms[0] is tops[0]:
            raise LayerError("Expect: negative_slope >= 0 when run in place (the sign of x is lost), Actual: "
                             f"{layer.param.relu_param.negative_slope}", layer.name, layer.type)

    def first(self, layer, x, y):
        slope = layer.param.relu_param.negative_slope
        positive = y > 0 if slope >= 0 else x > 0
        return torch.where(positive, 1.0, slope).to(y.dtype)


class TanHRule(ElementwiseRule):
    def first(self, layer, x, y):
        return 1 - y * y

    def second(self, layer, x, y):
        return -2 * y * (1 - y * y)


class SigmoidRule(ElementwiseRule):
    def first(self, layer, x, y):
        return y * (1 - y)

    def second(self, layer, x, y):
        return y * (1 - y) * (1 - 2 * y)


class InnerProductRule(Rule):
    """y = x W^T + b on rows of length K (W stored (N, K), or (K, N) with transpose)."""

    def _rows(self, layer, tensor, width):
        return tensor.reshape(layer.M, width)

    def _weight_nk(self, layer):
        w = layer.blobs[0].data
        return w.t() if layer.transpose else w

    def _stored(self, layer, grad_nk):
        return grad_nk.t() if layer.transpose else grad_nk

    def backward(self, layer, x, y, dy):
        return (self._rows(layer, dy, layer.num_output) @ self._weight_nk(layer)).reshape(x.shape)

    def param_grads(self, layer, x, y, dy):
        rows = self._rows(layer, dy, layer.num_output)
        grads = [self._stored(layer, rows.t() @ self._rows(layer, x, layer.K))]
        return grads + ([rows.sum(0)] if layer.bias_term else [])

    def adjoint(self, layer, x, y, dy, dxbar):
        dxbar_rows = self._rows(layer, dxbar, layer.K)
        dybar = (dxbar_rows @ self._weight_nk(layer).t()).reshape(y.shape)
        weight_bar = self._stored(layer, self._rows(layer, dy, layer.num_output).t() @ dxbar_rows)
        return dybar, None, [weight_bar] + ([None] if layer.bias_term else [])


class ConvolutionRule(Rule):
    """Convolution and Deconvolution: torch.convolution with the layer's geometry (transposed or not)."""

    def _kernel(self, layer, tensor, channels):
        return layer._as_kernel_input(tensor.contiguous(), channels)

    def _call(self, layer, dy, x, mask, bias):
        stride, pad, dilation, out_pad = layer.kernel_args
        return torch.ops.aten.convolution_backward(
            self._kernel(layer, dy, layer.num_output), self._kernel(layer, x, layer.channels),
            layer._kernel_weight(), [layer.num_output] if bias else None, stride, pad, dilation,
            layer.transposed, out_pad, layer.group, mask)

    def backward(self, layer, x, y, dy):
        return self._call(layer, dy, x, [True, False, False], False)[0].reshape(x.shape)

    def param_grads(self, layer, x, y, dy):
        _, dw, db = self._call(layer, dy, x, [False, True, layer.bias_term], layer.bias_term)
        return [dw.reshape(layer.blobs[0].shape)] + ([db] if layer.bias_term else [])

    def adjoint(self, layer, x, y, dy, dxbar):
        stride, pad, dilation, out_pad = layer.kernel_args
        dybar = torch.convolution(self._kernel(layer, dxbar, layer.channels), layer._kernel_weight(), None,
                                  stride, pad, dilation, layer.transposed, out_pad, layer.group)
        weight_bar = self._call(layer, dy, dxbar, [False, True, False], False)[1]
        return (dybar.reshape(y.shape), None,
                [weight_bar.reshape(layer.blobs[0].shape)] + ([None] if layer.bias_term else []))


class PoolingRule(Rule):
    """MAX (dx puts dy at each window's argmax: dybar picks dxbar there) and AVE (linear)."""

    def check(self, layer, bottoms, tops):
        if layer.method not in (P.MAX, P.AVE) or len(tops) != 1:
            raise LayerError("Expect: MAX or AVE pooling with one top for a double backward, Actual: "
                             f"{P.PoolMethod.Name(layer.method)} with {len(tops)} tops", layer.name, layer.type)

    def backward(self, layer, x, y, dy):
        return layer.pool_backward(dy.contiguous(), x)

    def forward_linear(self, layer, x, y, dxbar):
        if layer.method == P.AVE:
            return ave_pool(dxbar.contiguous(), layer.geometry)
        index = layer.index     # from the forward of x, or from pool_backward in step 2
        planes = index.reshape(index.shape[0] * index.shape[1], -1)
        picked = dxbar.reshape(planes.shape[0], -1).gather(1, planes.clamp(min=0))
        return picked.masked_fill(planes < 0, 0).reshape(y.shape)


RULES = {"InnerProduct": InnerProductRule(), "Convolution": ConvolutionRule(),
         "Deconvolution": ConvolutionRule(), "ReLU": ReLURule(), "TanH": TanHRule(), "Sigmoid": SigmoidRule(),
         "Pooling": PoolingRule(), "Flatten": MoveRule(), "Reshape": MoveRule(), "Split": MoveRule()}


# ---------------------------------------------------------------- the net: the path and the three passes

class Step:
    """One layer of the path: the layer, its bottom and top blobs, and its rule."""

    def __init__(self, layer, bottom, top, rule):
        self.layer, self.bottom, self.top, self.rule = layer, bottom, top, rule

    @property
    def x(self):
        return self.bottom.data

    @property
    def y(self):
        return self.top.data


def critic_path(net, input, output):
    """The layers from blob `input` to blob `output` of `net`, first to last, as Steps; an error names the
    first layer that is not a one-bottom layer with a rule, or says that `output` does not reach `input`."""
    blob = net.blob_by_name(output)
    start, path = net.blob_by_name(input), []
    for i in range(len(net.layers) - 1, -1, -1):
        if blob is start:
            break
        if not any(t is blob for t in net.top_vecs[i]):
            continue
        layer, bottoms = net.layers[i], net.bottom_vecs[i]
        if not bottoms:         # a data layer: the path ends elsewhere than at `input`
            break
        rule = RULES.get(layer.type)
        if rule is None or len(bottoms) != 1:
            raise DoubleBackwardError(
                f"net '{net.name}': layer '{layer.name}' (type {layer.type}, {len(bottoms)} bottoms) lies on "
                f"the path from '{input}' to '{output}' and has no double backward. Expect: one bottom and a "
                f"type among {', '.join(sorted(RULES))}")
        rule.check(layer, bottoms, net.top_vecs[i])
        path.append(Step(layer, bottoms[0], blob, rule))
        blob = bottoms[0]
    if blob is not start:
        raise DoubleBackwardError(f"net '{net.name}': blob '{output}' is not computed from blob '{input}' "
                                  f"through one-bottom layers")
    return path[::-1]


def input_gradient(path, seed):
    """Step 2: the top diff of every layer (first to last) and g, the gradient at the input, for top diff
    `seed` at the output."""
    diffs, dy = [], seed
    for step in reversed(path):
        diffs.append(dy)
        dy = step.rule.backward(step.layer, step.x, step.y, dy)
    return diffs[::-1], dy


def _accumulate(layer, grads):
    for i, grad in enumerate(grads):
        if grad is not None and layer.param_propagate(i):
            layer.blobs[i].accumulate_diff(grad)


def backward_of_backward(path, diffs, gbar):
    """Steps 3 and 4: add to the parameter diffs the gradient of <gbar, g> through g's backward pass."""
    xbars, dxbar = [], gbar
    for step, dy in zip(path, diffs):
        dxbar, xbar, bars = step.rule.adjoint(step.layer, step.x, step.y, dy, dxbar)
        _accumulate(step.layer, bars)
        xbars.append(xbar)
    # dxbar is now the adjoint of the constant seed: nothing depends on it.  Step 4 from the topmost xbar.
    ybar = None
    for step, xbar in zip(reversed(path), reversed(xbars)):
        if ybar is not None:
            _accumulate(step.layer, step.rule.param_grads(step.layer, step.x, step.y, ybar))
            ybar = step.rule.backward(step.layer, step.x, step.y, ybar)
        if xbar is not None:
            ybar = xbar if ybar is None else ybar + xbar


@torch.no_grad()
def gradient_penalty(net, input="data", output="score", weight=10.0, target=1.0):
    """After a forward of `net` on x (the interpolates): add to the parameter diffs the gradient of

        P = weight * mean_n (||g_n||_2 - target)^2,   g_n = d(sum of output_n) / d input_n,

    and return (P, ||g_n||) as tensors on the net's device (read them when convenient: no host wait here)."""
    path = critic_path(net, input, output)
    out = net.blob_by_name(output).data
    diffs, g = input_gradient(path, torch.ones_like(out))
    rows = g.reshape(g.shape[0], -1)
    norms = rows.norm(dim=1)
    excess = norms - target
    penalty = weight * (excess * excess).mean()
    # dP/dg_n = 2 weight (||g_n|| - target) g_n / (||g_n|| N); at g_n = 0 the norm has no gradient: take 0.
    scale = torch.where(norms > 0, 2 * weight * excess / (norms.clamp(min=torch.finfo(norms.dtype).tiny)
                                                          * rows.shape[0]), 0.0)
    backward_of_backward(path, diffs, (rows * scale[:, None]).reshape(g.shape))
    return penalty, norms
