"""Loss layers: a scalar objective from predictions and targets (Caffe's loss_layer family): the base classes,
SoftmaxWithLoss, EuclideanLoss, SigmoidCrossEntropyLoss and HingeLoss (ContrastiveLoss, InfogainLoss and
MultinomialLogisticLoss have their own modules).

Every loss layer has top[0] = a scalar (0 axes) that carries loss weight 1 unless the prototxt says
otherwise.  As in Caffe, the weight lives in top[0].diff and each backward scales its gradient by that value,
so `loss_weight: 2.5` doubles-and-a-half every bottom diff without the layer knowing about weights.

Labels are bottom[1] for the classification losses: floats holding integers, truncated toward zero as Caffe's
static_cast<int> does.  A label outside [0, classes) that is not the ignore_label is a user error raised at
forward time (Caffe only DCHECKs it and reads out of bounds in a release build).

Normalization (LossParameter.normalization, shared by SoftmaxWithLoss, SigmoidCrossEntropyLoss and
InfogainLoss) divides the summed loss by
    FULL        outer * inner  (every prediction, ignored ones included)
    VALID       the number of non-ignored predictions
    BATCH_SIZE  outer
    NONE        1
and never by less than 1, so a batch made only of ignored labels yields 0 rather than NaN.
"""
import math

import torch

from ..core import common
from ..runtime import device_checks
from ..core.layer import Layer
from ..core.registry import register_layer
from ..errors import BrewnetError, LayerError
from ..proto import caffe_pb2

# Caffe's floor on probabilities before a log (loss_layer.hpp kLOG_THRESHOLD, and FLT_MIN in SoftmaxWithLoss).
LOG_THRESHOLD = 1e-20
FLT_MIN = 1.1754943508222875e-38
LOG_FLT_MIN = math.log(FLT_MIN)

_Norm = caffe_pb2.LossParameter


def read_labels(layer, label_blob, num_classes, ignore_label=None, want_valid=True):
    """Labels as int64 (truncated like static_cast<int>) and the mask of non-ignored ones (None without an
    ignore_label when not `want_valid`: every label counts).

    A non-ignored label outside [0, num_classes) raises a LayerError naming the value, the label bottom and
    `layer` (Caffe skips the check and reads out of bounds).  On the CPU at once; on an accelerator within a
    Net pass when the pass reads its loss (runtime/device_checks.py), the labels returned clamped into range.
    """
    labels = label_blob.data.reshape(-1).to(torch.int64)
    if common.capturing():
        # Recording a CUDA graph: no host-side check (the eager warm-up checked; gather asserts on the device).
        return labels, (labels != ignore_label if ignore_label is not None else
                        torch.ones_like(labels, dtype=torch.bool) if want_valid else None)
    valid = labels != ignore_label if ignore_label is not None else \
        torch.ones_like(labels, dtype=torch.bool) if want_valid else None
    checks = device_checks.deferring(labels)
    if checks is not None:
        clamped = labels.clamp(0, num_classes - 1)
        bad = clamped != labels
        if ignore_label is not None:
            bad &= valid
        checks.add(bad.any(), lambda: _label_error(layer, labels, bad, num_classes))
        return clamped, valid
    if ignore_label is not None:
        bad = valid & ((labels < 0) | (labels >= num_classes))
        if bool(bad.any()):
            _label_error(layer, labels, bad, num_classes)
    else:
        # Without an ignore_label the range check is one reduction (and one sync) instead of four ops.
        low, high = (v.item() for v in torch.aminmax(labels)) if labels.numel() else (0, 0)
        if low < 0 or high >= num_classes:
            _label_error(layer, labels, (labels < 0) | (labels >= num_classes), num_classes)
    return labels, valid


def _label_error(layer, labels, bad, num_classes):
    value = int(labels[bad][0])
    where = f"bottom '{layer.param.bottom[1]}'" if len(layer.param.bottom) > 1 else "bottom 1"
    raise LayerError(f"Expect: label values in [0, {num_classes}), Actual: label value {value} ({where})",
                     layer.name, layer.type)


