"""Convolution, Deconvolution and Im2col (Caffe's base_conv_layer, conv_layer, deconv_layer, im2col_layer).

Convolution, for each bottom/top pair (all pairs share one weight and bias):

    y[n, o, p] = b[o] + sum_{c in group(o), q} W[o, c, q] * x[n, c, p * stride - pad + q * dilation]

with W of shape (num_output, channels / group, k_1 .. k_d), zero padding, and output size per spatial axis
    out = (in + 2 * pad - ext) // stride + 1,    ext = dilation * (k - 1) + 1.
The backward pass is the usual triple: dx = W^T * dy (a transposed convolution), dW += x (*) dy,
db += sum of dy over batch and space.

Deconvolution is the transpose of that map: its weight has Caffe's layout (channels, num_output / group,
k_1 .. k_d) — the layout torch's conv_transpose uses too — and output size
    out = stride * (in - 1) + ext - 2 * pad.

The channel axis is `axis` (default 1); everything before it is batch, everything after it spatial (0 to 3
spatial axes here; Caffe's N-D im2col allows more).  Kernel, stride, pad come either as repeated fields
(once, or once per spatial axis) or as the 2-D kernel_h/_w, stride_h/_w, pad_h/_w; dilation is repeated only.

Im2col lays out, for each output position, the receptive field as a column: channel index c * K + j for
input channel c and kernel offset j (row-major over the kernel axes), the layout Caffe's im2col produces.
"""
import torch
import torch.nn.functional as F

from ..runtime import deferred
from ..core.blob import Blob
from ..core.filler import fill
from ..core.layer import Layer
from ..runtime.precision import lowered_call
from ..core.registry import register_layer


def _repeated(layer, cp, field, repeated, num_spatial, default):
    """One spatial parameter (kernel, stride or pad): `field_h`/`field_w` or the repeated field."""
    h, w, values = f"{field}_h", f"{field}_w", list(getattr(cp, repeated))
    if cp.HasField(h) or cp.HasField(w):
        layer.expect(num_spatial == 2, f"{h} & {w} can only be used for 2-D convolution; "
                                       f"Actual: {num_spatial} spatial axes")
        layer.expect(not values, f"Expect: either {repeated} or {h}/{w}, not both")
        return (getattr(cp, h), getattr(cp, w))
    allowed = (1, num_spatial) if default is None else (0, 1, num_spatial)
    layer.expect(len(values) in allowed,
                 f"Expect: {repeated} specified {'once' if default is None else 'at most once'} or once per "
                 f"spatial axis ({num_spatial}), Actual: {len(values)} values")
    if not values:
        return (default,) * num_spatial
    return tuple(values[0] if len(values) == 1 else values[i] for i in range(num_spatial))


def conv_geometry(layer, cp, num_spatial):
    """(kernel, stride, pad, dilation) tuples of a ConvolutionParameter, validated as Caffe does."""
    kernel = _repeated(layer, cp, "kernel", "kernel_size", num_spatial, None)
    stride = _repeated(layer, cp, "stride", "stride", num_spatial, 1)
    pad = _repeated(layer, cp, "pad", "pad", num_spatial, 0)
    dil = list(cp.dilation)
    layer.expect(len(dil) in (0, 1, num_spatial),
                 f"Expect: dilation specified at most once or once per spatial axis ({num_spatial}), "
                 f"Actual: {len(dil)} values")
    dilation = tuple(1 if not dil else dil[0] if len(dil) == 1 else dil[i] for i in range(num_spatial))
    layer.expect(all(k > 0 for k in kernel), f"Expect: kernel dimensions > 0, Actual: {kernel}")
    layer.expect(all(s > 0 for s in stride), f"Expect: stride dimensions > 0, Actual: {stride}")
    layer.expect(all(d > 0 for d in dilation), f"Expect: dilation > 0, Actual: {dilation}")
    return kernel, stride, pad, dilation


def _extents(kernel, dilation):
    return tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))


