"""Neuron layers: element-wise functions y = f(x), top shaped like the bottom.

Every one works in place (top[0] is bottom[0]).  A layer whose backward needs its input x sets
`needs_input = True`: when it runs in place, forward keeps a copy of x before overwriting it (Caffe does this
only for PReLU; here AbsVal, BNLL, Log, Power, Clip and ELU are safe in place too, whatever their
parameters; ReLU keeps only the sign of x).  Layers whose gradient can be written with y alone read the top instead.
"""
import math

import torch

from ..core.blob import Blob
from ..core.filler import fill
from ..core.layer import Layer
from ..core.registry import register_layer
from ..proto import caffe_pb2


class NeuronLayer(Layer):
    """One bottom, one top of the same shape, in place allowed."""
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1
    needs_input = False       # backward reads x: keep a copy of it when running in place

    def reshape(self, bottom, top):
        top[0].reshape_like(bottom[0])

    def forward_loss(self, bottom, top):
        self.saved_input = None
        if self.needs_input and top[0] is bottom[0]:
            self.reshape(bottom, top)
            self.saved_input = bottom[0].data.clone()
        return super().forward_loss(bottom, top)

    def input(self, bottom):
        """x as forward saw it, even when forward overwrote it in place."""
        saved = getattr(self, "saved_input", None)
        return saved if saved is not None else bottom[0].data