class LossLayer(Layer):
    """Base of the two-bottom losses: (prediction, target) -> scalar; no gradient towards the target."""
    exact_num_bottom_blobs = 2
    exact_num_top_blobs = 1
    auto_top_blobs = True      # a loss layer without `top:` still gets its (anonymous) loss top, as in Caffe

    def default_loss_weight(self, top_index):
        return 1.0 if top_index == 0 else 0.0

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1

    def reshape(self, bottom, top):
        self.expect(bottom[0].num_axes >= 1 and bottom[1].num_axes >= 1
                    and bottom[0].shape[0] == bottom[1].shape[0],
                    f"Expect: data and label with the same first dimension, "
                    f"Actual: {bottom[0].shape} vs. {bottom[1].shape}")
        top[0].reshape(())

    # --- helpers for the subclasses -------------------------------------------------------------------
    @staticmethod
    def loss_weight(top):
        """The scale of this loss in the net's objective, as Caffe reads it: top[0].diff[0] (a 0-d tensor)."""
        return top[0].diff.reshape(-1)[0]

    def refuse_backward_to(self, propagate_down, index, what="label"):
        if index < len(propagate_down) and propagate_down[index]:
            raise LayerError(f"cannot backpropagate to {what} inputs (bottom {index})", self.name, self.type)

    def read_labels(self, label_blob, num_classes, ignore_label=None, want_valid=True):
        return read_labels(self, label_blob, num_classes, ignore_label, want_valid)


class NormalizedLoss(LossLayer):
    """Shared reading of loss_param: ignore_label and the normalization mode (with the legacy `normalize`)."""
    default_normalization = _Norm.VALID
    accepts_legacy_normalize = True

    def read_loss_param(self):
        p = self.param.loss_param
        self.ignore_label = p.ignore_label if p.HasField("ignore_label") else None
        if p.HasField("normalization"):
            self.normalization = p.normalization
        elif p.HasField("normalize"):
            self.expect(self.accepts_legacy_normalize, 'normalize is deprecated, use "normalization"')
            # Legacy: normalize: true meant divide by the valid count, false by the batch size.
            self.normalization = _Norm.VALID if p.normalize else _Norm.BATCH_SIZE
        else:
            self.normalization = self.default_normalization

    def normalizer(self, outer, inner, valid_count):
        """Caffe's get_normalizer, floored at 1; valid_count may be a tensor (stays on the device)."""
        mode = self.normalization
        if mode == _Norm.FULL:
            return float(max(1, outer * inner))
        if mode == _Norm.VALID:
            if isinstance(valid_count, torch.Tensor):
                return valid_count.clamp(min=1)
            return float(max(1, valid_count))
        if mode == _Norm.BATCH_SIZE:
            return float(max(1, outer))
        if mode == _Norm.NONE:
            return 1.0
        raise LayerError(f"unknown normalization mode {mode}", self.name, self.type)


def softmax_over_channels(x, outer, channels, inner):
    """softmax of x seen as (outer, channels, inner) along the channels, shaped (outer, channels, inner).
    With inner == 1 (classification) it runs on the 2-D view: torch's kernel for the last dimension is
    vectorized, the strided one for a middle dimension is not (much slower on the CPU)."""
    if inner == 1:
        return torch.softmax(x.reshape(outer, channels), dim=1).view(outer, channels, 1)
    return torch.softmax(x.reshape(outer, channels, inner), dim=1)


def log_softmax_over_channels(x, outer, channels, inner):
    """As softmax_over_channels, for log-softmax."""
    if inner == 1:
        return torch.log_softmax(x.reshape(outer, channels), dim=1).view(outer, channels, 1)
    return torch.log_softmax(x.reshape(outer, channels, inner), dim=1)


def _split_axis(blob, axis):
    """(outer, channels, inner) around a canonical axis, as Caffe's outer_num_/inner_num_."""
    return blob.count(0, axis), blob.shape[axis], blob.count(axis + 1)


