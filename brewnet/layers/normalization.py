"""Normalization layers: BatchNorm, Scale, Bias and MVN, as in BVLC Caffe 1.0.

Caffe's BatchNorm only standardizes; the learned affine part (gamma, beta) is a separate Scale layer with
`bias_term: true` placed after it.  Shapes are read as (outer, dim, inner) around the axes a layer works on,
so every forward and backward is a handful of broadcast torch ops.
"""
import torch
import torch.nn.functional as F

from ..runtime import deferred
from ..core.blob import Blob, flat, four_axes
from ..core.filler import fill
from ..core.layer import Layer
from ..core.registry import create_layer, register_layer
from ..errors import BrewnetError, LayerError
from ..proto import caffe_pb2
from .batch_norm_scale import BatchNormScale


@register_layer("BatchNorm")
class BatchNormLayer(Layer):
    """Standardize each channel c over the batch and the spatial positions:

        y = (x - mean_c) / sqrt(var_c + eps)
    TRAIN (use_global_stats false): mean and the biased variance come from this batch, and the running
    statistics are updated in the three blobs [sum of means, sum of variances, scale factor s]:
        s <- maf * s + 1;  blob0 <- maf * blob0 + mean;  blob1 <- maf * blob1 + m/(m-1) * var
    (maf = moving_average_fraction, m = values per channel; m/(m-1) makes the stored variance unbiased).
        dE/dx = (dy - mean(dy) - y * mean(dy * y)) / sqrt(var + eps)     means per channel
    TEST (use_global_stats true, the default in the TEST phase): mean = blob0 / s, var = blob1 / s
    (0 when s == 0), and dE/dx = dy / sqrt(var + eps).
    The blobs are statistics, not parameters: they never receive a gradient.
    """
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1
    fusion = BatchNormScale         # with a following in-place Scale: one affine batch-norm kernel each way

    def layer_setup(self, bottom, top):
        p = self.param.batch_norm_param
        self.moving_average_fraction = p.moving_average_fraction
        self.use_global_stats = p.use_global_stats if p.HasField("use_global_stats") \
            else self.phase == caffe_pb2.TEST
        self.eps = p.eps
        self.channels = 1 if bottom[0].num_axes == 1 else bottom[0].shape[1]
        if self.blobs:
            expected = [(self.channels,), (self.channels,), (1,)]
            self.expect(len(self.blobs) == 3 and all(b.count() == e[0] for b, e in zip(self.blobs, expected)),
                        f"Expect: 3 blobs (mean, variance, scale factor) of {self.channels}, {self.channels} "
                        f"and 1 values, Actual: {[b.shape for b in self.blobs]}")
        else:
            like = dict(dtype=bottom[0].dtype, device=bottom[0].device)
            self.blobs = [Blob((self.channels,), name=f"{self.name}.0", **like),
                          Blob((self.channels,), name=f"{self.name}.1", **like),
                          Blob((1,), name=f"{self.name}.2", **like)]
        # Caffe 1.0 pins every statistics blob to lr_mult 0: it appends `param { lr_mult: 0 }` to its own
        # LayerParameter for each blob the prototxt leaves unspecified, and refuses a nonzero lr_mult.  We do
        # the same on self.layer_param, so a Net reading layer.layer_param.param[i].lr_mult after setup (as
        # Caffe's AppendParam does) never updates them, and we turn their param_propagate_down off.
        specs = self.layer_param.param
        for i in range(len(self.blobs)):
            if i >= len(specs):
                specs.add().lr_mult = 0.0
            else:
                self.expect(specs[i].lr_mult == 0.0,
                            f"Expect: lr_mult 0 for the batch statistics (param {i}), "
                            f"Actual: lr_mult {specs[i].lr_mult}. Cannot configure batch normalization "
                            "statistics as layer parameters")
            self.set_param_propagate_down(i, False)

    def reshape(self, bottom, top):
        if self.shapes_unchanged(bottom, top):
            return
        if bottom[0].num_axes > 1:
            self.expect(bottom[0].shape[1] == self.channels,
                        f"Expect: {self.channels} channels, Actual: {bottom[0].shape[1]} in shape {bottom[0].shape}")
        top[0].reshape_like(bottom[0])
        num = bottom[0].shape[0] if bottom[0].num_axes else 1
        self.split = (num, self.channels, bottom[0].count() // max(1, num * self.channels))
        self.remember_shapes(bottom, top)

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.split)
        if self.use_global_stats:
            mean, var = self.global_stats()
            self.invstd = torch.rsqrt(var + self.eps)
            self.x_norm = F.batch_norm(x, mean, var, None, None, False, 0.0, self.eps)
        else:
            self.x_norm, _, self.invstd = self.normalize_batch(x)
        del x
        shape = top[0].shape
        if self.top_data_kept and top[0].release_data():
            # Nothing rewrites the top before backward and nothing else holds its memory: x_norm becomes it.
            top[0].data = self.x_norm.view(shape)
        else:
            # x_norm stays ours (backward needs it even when later layers overwrite the top in place).
            top[0].data.copy_(self.x_norm.view(shape))

    # The two halves of forward, shared with the Net's fused BatchNorm + Scale (batch_norm_scale.py).
    def global_stats(self):
        """(mean, variance) from the running sums: blob0 / s and blob1 / s (0 when s == 0)."""
        s = self.blobs[2].data.reshape(())
        factor = torch.where(s == 0, torch.zeros_like(s), 1 / s)
        return self.blobs[0].data * factor, self.blobs[1].data * factor

    def normalize_batch(self, x, weight=None, bias=None):
        """Normalize x (N, C, inner) with this batch's statistics, then * weight + bias per channel if given;
        add the statistics to the running sums.  Returns (y, batch mean, 1 / sqrt(var + eps))."""
        # torch's fused kernel: batch mean and 1/sqrt(var + eps) in one pass over x (two-pass variance,
        # accumulated in double), y in a second.  With momentum 1 its "running" outputs are exactly this
        # batch's mean and unbiased variance m/(m-1) * var, the values Caffe adds to its blobs.
        stats = self._batch_statistics(x)
        y, batch_mean, invstd = torch.ops.aten.native_batch_norm(
            x, weight, bias, stats[0], stats[1], True, 1.0, self.eps)
        self._add_to_running_sums(x, stats)
        return y, batch_mean, invstd

    def cudnn_applies(self, x, weight):
        """Whether normalize_batch_cudnn can take x: on CUDA, float32 as the weight (the case checked on a GPU
        against the native kernels, tests/runtime/test_fusion.py in GPU mode), with more than one value per
        channel (cuDNN's unbiased variance divides by m - 1).  No test of eps: cuDNN 8 and later have no
        minimum, and Caffe's default, the proto float 1e-5, reads as 9.99999975e-06 here."""
        return (x.is_cuda and weight is not None and x.dtype == torch.float32
                and weight.dtype == x.dtype and torch.backends.cudnn.enabled
                and x.numel() // self.channels > 1 and x.numel() < 2 ** 31 - 1)

    def normalize_batch_cudnn(self, x, weight, bias=None):
        """normalize_batch through cuDNN's kernels (the fused BatchNorm + Scale on a GPU: on ResNet-50 they
        take 2/3 of the time torch's native ones do).  Returns (y, batch mean, 1 / sqrt(var + eps), cuDNN's
        reserve space, which its backward reads).  With an average factor of 1 cuDNN's running outputs are
        the batch mean and the unbiased variance, as the native kernel's."""
        stats = self._batch_statistics(x)
        if bias is None:
            bias = torch.zeros_like(weight)
        y, batch_mean, invstd, reserve = torch.ops.aten.cudnn_batch_norm(
            four_axes(x), weight, bias, stats[0], stats[1], True, 1.0, self.eps)
        self._add_to_running_sums(x, stats)
        return y.view(x.shape), batch_mean, invstd, reserve

    def _add_to_running_sums(self, x, stats):
        """blob <- maf * blob + value for the three blobs and stats (batch mean, unbiased variance, 1), rounded
        as Caffe's axpby (scale, then add); within a Net pass, together with every other BatchNorm's
        (runtime/running_sums.py, or runtime/deferred.py for a layer outside the Net's packed statistics)."""
        if x.numel() // self.channels <= 1:
            stats[1].zero_()        # one value per channel: variance 0 (Caffe's correction factor is 1)
        if self.running_sums is None or not self.running_sums.add(self):
            deferred.scale_add([flat(b.data) for b in self.blobs], self.moving_average_fraction, list(stats))

    # The Net's packed statistics this layer belongs to (runtime/running_sums.py), if any: its blobs and batch
    # buffers are then views of one tensor per net that a pass updates in two ops.
    running_sums = None

    def keeps_running_statistics(self):
        """Whether forward adds this batch's statistics to the three blobs (TRAIN: use_global_stats off), so
        that the Net may pack them: the packing reads moving_average_fraction, points _stats_buffers at its
        batch tensor and sets running_sums."""
        return not self.use_global_stats and len(self.blobs) == 3

    def _batch_statistics(self, x):
        """Buffers for the kernel's "running" outputs (this batch's mean and unbiased variance, momentum 1),
        kept across iterations, and the 1 added to the scale factor.  Momentum 1 still reads the old values
        (0 * old): they are the last batch's statistics, non-finite only if the blobs already are."""
        buffers = getattr(self, "_stats_buffers", None)
        if buffers is None or buffers[0].shape[0] != self.channels or buffers[0].dtype != x.dtype \
                or buffers[0].device != x.device:
            buffers = self._stats_buffers = (x.new_zeros(self.channels), x.new_zeros(self.channels),
                                             x.new_ones(1))
        return buffers

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].diff.reshape(self.split)
        if self.use_global_stats:
            dx = dy * self.invstd.view(1, -1, 1)
        else:
            # (dy - mean(dy) - y * mean(dy * y)) * invstd in one fused kernel: torch's batch-norm backward
            # fed the normalized y as its input (saved mean 0, saved invstd 1) and invstd as the weight.
            ones = self.invstd.new_ones(self.channels)
            dx = torch.ops.aten.native_batch_norm_backward(
                dy, self.x_norm, self.invstd, None, None, ones.new_zeros(self.channels), ones, True,
                self.eps, [True, False, False])[0]
        del dy
        dx = dx.view(bottom[0].shape)
        if bottom[0].release_diff():
            bottom[0].diff = dx         # nothing else holds the old diff: take the kernel's output
        else:
            bottom[0].store_diff(dx)