@register_layer("ReLU")
class ReLULayer(NeuronLayer):
    """ReLU: y = max(0, x) + negative_slope * min(0, x);  dx = dy * (x > 0 ? 1 : negative_slope).

    Backward needs only where x > 0.  Without a slope that is where y > 0, so when the Net says nothing
    overwrites the top before backward (`top_data_kept`, the usual case, in place or not) backward reads the
    top, as Caffe does.  Otherwise (a later in-place layer rewrites the top, or a slope) forward keeps a
    boolean mask (a quarter of a copy of x), which stays right whatever runs after the layer."""

    def forward(self, bottom, top):
        x, s = bottom[0].data, self.param.relu_param.negative_slope
        if (self.need_backward and not self.top_data_kept) or s != 0:
            # Before the top (maybe x itself) is written; into a kept buffer (no allocation per forward).
            mask = getattr(self, "positive", None)
            if mask is None or mask.shape != x.shape or mask.device != x.device:
                mask = self.positive = torch.empty(x.shape, dtype=torch.bool, device=x.device)
            torch.gt(x, 0, out=mask)
        else:
            self.positive = None       # backward reads the top, or never runs (the Net said so)
        if s == 0:
            torch.clamp(x, min=0, out=top[0].data)
        else:
            torch.where(self.positive, x, x * s, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dy, s = top[0].diff, self.param.relu_param.negative_slope
            if s != 0:
                torch.where(self.positive, dy, dy * s, out=bottom[0].diff)
            elif self.positive is not None:
                # dy * 1 or dy * 0, as where(x > 0, dy, dy * 0) gives (including -0.0 and NaN * 0).
                torch.mul(dy, self.positive, out=bottom[0].diff)
            else:
                # y = max(0, x) > 0 exactly where x > 0: dy there, 0 elsewhere, in one pass (in place too).
                # (Unlike dy * 0, a NaN or inf in dy where x <= 0 gives 0 here, as torch's ReLU does.)
                torch.ops.aten.threshold_backward.grad_input(dy, top[0].data, 0, grad_input=bottom[0].diff)


@register_layer("PReLU")
class PReLULayer(NeuronLayer):
    """PReLU: y = max(0, x) + a_c * min(0, x), one learned slope a_c per channel (axis 1), or one for all
    (channel_shared).  Default filler: constant 0.25.
        da_c += sum over items and positions of channel c of dy * x * (x <= 0)
        dx    = dy * (x > 0 ? 1 : a_c)
    """
    needs_input = True

    def layer_setup(self, bottom, top):
        p = self.param.prelu_param
        self.expect(bottom[0].num_axes >= 2, f"Expect: a bottom with >= 2 axes, Actual: shape "
                                             f"{list(bottom[0].shape)}")
        self.channel_shared = p.channel_shared
        channels = bottom[0].shape[1]
        if not self.blobs:
            x = bottom[0].data
            self.blobs = [Blob(() if self.channel_shared else (channels,), dtype=x.dtype, device=x.device,
                               name=f"{self.name}.0")]
            filler = p.filler if p.HasField("filler") else caffe_pb2.FillerParameter(type="constant", value=0.25)
            fill(filler, self.blobs[0])
        expected = 1 if self.channel_shared else channels
        self.expect(self.blobs[0].count() == expected,
                    f"negative slope size is inconsistent with the prototxt config. Expect: {expected} "
                    f"slope(s), Actual: {self.blobs[0].count()}")

    def reshape(self, bottom, top):
        self.expect(bottom[0].num_axes >= 2, f"Expect: a bottom with >= 2 axes, Actual: shape "
                                             f"{list(bottom[0].shape)}")
        super().reshape(bottom, top)

    def _views(self, bottom, tensor):
        """tensor seen as (N, C, rest) and the slopes as broadcastable (1, C or 1, 1)."""
        shape = bottom[0].shape
        slopes = self.blobs[0].data.reshape(1, -1, 1)
        return tensor.reshape(shape[0], shape[1], -1), slopes

    def forward(self, bottom, top):
        x, a = self._views(bottom, bottom[0].data)
        y = top[0].data.view(x.shape)
        torch.where(x > 0, x, x * a, out=y)

    def backward(self, top, propagate_down, bottom):
        x, a = self._views(bottom, self.input(bottom))
        dy = top[0].diff.view(x.shape)
        # Parameter gradient first: in place, writing the bottom diff overwrites the top diff.
        if self.param_propagate(0):
            g = torch.where(x <= 0, dy * x, torch.zeros((), dtype=x.dtype, device=x.device))
            g = g.sum() if self.channel_shared else g.sum(dim=(0, 2))
            self.blobs[0].diff.add_(g.reshape(self.blobs[0].shape))
        if propagate_down[0]:
            torch.where(x > 0, dy, dy * a, out=bottom[0].diff.view(x.shape))


@register_layer("Sigmoid")
class SigmoidLayer(NeuronLayer):
    """Sigmoid: y = 1 / (1 + exp(-x));  dx = dy * y * (1 - y)."""

    def forward(self, bottom, top):
        torch.sigmoid(bottom[0].data, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y = top[0].data
            torch.mul(top[0].diff, y * (1 - y), out=bottom[0].diff)


@register_layer("TanH")
class TanHLayer(NeuronLayer):
    """TanH: y = tanh(x);  dx = dy * (1 - y^2)."""

    def forward(self, bottom, top):
        torch.tanh(bottom[0].data, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y = top[0].data
            torch.mul(top[0].diff, 1 - y * y, out=bottom[0].diff)


@register_layer("AbsVal")
class AbsValLayer(NeuronLayer):
    """AbsVal: y = |x|;  dx = dy * sign(x)  (sign(0) = 0)."""
    needs_input = True

    def forward(self, bottom, top):
        torch.abs(bottom[0].data, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            torch.mul(top[0].diff, torch.sign(self.input(bottom)), out=bottom[0].diff)


@register_layer("BNLL")
class BNLLLayer(NeuronLayer):
    """BNLL (binomial normal log likelihood, softplus): y = log(1 + exp(x)), computed stably as
    max(x, 0) + log(1 + exp(-|x|));  dx = dy * e / (1 + e), e = exp(min(x, 50)) as in Caffe."""
    needs_input = True
    THRESHOLD = 50.0

    def forward(self, bottom, top):
        x = bottom[0].data
        y = torch.log1p(torch.exp(-x.abs()))
        torch.add(y, x.clamp(min=0), out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            e = torch.exp(self.input(bottom).clamp(max=self.THRESHOLD))
            torch.mul(top[0].diff, e / (e + 1), out=bottom[0].diff)


@register_layer("ELU")
class ELULayer(NeuronLayer):
    """ELU: y = x for x > 0, alpha * (exp(x) - 1) otherwise;  dx = dy * (x > 0 ? 1 : y + alpha)."""
    needs_input = True

    def forward(self, bottom, top):
        x, alpha = bottom[0].data, self.param.elu_param.alpha
        torch.where(x > 0, x, torch.expm1(x.clamp(max=0)) * alpha, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            x, y, dy = self.input(bottom), top[0].data, top[0].diff
            alpha = self.param.elu_param.alpha
            torch.where(x > 0, dy, dy * (y + alpha), out=bottom[0].diff)


def _log_base(layer, base):
    """ln(base); base -1 means e.  Anything but a positive finite base is a user error."""
    if base == -1:
        return 1.0
    layer.expect(base > 0, f"Expect: base > 0 (or -1 for e), Actual: {base}")
    value = math.log(base)
    layer.expect(math.isfinite(value), f"Expect: a finite log(base), Actual: log({base}) = {value}")
    return value


@register_layer("Exp")
class ExpLayer(NeuronLayer):
    """Exp: y = base^(shift + scale * x) (base -1 means e) = outer * exp(inner * x),
    inner = ln(base) * scale, outer = base^shift;  dx = dy * y * inner."""

    def layer_setup(self, bottom, top):
        p = self.param.exp_param
        log_base = _log_base(self, p.base)
        self.inner_scale = log_base * p.scale
        self.outer_scale = 1.0 if p.shift == 0 else math.exp(log_base * p.shift) if p.base == -1 \
            else p.base ** p.shift

    def forward(self, bottom, top):
        y = top[0].data
        torch.exp(bottom[0].data * self.inner_scale, out=y)
        if self.outer_scale != 1:
            y.mul_(self.outer_scale)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            torch.mul(top[0].data * self.inner_scale, top[0].diff, out=bottom[0].diff)


@register_layer("Log")
class LogLayer(NeuronLayer):
    """Log: y = log_base(shift + scale * x) (base -1 means e);
    dx = dy * scale / (ln(base) * (shift + scale * x))."""
    needs_input = True

    def layer_setup(self, bottom, top):
        p = self.param.log_param
        log_base = _log_base(self, p.base)
        self.expect(log_base != 0, f"Expect: base != 1, Actual: {p.base} (1 / log(base) is infinite)")
        self.base_scale = 1.0 / log_base
        self.scale, self.shift = p.scale, p.shift
        self.backward_scale = p.scale / log_base

    def forward(self, bottom, top):
        y = top[0].data
        torch.log(bottom[0].data * self.scale + self.shift, out=y)
        if self.base_scale != 1:
            y.mul_(self.base_scale)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            inner = self.input(bottom) * self.scale + self.shift
            torch.mul(top[0].diff, self.backward_scale / inner, out=bottom[0].diff)


@register_layer("Power")
class PowerLayer(NeuronLayer):
    """Power: y = (shift + scale * x)^power;  dx = dy * power * scale * (shift + scale * x)^(power - 1),
    computed as Caffe does: constant for power 0 or 1, linear for power 2, else power*scale * y / (shift + scale x)
    (which is power * y / x when shift = 0)."""
    needs_input = True

    def layer_setup(self, bottom, top):
        p = self.param.power_param
        self.power, self.scale, self.shift = p.power, p.scale, p.shift
        self.diff_scale = self.power * self.scale

    def forward(self, bottom, top):
        y = top[0].data
        if self.diff_scale == 0:
            y.fill_(1.0 if self.power == 0 else self.shift ** self.power)
            return
        base = bottom[0].data * self.scale + self.shift
        if self.power == 1:
            y.copy_(base)
        else:
            torch.pow(base, self.power, out=y)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dx, dy = bottom[0].diff, top[0].diff
        if self.diff_scale == 0:
            dx.zero_()
            return
        if self.power == 1:
            grad = self.diff_scale              # a Python number: no host value copied to the device
        else:
            x = self.input(bottom)
            if self.power == 2:
                grad = x * (self.diff_scale * self.scale) + self.diff_scale * self.shift
            elif self.shift == 0:
                grad = top[0].data / x * self.power
            else:
                grad = top[0].data / (x * self.scale + self.shift) * self.diff_scale
        torch.mul(dy, grad, out=dx)


@register_layer("Threshold")
class ThresholdLayer(NeuronLayer):
    """Threshold: y = 1 if x > threshold else 0.  Not differentiable: no backward (as in Caffe)."""

    def forward(self, bottom, top):
        top[0].data.copy_(bottom[0].data > self.param.threshold_param.threshold)


@register_layer("Swish")
class SwishLayer(NeuronLayer):
    """Swish: y = x * s, s = sigmoid(beta * x);  dx = dy * (beta * y + s * (1 - beta * y))."""

    def forward(self, bottom, top):
        x, beta = bottom[0].data, self.param.swish_param.beta
        self.sigmoid = torch.sigmoid(x * beta)
        torch.mul(x, self.sigmoid, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            beta, y, s = self.param.swish_param.beta, top[0].data, self.sigmoid
            torch.mul(top[0].diff, beta * y + s * (1 - beta * y), out=bottom[0].diff)


@register_layer("Clip")
class ClipLayer(NeuronLayer):
    """Clip: y = max(min, min(x, max));  dx = dy where min <= x <= max, else 0."""
    needs_input = True

    def forward(self, bottom, top):
        p = self.param.clip_param
        torch.clamp(bottom[0].data, min=p.min, max=p.max, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            p, x = self.param.clip_param, self.input(bottom)
            inside = (x >= p.min) & (x <= p.max)
            torch.mul(top[0].diff, inside, out=bottom[0].diff)


@register_layer("Dropout")
class DropoutLayer(NeuronLayer):
    """Dropout with ratio p.  TRAIN: a fresh Bernoulli(1 - p) mask m per forward, y = x * m / (1 - p),
    dx = dy * m / (1 - p).  TEST: y = x, dx = dy.

    `scale_train` (not in BVLC Caffe 1.0's proto; honoured when the field exists, default true): when false,
    TRAIN does not rescale (y = x * m) and TEST multiplies by (1 - p) instead.
    """

    def layer_setup(self, bottom, top):
        p = self.param.dropout_param
        self.ratio = p.dropout_ratio
        self.expect(0 <= self.ratio < 1, f"Expect: 0 <= dropout_ratio < 1, Actual: {self.ratio}")
        self.scale_train = getattr(p, "scale_train", True)
        self.train_scale = 1.0 / (1.0 - self.ratio) if self.scale_train else 1.0
        self.test_scale = 1.0 if self.scale_train else 1.0 - self.ratio

    def forward(self, bottom, top):
        x, y = bottom[0].data, top[0].data
        if self.phase == caffe_pb2.TRAIN:
            # The mask holds 0 or the train scale: x * (m * scale) is exactly (x * m) * scale for m in {0, 1},
            # in one pass instead of two (forward and backward).
            self.mask = torch.empty_like(x).bernoulli_(1.0 - self.ratio)
            if self.train_scale != 1:
                self.mask.mul_(self.train_scale)
            torch.mul(x, self.mask, out=y)
        elif self.test_scale != 1:
            torch.mul(x, self.test_scale, out=y)
        elif y is not x:
            y.copy_(x)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy, dx = top[0].diff, bottom[0].diff
        if self.phase == caffe_pb2.TRAIN:
            torch.mul(dy, self.mask, out=dx)
        elif self.test_scale != 1:
            torch.mul(dy, self.test_scale, out=dx)
        elif dx is not dy:
            dx.copy_(dy)