@register_layer("SoftmaxWithLoss")
class SoftmaxWithLossLayer(NormalizedLoss):
    """Softmax followed by the multinomial logistic loss, fused for a stable gradient.

        p[n,c,i] = softmax over c of x[n,c,i]            (c runs along softmax_param.axis)
        E = -1/Z * sum over non-ignored (n,i) of log(max(p[n, l(n,i), i], FLT_MIN))
        dE/dx[n,c,i] = w/Z * (p[n,c,i] - [c == l(n,i)])   (0 at ignored positions)
    Z is the normalizer (see the module docstring; VALID by default) and w the loss weight.
    An optional second top receives p.
    """
    exact_num_top_blobs = -1
    min_top_blobs = 1
    max_top_blobs = 2

    def layer_setup(self, bottom, top):
        self.read_loss_param()

    def reshape(self, bottom, top):
        if self.shapes_unchanged(bottom, top):
            return
        super().reshape(bottom, top)
        self.axis = self._axis(bottom[0])
        self.outer, self.channels, self.inner = _split_axis(bottom[0], self.axis)
        self.expect(self.outer * self.inner == bottom[1].count(),
                    f"Expect: number of labels == number of predictions ({self.outer} * {self.inner} = "
                    f"{self.outer * self.inner} for softmax axis {self.axis} of shape {bottom[0].shape}), "
                    f"Actual: {bottom[1].count()} labels of shape {bottom[1].shape}")
        if len(top) > 1:
            top[1].reshape_like(bottom[0])
        # Without an ignore_label every prediction counts: the normalizer is known from the shapes.
        self.all_labels_normalizer = self.normalizer(self.outer, self.inner, self.outer * self.inner)
        self.remember_shapes(bottom, top)

    def _axis(self, blob):
        try:
            return blob.canonical_axis_index(self.param.softmax_param.axis)
        except BrewnetError as e:
            raise LayerError(str(e), self.name, self.type) from None

    def forward(self, bottom, top):
        if self.ignore_label is None:
            self._forward_all_labels(bottom, top)
            return
        labels, valid = self.read_labels(bottom[1], self.channels, self.ignore_label)
        self.prob = softmax_over_channels(bottom[0].data, self.outer, self.channels, self.inner)
        self.labels = torch.where(valid, labels, torch.zeros_like(labels)).view(self.outer, 1, self.inner)
        self.valid = valid.view(self.outer, 1, self.inner)
        p_true = self.prob.gather(1, self.labels).clamp(min=FLT_MIN)
        loss = -(torch.log(p_true) * self.valid).sum()
        self.count = self.valid.sum()
        torch.div(loss, self.normalizer(self.outer, self.inner, self.count), out=top[0].data)
        if len(top) > 1:
            top[1].data.copy_(self.prob.view(top[1].shape))

    def _forward_all_labels(self, bottom, top):
        """Every position counts (no ignore_label): no masking, and the count is known without looking at the
        labels.  log(max(p, FLT_MIN)) = max(log p, log FLT_MIN), so the loss is minus the sum of the labels'
        log-softmax entries, each floored at log FLT_MIN; backward takes p = exp(log p)."""
        label_data = bottom[1].data
        outer, channels, inner = self.outer, self.channels, self.inner
        self.prob, self.valid, self.count = None, None, outer * inner
        if (label_data.is_cpu and (not device_checks.DEFER_ON_CPU or device_checks.deferring(label_data) is None)) \
                or common.capturing():
            # gather checks every index on the CPU: the explicit range check runs only when it fails.  The
            # labels go into a kept int64 buffer, already shaped for gather (copy_ truncates as .to() does).
            flat, shaped = self._label_buffer(label_data, outer, inner)
            flat.copy_(label_data if label_data.dim() == 1 else label_data.reshape(-1))
            self.labels = shaped
        else:
            labels, _ = self.read_labels(bottom[1], channels, want_valid=False)
            self.labels = labels.view(outer, 1) if inner == 1 else labels.view(outer, 1, inner)
        if inner == 1:
            # Classification: log_prob and labels kept 2-D (outer, channels) / (outer, 1), as backward's
            # one-kernel form reads them; a view costs about as much as a small net's kernel.
            x = bottom[0].data
            self.log_prob = torch.log_softmax(x if x.dim() == 2 else x.reshape(outer, channels), dim=1)
        else:
            self.log_prob = log_softmax_over_channels(bottom[0].data, outer, channels, inner)
        try:
            picked = self.log_prob.gather(1, self.labels)
        except RuntimeError:
            self.read_labels(bottom[1], self.channels, want_valid=False)   # raises the LayerError
            raise
        log_likelihood = picked.clamp_(min=LOG_FLT_MIN).sum()
        torch.div(log_likelihood, -self.all_labels_normalizer, out=top[0].data)
        if len(top) > 1:
            torch.exp(self.log_prob.view(top[1].shape), out=top[1].data)

    def backward(self, top, propagate_down, bottom):
        self.refuse_backward_to(propagate_down, 1)
        if not propagate_down[0]:
            return
        if self.prob is None and self.inner == 1:
            self._backward_all_labels(top, bottom[0], self.all_labels_normalizer)
            return
        normalizer = self.normalizer(self.outer, self.inner, self.count)
        # Computed in the bottom's diff itself.
        grad = bottom[0].diff.view(self.outer, self.channels, self.inner)
        if self.prob is None:
            torch.exp(self.log_prob.view(grad.shape), out=grad)
        else:
            grad.copy_(self.prob)
        if self.valid is None:
            grad.scatter_add_(1, self.labels, grad.new_full(self.labels.shape, -1.0))
        else:
            grad.scatter_add_(1, self.labels, -self.valid.to(grad.dtype))
            grad.mul_(self.valid)        # ignored positions get no gradient at all
        grad.mul_(self.loss_weight(top) / normalizer)

    _labels_buffer = None

    def _label_buffer(self, label_data, outer, inner):
        """(flat, shaped): an int64 buffer for the outer * inner labels on their device, and its view as
        gather's index, (outer, 1) or (outer, 1, inner).  Kept from pass to pass (the conversion and the view
        of a fresh tensor cost more than a small net's kernels)."""
        kept = self._labels_buffer
        if kept is None or kept[1].shape[0] != outer or kept[0].numel() != outer * inner \
                or kept[0].device != label_data.device:
            flat = torch.empty(outer * inner, dtype=torch.int64, device=label_data.device)
            kept = self._labels_buffer = (flat, flat.view(outer, 1) if inner == 1 else flat.view(outer, 1, inner))
        return kept

    def _backward_all_labels(self, top, bottom, normalizer):
        """scale * (p - 1 at the label, p elsewhere), into the bottom's diff in one kernel: torch's
        log-softmax backward (fast along the last axis) of an output gradient g that is -scale at each label
        and 0 elsewhere: g - p * sum(g).  g is a kept buffer of zeros: the labels' entries are set, then
        cleared.  log_prob and labels are 2-D here (_forward_all_labels)."""
        grad, labels = bottom.diff, self.labels
        if grad.dim() != 2:
            grad = grad.view(self.outer, self.channels)
        g = self._label_grad
        if g is None or g.shape != grad.shape or g.dtype != grad.dtype or g.device != grad.device:
            g = self._label_grad = torch.zeros_like(grad)
        # -loss weight / normalizer at each label (the weight is top[0].diff, as Caffe reads it).  The CPU
        # reads the weight for free and divides in Python: the double quotient, rounded to the diff's dtype by
        # scatter_, is the correctly rounded quotient torch.div computes (no tensor to make and expand).
        weight = top[0].diff
        if weight.is_cpu and not common.capturing():
            g.scatter_(1, labels, weight.item() / -normalizer)
        else:
            g.scatter_(1, labels, torch.div(weight, -normalizer).expand(labels.shape))
        torch._log_softmax_backward_data(g, self.log_prob, 1, grad.dtype, out=grad)
        g.scatter_(1, labels, 0.0)

    _label_grad = None