def _param_shape(layer, blob, axis, num_axes, what):
    """The shape of a learned blob applied to bottom axes [axis, axis + num_axes) (num_axes -1: to the end)."""
    layer.expect(num_axes >= -1, f"Expect: num_axes >= -1 (-1: to the end of bottom 0), Actual: {num_axes}")
    try:
        axis = blob.canonical_axis_index(axis)
    except BrewnetError as e:
        raise LayerError(str(e), layer.name, layer.type) from None
    if num_axes >= 0:
        layer.expect(blob.num_axes >= axis + num_axes,
                     f"Expect: the {what} blob to fit in bottom 0 from axis {axis}, Actual: {num_axes} axes "
                     f"past bottom shape {blob.shape}")
        return blob.shape[axis:axis + num_axes]
    return blob.shape[axis:]


def _broadcast_split(layer, bottom0, operand, axis_param, what):
    """(outer, dim, inner) of bottom0 around the operand's axes, checking that the shapes agree."""
    if operand.num_axes == 0:
        axis = 0        # a scalar applies to everything
    else:
        try:
            axis = bottom0.canonical_axis_index(axis_param)
        except BrewnetError as e:
            raise LayerError(str(e), layer.name, layer.type) from None
    layer.expect(bottom0.num_axes >= axis + operand.num_axes and
                 tuple(bottom0.shape[axis:axis + operand.num_axes]) == tuple(operand.shape),
                 f"Expect: {what} shape equal to bottom 0's shape from axis {axis}, "
                 f"Actual: {what} {operand.shape} vs. bottom {bottom0.shape}")
    return bottom0.count(0, axis), operand.count(), bottom0.count(axis + operand.num_axes)