def _check_fits(layer, spatial, kernel, pad, dilation):
    """Kernel extent must fit in the padded input (Caffe would silently compute garbage or crash)."""
    for axis, (size, ext, p) in enumerate(zip(spatial, _extents(kernel, dilation), pad)):
        layer.expect(size + 2 * p >= ext,
                     f"Expect: kernel extent <= padded input on spatial axis {axis}, Actual: kernel extent "
                     f"{ext} (kernel {kernel[axis]}, dilation {dilation[axis]}) > input {size} + 2 * pad {p}")


class BaseConvolutionLayer(Layer):
    """Shared parameter handling of Convolution and Deconvolution; subclasses set `transposed`."""
    min_bottom_blobs = 1
    min_top_blobs = 1
    equal_num_bottom_top_blobs = True
    transposed = False

    def layer_setup(self, bottom, top):
        cp = self.param.convolution_param
        self.channel_axis = bottom[0].canonical_axis_index(cp.axis)
        self.num_spatial = bottom[0].num_axes - self.channel_axis - 1
        self.expect(self.num_spatial <= 3, f"Expect: at most 3 spatial axes, Actual: {self.num_spatial} "
                                           f"(bottom shape {bottom[0].shape}, axis {cp.axis})")
        self.kernel, self.stride, self.pad, self.dilation = conv_geometry(self, cp, self.num_spatial)
        self.channels = bottom[0].shape[self.channel_axis]
        self.num_output, self.group, self.bias_term = cp.num_output, cp.group, cp.bias_term
        self.expect(self.num_output > 0, f"Expect: num_output > 0, Actual: {self.num_output}")
        self.expect(self.group > 0, f"Expect: group > 0, Actual: {self.group}")
        self.expect(self.channels % self.group == 0,
                    f"Expect: group divides the input channels, Actual: {self.channels} channels, "
                    f"group {self.group}")
        self.expect(self.num_output % self.group == 0,
                    f"Expect: group divides num_output, Actual: num_output {self.num_output}, "
                    f"group {self.group}")
        if self.transposed:
            weight_shape = (self.channels, self.num_output // self.group) + self.kernel
        else:
            weight_shape = (self.num_output, self.channels // self.group) + self.kernel
        shapes = [weight_shape] + ([(self.num_output,)] if self.bias_term else [])
        if self.blobs:
            # Loaded weights: check them, never re-fill (Caffe: "Skipping parameter initialization").
            self.expect(len(self.blobs) == len(shapes),
                        f"Expect: {len(shapes)} parameter blobs (bias_term {self.bias_term}), "
                        f"Actual: {len(self.blobs)}")
            for i, (blob, shape) in enumerate(zip(self.blobs, shapes)):
                self.expect(blob.shape == shape, f"Expect: parameter {i} of shape {shape}, "
                                                 f"Actual: {blob.shape}")
        else:
            dtype, device = bottom[0].dtype, bottom[0].device
            self.blobs = [Blob(s, dtype=dtype, device=device, name=f"{self.name}.{i}")
                          for i, s in enumerate(shapes)]
            fill(cp.weight_filler, self.blobs[0])
            if self.bias_term:
                fill(cp.bias_filler, self.blobs[1])
        self.param_propagate_down = [True] * len(self.blobs)
        self.kernel_args = self._kernel_args()
        # Blobs of (N, C, spatial...) are the kernel's own layout: no views in and out (most nets).
        self.kernel_layout = self.channel_axis == 1 and self.num_spatial > 0

    def reshape(self, bottom, top):
        if self.shapes_unchanged(bottom, top):
            return
        first = bottom[0]
        self.expect(first.num_axes == self.channel_axis + 1 + self.num_spatial,
                    f"Expect: bottom with {self.channel_axis + 1 + self.num_spatial} axes (may not change), "
                    f"Actual: {first.shape}")
        self.expect(first.shape[self.channel_axis] == self.channels,
                    f"Expect: {self.channels} input channels, Actual: {first.shape[self.channel_axis]} "
                    f"(bottom shape {first.shape})")
        for i, b in enumerate(bottom[1:], 1):
            self.expect(b.shape == first.shape, f"Expect: all bottoms of shape {first.shape}, "
                                                f"Actual: bottom[{i}] has {b.shape}")
        spatial = first.shape[self.channel_axis + 1:]
        out = self.output_spatial(spatial)
        self.expect(all(o > 0 for o in out), f"Expect: positive output size, Actual: {out} "
                                              f"for input {spatial}")
        self.batch = first.count(0, self.channel_axis)
        for t in top:
            t.reshape(first.shape[:self.channel_axis] + (self.num_output,) + tuple(out))
        self.remember_shapes(bottom, top)

    # The kernel sees (batch, channels, *spatial); 0 spatial axes become one axis of size 1.  A view (blob
    # tensors are contiguous), so that the forward can write the top through it.
    def _as_kernel_input(self, tensor, channels):
        if self.kernel_layout:
            return tensor
        spatial = tensor.shape[self.channel_axis + 1:] or (1,)
        return tensor.view((self.batch, channels) + tuple(spatial))

    def _kernel_args(self):
        n = max(self.num_spatial, 1)
        fix = (lambda t, d: t if self.num_spatial else (d,))
        return fix(self.stride, 1), fix(self.pad, 0), fix(self.dilation, 1), (0,) * n

    def _kernel_weight(self):
        w = self.blobs[0].data
        return w if self.num_spatial else w.reshape(w.shape + (1,))

    def forward(self, bottom, top):
        stride, pad, dilation, out_pad = self.kernel_args
        weight = self._kernel_weight()
        bias = self.blobs[1].data if self.bias_term else None
        for b, t in zip(bottom, top):
            x = self._as_kernel_input(b.data, self.channels)
            shape = t.data.shape
            if t.release_data():
                # Nobody else sees the top's memory: take the kernel's own output, without the copy below.
                y = lowered_call(torch.convolution, x, weight, bias, stride, pad, dilation, self.transposed,
                                 out_pad, self.group)
                t.data = y if self.kernel_layout else y.reshape(shape)
            else:
                # Into the top's memory, so that arrays held on the top (pycaffe) see the new values, as in
                # Caffe.  torch's convolution.out computes into a temporary and copies it over.
                lowered_call(torch.ops.aten.convolution.out, x, weight, bias, stride, pad, dilation,
                             self.transposed, out_pad, self.group,
                             out=self._as_kernel_input(t.data, self.num_output))

    def backward(self, top, propagate_down, bottom):
        stride, pad, dilation, out_pad = self.kernel_args
        weight = self._kernel_weight()
        want_w = self.param_propagate(0)
        want_b = self.bias_term and self.param_propagate(1)
        for i, (b, t) in enumerate(zip(bottom, top)):
            if not (propagate_down[i] or want_w or want_b):
                continue
            x = self._as_kernel_input(b.data, self.channels)
            dy = self._as_kernel_input(t.diff, self.num_output)
            fresh_dx = bool(propagate_down[i]) and b.release_diff()
            dx, dw, db = lowered_call(
                torch.ops.aten.convolution_backward, dy, x, weight, [self.num_output] if self.bias_term else None,
                stride, pad, dilation, self.transposed, out_pad, self.group,
                [bool(propagate_down[i]), want_w, want_b])
            if propagate_down[i]:
                if not self.kernel_layout:
                    dx = dx.reshape(b.data.shape)
                if fresh_dx:
                    b.diff = dx
                else:
                    b.store_diff(dx)
            params, grads = [], []          # accumulated (Caffe), gathered over the Net's backward pass
            if want_w:
                params.append(self.blobs[0])
                grads.append(dw)
            if want_b:
                params.append(self.blobs[1])
                grads.append(db)
            if params:
                deferred.add_to_diffs(params, grads)


@register_layer("Convolution")
class ConvolutionLayer(BaseConvolutionLayer):
    def output_spatial(self, spatial):
        _check_fits(self, spatial, self.kernel, self.pad, self.dilation)
        return [(size + 2 * p - ext) // s + 1
                for size, p, ext, s in zip(spatial, self.pad, _extents(self.kernel, self.dilation), self.stride)]


@register_layer("Deconvolution")
class DeconvolutionLayer(BaseConvolutionLayer):
    transposed = True

    def output_spatial(self, spatial):
        return [s * (size - 1) + ext - 2 * p
                for size, p, ext, s in zip(spatial, self.pad, _extents(self.kernel, self.dilation), self.stride)]


@register_layer("Im2col")
class Im2colLayer(Layer):
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def layer_setup(self, bottom, top):
        cp = self.param.convolution_param
        self.channel_axis = bottom[0].canonical_axis_index(cp.axis)
        self.num_spatial = bottom[0].num_axes - self.channel_axis - 1
        self.expect(1 <= self.num_spatial <= 3, f"Expect: 1 to 3 spatial axes, Actual: {self.num_spatial} "
                                                f"(bottom shape {bottom[0].shape}, axis {cp.axis})")
        self.kernel, self.stride, self.pad, self.dilation = conv_geometry(self, cp, self.num_spatial)
        self._onehot = None

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        self.expect(len(shape) == self.channel_axis + 1 + self.num_spatial,
                    f"Expect: bottom with {self.channel_axis + 1 + self.num_spatial} axes (may not change), "
                    f"Actual: {shape}")
        self.channels, self.spatial = shape[self.channel_axis], shape[self.channel_axis + 1:]
        _check_fits(self, self.spatial, self.kernel, self.pad, self.dilation)
        self.out = tuple((size + 2 * p - ext) // s + 1 for size, p, ext, s in
                         zip(self.spatial, self.pad, _extents(self.kernel, self.dilation), self.stride))
        self.batch = bottom[0].count(0, self.channel_axis)
        kernel_count = 1
        for k in self.kernel:
            kernel_count *= k
        top[0].reshape(shape[:self.channel_axis] + (self.channels * kernel_count,) + self.out)

    # 1-D and 2-D use unfold/fold (1-D as a 2-D image of height 1); 3-D a grouped convolution whose
    # one-hot filters pick each kernel offset: output channel c * K + j reads channel c at offset j.
    def _fold_args(self):
        lead = () if self.num_spatial == 2 else (1,)
        return dict(kernel_size=lead + self.kernel, dilation=lead + self.dilation,
                    padding=(0,) * len(lead) + self.pad, stride=lead + self.stride)

    def _onehot_weight(self, like):
        count = 1
        for k in self.kernel:
            count *= k
        key = (self.channels, self.kernel, like.dtype, like.device)
        if self._onehot is None or self._onehot[0] != key:
            eye = torch.eye(count, dtype=like.dtype, device=like.device).reshape((count, 1) + self.kernel)
            self._onehot = (key, eye.repeat((self.channels,) + (1,) * (1 + self.num_spatial)))
        return self._onehot[1]

    def _image_shape(self):
        return (self.batch, self.channels) + ((1,) if self.num_spatial == 1 else ()) + self.spatial

    def forward(self, bottom, top):
        if self.num_spatial <= 2:
            cols = F.unfold(bottom[0].data.reshape(self._image_shape()), **self._fold_args())
        else:
            x = bottom[0].data.reshape(self._image_shape())
            with torch.autocast(x.device.type, enabled=False):     # a copy of values: never rounded
                cols = F.conv3d(x, self._onehot_weight(x), None, self.stride, self.pad, self.dilation,
                                self.channels)
        top[0].store_data(cols.reshape(top[0].shape))

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].diff
        rows = dy.shape[self.channel_axis]
        if self.num_spatial <= 2:
            dx = F.fold(dy.reshape(self.batch, rows, -1), self._image_shape()[2:], **self._fold_args())
        else:
            x = bottom[0].data.reshape(self._image_shape())
            dx = torch.ops.aten.convolution_backward(
                dy.reshape((self.batch, rows) + self.out), x, self._onehot_weight(x), None, self.stride,
                self.pad, self.dilation, False, (0, 0, 0), self.channels, [True, False, False])[0]
        bottom[0].store_diff(dx.reshape(bottom[0].shape))