@register_layer("EuclideanLoss")
class EuclideanLossLayer(LossLayer):
    """E = 1/(2N) * sum (a - b)^2;  dE/da = w/N * (a - b),  dE/db = -w/N * (a - b).

    Both bottoms are differentiable (regression against a learned target is allowed).
    """

    def allow_force_backward(self, bottom_index):
        return True

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        self.expect(bottom[0].count(1) == bottom[1].count(1),
                    f"Expect: inputs of the same dimension, Actual: {bottom[0].shape} vs. {bottom[1].shape}")

    def forward(self, bottom, top):
        self.diff = bottom[0].data - bottom[1].data.view(bottom[0].shape)
        top[0].data.copy_((self.diff * self.diff).sum() / bottom[0].shape[0] / 2)

    def backward(self, top, propagate_down, bottom):
        for i, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[i]:
                alpha = sign * self.loss_weight(top) / bottom[i].shape[0]
                bottom[i].diff.copy_((alpha * self.diff).view(bottom[i].shape))


@register_layer("SigmoidCrossEntropyLoss")
class SigmoidCrossEntropyLossLayer(NormalizedLoss):
    """Cross-entropy of targets t in [0, 1] against sigmoid(x), written to never overflow:

        E = -1/Z * sum over non-ignored i of [ x*(t - [x >= 0]) - log(1 + exp(-|x|)) ]
        dE/dx = w/Z * (sigmoid(x) - t)        (0 where t == ignore_label)
    Z defaults to the batch size (BATCH_SIZE), unlike SoftmaxWithLoss.
    """
    default_normalization = _Norm.BATCH_SIZE

    def layer_setup(self, bottom, top):
        self.read_loss_param()

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        self.expect(bottom[0].count() == bottom[1].count(),
                    f"Expect: inputs with the same count, Actual: {bottom[0].count()} vs. {bottom[1].count()}")
        self.outer, self.inner = bottom[0].shape[0], bottom[0].count(1)

    def forward(self, bottom, top):
        x = bottom[0].data
        t = bottom[1].data.view(x.shape)
        if self.ignore_label is not None:
            self.valid = t.to(torch.int64) != self.ignore_label
        else:
            self.valid = torch.ones_like(x, dtype=torch.bool)
        positive = (x >= 0).to(x.dtype)
        log_likelihood = x * (t - positive) - torch.log1p(torch.exp(-x.abs()))
        loss = -(log_likelihood * self.valid).sum()
        # Caffe keeps the normalizer of the forward pass for the backward one.
        self._normalizer = self.normalizer(self.outer, self.inner, self.valid.sum())
        top[0].data.copy_(loss / self._normalizer)

    def backward(self, top, propagate_down, bottom):
        self.refuse_backward_to(propagate_down, 1, "target")
        if not propagate_down[0]:
            return
        x = bottom[0].data
        grad = (torch.sigmoid(x) - bottom[1].data.view(x.shape)) * self.valid
        bottom[0].diff.copy_(grad * (self.loss_weight(top) / self._normalizer))