@register_layer("Bias")
class BiasLayer(Layer):
    """y = x + b, with b broadcast over bottom axes [axis, axis + num_axes).

    b is bottom[1] when given, else a learned blob (bias_param.filler, constant 0 by default).
        dE/dx = dE/dy;   dE/db = sum of dE/dy over the broadcast axes (accumulated when b is a parameter)
    """
    min_bottom_blobs = 1
    max_bottom_blobs = 2
    exact_num_top_blobs = 1

    def layer_setup(self, bottom, top):
        if len(bottom) == 1 and not self.blobs:
            p = self.param.bias_param
            shape = _param_shape(self, bottom[0], p.axis, p.num_axes, "bias")
            blob = Blob(shape, dtype=bottom[0].dtype, device=bottom[0].device, name=f"{self.name}.0")
            self.blobs = [fill(p.filler, blob)]
        self.param_propagate_down = [True] * len(self.blobs)

    def _bias(self, bottom):
        return bottom[1] if len(bottom) > 1 else self.blobs[0]

    def reshape(self, bottom, top):
        self.split = _broadcast_split(self, bottom[0], self._bias(bottom), self.param.bias_param.axis, "bias")
        if top[0] is not bottom[0]:
            top[0].reshape_like(bottom[0])

    def forward(self, bottom, top):
        outer, dim, inner = self.split
        b = self._bias(bottom).data.reshape(1, dim, 1)
        y = top[0].data.view(self.split)
        if top[0] is bottom[0]:
            y.add_(b)
        else:
            y.copy_(bottom[0].data.view(self.split) + b)

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff.view(self.split)
        if propagate_down[0] and top[0] is not bottom[0]:
            bottom[0].diff.copy_(top[0].diff.view(bottom[0].shape))
        db = dy.sum(dim=(0, 2))
        if len(bottom) > 1:
            if propagate_down[1]:
                bottom[1].diff.copy_(db.view(bottom[1].shape))
        elif self.param_propagate(0):
            self.blobs[0].diff.add_(db.view(self.blobs[0].shape))


@register_layer("Scale")
class ScaleLayer(Layer):
    """y = s * x (+ b), with s (and b) broadcast over bottom axes [axis, axis + num_axes).

    s is bottom[1] when given, else a learned blob (scale_param.filler, constant 1 by default).  With
    bias_term a learned bias b of the same shape follows (bias_filler, constant 0 by default); it is the last
    of self.blobs, computed by an internal Bias layer sharing that blob, as in Caffe.
        dE/dx = s * dE/dy;   dE/ds = sum of dE/dy * x over the broadcast axes;   dE/db = sum of dE/dy
    Parameter diffs accumulate; a bottom scale's diff is overwritten.  Safe in place (x is kept).
    """
    min_bottom_blobs = 1
    max_bottom_blobs = 2
    exact_num_top_blobs = 1

    def layer_setup(self, bottom, top):
        p = self.param.scale_param
        if len(bottom) == 1 and not self.blobs:
            shape = _param_shape(self, bottom[0], p.axis, p.num_axes, "scale")
            filler = caffe_pb2.FillerParameter()
            if p.HasField("filler"):
                filler.CopyFrom(p.filler)
            else:
                filler.type, filler.value = "constant", 1.0
            blob = Blob(shape, dtype=bottom[0].dtype, device=bottom[0].device, name=f"{self.name}.0")
            self.blobs = [fill(filler, blob)]
        self.bias_layer = None
        if p.bias_term:
            self._setup_bias(bottom, top, p)
        self.param_propagate_down = [True] * len(self.blobs)

    def _setup_bias(self, bottom, top, p):
        bias_param = caffe_pb2.LayerParameter()
        bias_param.CopyFrom(self.layer_param)
        # The inner layer must neither preload this layer's blobs nor put a loss weight on our top.
        bias_param.ClearField("blobs")
        bias_param.ClearField("loss_weight")
        bias_param.type = "Bias"
        bias_param.bias_param.axis = p.axis
        bias_param.bias_param.num_axes = bottom[1].num_axes if len(bottom) > 1 else p.num_axes
        bias_param.bias_param.filler.CopyFrom(p.bias_filler)
        self.bias_layer = create_layer(bias_param)
        self.bias_layer.setup([bottom[0]], top)
        if len(self.blobs) + len(bottom) < 3:
            # Fresh bias: adopt the one the inner layer created and filled.
            self.blobs.append(self.bias_layer.blobs[0])
        # (else the bias was preloaded as our last blob; it is handed to the inner layer on every call)

    def _scale(self, bottom):
        return bottom[1] if len(bottom) > 1 else self.blobs[0]

    def reshape(self, bottom, top):
        # The scale and bias blobs count as bottoms here: their shapes decide the splits too.
        operands = list(bottom) + [self._scale(bottom)] + ([self.blobs[-1]] if self.bias_layer else [])
        if self.shapes_unchanged(operands, top):
            return
        self.split = _broadcast_split(self, bottom[0], self._scale(bottom), self.param.scale_param.axis, "scale")
        if top[0] is not bottom[0]:
            top[0].reshape_like(bottom[0])
        if self.bias_layer is not None:
            self.bias_layer.blobs = [self.blobs[-1]]
            self.bias_layer.reshape([top[0]], top)
        self.remember_shapes(operands, top)

    def forward(self, bottom, top):
        outer, dim, inner = self.split
        x = bottom[0].data.view(self.split)
        # In place, the input is about to be overwritten but the scale's gradient needs it.
        self.x = x.clone() if top[0] is bottom[0] else x
        s = self._scale(bottom).data.reshape(1, dim, 1)
        y = top[0].data.view(self.split)
        if self.bias_layer is not None:
            # y = x * s + b in one pass (what the inner Bias layer would add, fused).
            self.bias_layer.blobs = [self.blobs[-1]]
            torch.addcmul(self.blobs[-1].data.reshape(1, dim, 1), self.x, s, out=y)
        else:
            torch.mul(self.x, s, out=y)

    def backward(self, top, propagate_down, bottom):
        if self.bias_layer is not None and self.param_propagate(len(self.blobs) - 1):
            self.bias_layer.blobs = [self.blobs[-1]]
            self.bias_layer.param_propagate_down = [True]
            self.bias_layer.backward(top, [False], [top[0]])
        outer, dim, inner = self.split
        dy = top[0].diff.view(self.split)
        scale = self._scale(bottom)
        learned = len(bottom) == 1
        if (learned and self.param_propagate(0)) or (not learned and propagate_down[1]):
            ds = (dy * self.x).sum(dim=(0, 2)).view(scale.shape)
            if learned:
                scale.diff.add_(ds)
            else:
                scale.diff.copy_(ds)
        if propagate_down[0]:
            # Written last: in place, bottom 0's diff is dy.
            torch.mul(dy, scale.data.reshape(1, dim, 1), out=bottom[0].diff.view(self.split))