@register_layer("HingeLoss")
class HingeLossLayer(LossLayer):
    """One-vs-all hinge loss for N samples of K scores x[n,k] and labels l(n):

        m[n,k] = max(0, 1 + s[n,k] * x[n,k]),   s = -1 for k == l(n), +1 otherwise
        E = 1/N * sum m        (norm L1)    or    1/N * sum m^2     (norm L2)
        dE/dx = w/N * s * [m > 0]           or    2w/N * s * m
    """

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        self.expect(bottom[1].count() == bottom[0].shape[0],
                    f"Expect: one label per sample ({bottom[0].shape[0]}), Actual: label shape {bottom[1].shape}")

    def forward(self, bottom, top):
        num = bottom[0].shape[0]
        x = bottom[0].data.reshape(num, -1)
        labels, valid = self.read_labels(bottom[1], x.shape[1])
        self.sign = torch.ones_like(x)
        self.sign.scatter_(1, labels.view(num, 1), -1.0)
        self.margin = (1 + self.sign * x).clamp(min=0)
        norm = self.param.hinge_loss_param.norm
        if norm == caffe_pb2.HingeLossParameter.L1:
            loss = self.margin.sum()
        elif norm == caffe_pb2.HingeLossParameter.L2:
            loss = (self.margin * self.margin).sum()
        else:
            raise LayerError(f"unknown hinge norm {norm} (L1 or L2)", self.name, self.type)
        top[0].data.copy_(loss / num)

    def backward(self, top, propagate_down, bottom):
        self.refuse_backward_to(propagate_down, 1)
        if not propagate_down[0]:
            return
        num = bottom[0].shape[0]
        signed = self.sign * self.margin
        if self.param.hinge_loss_param.norm == caffe_pb2.HingeLossParameter.L1:
            grad = torch.sign(signed) * (self.loss_weight(top) / num)
        else:
            grad = signed * (2 * self.loss_weight(top) / num)
        bottom[0].diff.copy_(grad.view(bottom[0].shape))