def _legacy_shape(blob):
    return tuple(blob.shape[i] if i < blob.num_axes else 1 for i in range(4))


@register_layer("MVN")
class MVNLayer(Layer):
    """Mean-variance normalization of each sample's channels (or of each whole sample, across_channels):

        y = x - mean                                (normalize_variance: false)
        y = (x - mean) / (sqrt(var) + eps)          (normalize_variance: true; eps is added to the std)
        dE/dx = dy - mean(dy)                                        without variance
        dE/dx = (dy - mean(dy) - y * mean(dy * y)) / (sqrt(var) + eps)   with variance (Caffe's formula)
    Means over H x W (or C x H x W).  The top is 4-D (num, channels, height, width), as in Caffe.
    """
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def reshape(self, bottom, top):
        self.expect(bottom[0].num_axes <= 4,
                    f"Expect: a blob of at most 4 axes (N x C x H x W), Actual: shape {bottom[0].shape}")
        shape = _legacy_shape(bottom[0])
        top[0].reshape(shape)       # in place too: Caffe reshapes the shared blob to 4-D
        groups = shape[0] if self.param.mvn_param.across_channels else shape[0] * shape[1]
        self.split = (groups, bottom[0].count() // max(1, groups))

    def forward(self, bottom, top):
        p = self.param.mvn_param
        x = bottom[0].data.reshape(self.split)
        y = x - x.mean(dim=1, keepdim=True)
        if p.normalize_variance:
            self.std = (y * y).mean(dim=1, keepdim=True).sqrt() + p.eps
            y = y / self.std
        self.y = y
        top[0].data.view(self.split).copy_(y)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].diff.reshape(self.split)
        dx = dy - dy.mean(dim=1, keepdim=True)
        if self.param.mvn_param.normalize_variance:
            dx = (dx - self.y * (dy * self.y).mean(dim=1, keepdim=True)) / self.std
        bottom[0].diff.view(self.split).copy_(dx)
