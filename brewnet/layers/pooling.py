"""Pooling and SPP (Caffe's pooling_layer, spp_layer).

Pooling works on (N, C, H, W).  Output size per spatial axis (round_mode CEIL, the default, or FLOOR):

    out = ceil((in + 2 * pad - kernel) / stride) + 1

and, when any pad is nonzero, the last window must start inside the image plus its leading pad:
if (out - 1) * stride >= in + pad then out -= 1.  Window (ph, pw) covers rows
hstart = ph * stride - pad .. hstart + kernel, clipped to the image.

  MAX         y = max of the clipped window; ties go to the first element in row-major order.  The
              optional second top is the argmax as a float index h * W + w in its channel plane
              (-1 for a window that holds no image element).  dx[argmax] += dy.
  AVE         y = sum of the clipped window / pool_size, where pool_size counts the window clipped to
              the *padded* image, (min(hstart + k, H + pad) - hstart) * (same for w): padding cells
              count as zeros, cells beyond the padding do not.  dx gets dy / pool_size from each window.
  STOCHASTIC  (no padding; windows clipped to the image) TRAIN: pick element i of the window with
              probability x_i / sum(x) (x >= 0, as after a ReLU), y = x_i, dx[i] += dy.
              TEST: y = sum(x^2) / sum(x), the probability-weighted average.

global_pooling takes the whole image as the kernel.

SPP pools the image into a pyramid: level l has 2^l x 2^l bins, pooled with kernel = ceil(in / bins),
stride = kernel and pad = (kernel * bins - in + 1) // 2; the levels are flattened and concatenated
(channel-major within a level), or, for pyramid_height 1, the single 1x1 level is the 4-D top itself.
"""
import math

import torch
import torch.nn.functional as F

from ..core.blob import Blob
from ..core.layer import Layer
from ..core.registry import register_layer
from ..errors import LayerError
from ..proto import caffe_pb2

FLT_MAX = 3.4028234663852886e38
FLT_MIN = 1.1754943508222875e-38
P = caffe_pb2.PoolingParameter


def _torch_pooled_size(size, kernel, stride, pad, ceil_mode):
    """The output size torch's pooling kernels would produce (to know when they compute Caffe's windows)."""
    out = (size + 2 * pad - kernel + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def expect_4d(layer, blob):
    """Pooling and SPP work on (num, channels, height, width) blobs only."""
    layer.expect(blob.num_axes == 4, f"Expect: a 4-axis (num, channels, height, width) bottom, "
                                     f"Actual: {blob.shape}")


class PoolGeometry:
    """Caffe's pooling windows over an (H, W) image; every argument is an (h, w) pair."""

    def __init__(self, size, kernel, stride, pad, ceil_mode=True):
        self.size, self.kernel, self.stride, self.pad = tuple(size), tuple(kernel), tuple(stride), tuple(pad)
        rounding = math.ceil if ceil_mode else math.floor
        out = [int(rounding((n + 2 * p - k) / s)) + 1 for n, k, s, p in zip(size, kernel, stride, pad)]
        if any(pad):
            out = [o - 1 if (o - 1) * s >= n + p else o for o, n, s, p in zip(out, size, stride, pad)]
        self.out = tuple(out)
        # Padding after the image that makes plain (padding-free, floor) pooling see exactly these windows;
        # negative means the image's tail lies in no window and is cut off.
        self.tail = tuple((o - 1) * s + k - n - p for o, n, k, s, p in zip(out, size, kernel, stride, pad))
        # torch's kernels take the fast path when they compute the same windows (pad <= kernel / 2, and the
        # last-window rule agrees: torch applies it in ceil mode even without padding, Caffe only with).
        self.torch_ok = all(
            p <= k // 2 and _torch_pooled_size(n, k, s, p, ceil_mode) == o
            for n, k, s, p, o in zip(size, kernel, stride, pad, out))
        self.ceil_mode = ceil_mode

    def padded(self, x, value=0.0):
        """x padded by `pad` before and `tail` after the image (cut where tail < 0)."""
        (ph, pw), (th, tw) = self.pad, self.tail
        return F.pad(x, (pw, tw, ph, th), value=value)

    def unpadded(self, grad):
        """The inverse of `padded` for a gradient: drop the padding, restore a cut-off tail as zeros."""
        (ph, pw), (th, tw) = self.pad, self.tail
        return F.pad(grad, (-pw, -tw, -ph, -th))

    def divisor(self, like):
        """Caffe's AVE pool_size per output, the window clipped to the padded image: (out_h, out_w)."""
        sizes = []
        for n, k, s, p, o in zip(self.size, self.kernel, self.stride, self.pad, self.out):
            start = torch.arange(o, dtype=like.dtype, device=like.device) * s - p
            sizes.append(torch.clamp(start + k, max=n + p) - start)
        return sizes[0][:, None] * sizes[1][None, :]


def _torch_max_pool(x, kernel, stride, pad=(0, 0), ceil_mode=False):
    """torch's max pooling with argmax.  Its CPU kernel is far slower on NCHW than on channels-last input,
    where it gives the same windows, first-maximum ties, NaN handling and plane indices: on the CPU converting
    there and back wins (benchmarks/layers.py times both)."""
    if x.device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)
    return F.max_pool2d(x, kernel, stride, pad, ceil_mode=ceil_mode, return_indices=True)


def max_pool(x, g, out=None, indices=None):
    """(y, idx): window maxima of x (N, C, H, W) and their plane indices h * W + w (int64, -1 if empty).
    On torch's fast path, `out` and `indices` (given together) receive the results."""
    if g.torch_ok:
        if out is not None and x.device.type != "cpu":
            return torch.ops.aten.max_pool2d_with_indices.out(x, g.kernel, g.stride, g.pad, (1, 1), g.ceil_mode,
                                                              out=out, indices=indices)
        y, idx = _torch_max_pool(x, g.kernel, g.stride, g.pad, g.ceil_mode)
        if out is None:
            return y.contiguous(), idx.contiguous()
        return out.copy_(y), indices.copy_(idx)
    y, idx = _torch_max_pool(g.padded(x, -math.inf), g.kernel, g.stride)
    y, idx = y.contiguous(), idx.contiguous()
    width = g.size[1] + g.pad[1] + g.tail[1]
    idx = (idx // width - g.pad[0]) * g.size[1] + idx % width - g.pad[1]
    # A window with no image element: Caffe leaves -FLT_MAX and index -1.
    empty = y == -math.inf
    return y.masked_fill(empty, -FLT_MAX), idx.masked_fill(empty, -1)


def max_values(x, g):
    """Window maxima without argmax (forward-only use).  Where torch's kernel computes Caffe's windows it is
    the fastest way even with its argmax (on the CPU through channels-last, see _torch_max_pool); elsewhere
    the maximum over each window's columns, then over its rows (exact, so the values equal max_pool's)."""
    if g.torch_ok:
        if x.device.type == "cpu":
            return max_pool(x, g)[0]
        return F.max_pool2d(x, g.kernel, g.stride, g.pad, ceil_mode=g.ceil_mode)
    padded = any(g.pad) or any(g.tail)
    if padded:
        x = g.padded(x, -math.inf)
    y = x.unfold(3, g.kernel[1], g.stride[1]).amax(-1).unfold(2, g.kernel[0], g.stride[0]).amax(-1)
    # A window with no image element: Caffe leaves -FLT_MAX (as max_pool).
    return y.masked_fill_(y == -math.inf, -FLT_MAX) if padded else y


def scatter_grad(dy, idx, shape):
    """dx with dx[n, c, idx] += dy for every output (entries with idx -1, empty windows, are dropped)."""
    n, c, h, w = shape
    src, index = dy.reshape(n * c, -1), idx.reshape(n * c, -1)
    invalid = index < 0
    src, index = src.masked_fill(invalid, 0), index.clamp(min=0)
    dx = dy.new_zeros(n * c, h * w)
    dx.scatter_add_(1, index, src)
    return dx.view(shape)


def ave_pool(x, g, out=None):
    """Window averages of x; on torch's fast path written into `out` when given."""
    if g.torch_ok:
        if out is not None:
            return torch.ops.aten.avg_pool2d.out(x, g.kernel, g.stride, g.pad, g.ceil_mode, True, None, out=out)
        return F.avg_pool2d(x, g.kernel, g.stride, g.pad, ceil_mode=g.ceil_mode, count_include_pad=True)
    sums = F.avg_pool2d(g.padded(x), g.kernel, g.stride, divisor_override=1)
    return sums / g.divisor(x)


def ave_pool_grad(dy, x, g, out=None):
    """dx of ave_pool; on torch's fast path written into `out` (overwritten) when given."""
    if g.torch_ok:
        if out is not None:
            return torch.ops.aten.avg_pool2d_backward.grad_input(dy, x, g.kernel, g.stride, g.pad, g.ceil_mode,
                                                                 True, None, grad_input=out)
        return torch.ops.aten.avg_pool2d_backward(dy, x, g.kernel, g.stride, g.pad, g.ceil_mode, True, None)
    padded_shape = x.shape[:2] + tuple(n + p + t for n, p, t in zip(g.size, g.pad, g.tail))
    # The transpose of a window sum spreads each output's dy / pool_size over its window.
    spread = torch.ops.aten.avg_pool2d_backward(dy / g.divisor(dy), x.new_empty(padded_shape), g.kernel,
                                                g.stride, (0, 0), False, True, 1)
    return g.unpadded(spread)


def _pair(pp, field, single, default):
    """An (h, w) pair from `single` (both axes) or `field_h`/`field_w`, as Caffe reads them."""
    if pp.HasField(single):
        value = getattr(pp, single)
        return (value, value)
    if pp.HasField(f"{field}_h") or pp.HasField(f"{field}_w"):
        return (getattr(pp, f"{field}_h"), getattr(pp, f"{field}_w"))
    return (default, default)


@register_layer("Pooling")
class PoolingLayer(Layer):
    exact_num_bottom_blobs = 1
    min_top_blobs = 1
    max_top_blobs = 1

    def __init__(self, param):
        super().__init__(param)
        # Only MAX pooling can emit its argmax mask as a second top.
        self.max_top_blobs = 2 if param.pooling_param.pool == P.MAX else 1

    def layer_setup(self, bottom, top):
        pp = self.param.pooling_param
        self.method, self.global_pooling = pp.pool, pp.global_pooling
        self.ceil_mode = pp.round_mode == P.CEIL
        has_size, has_h, has_w = pp.HasField("kernel_size"), pp.HasField("kernel_h"), pp.HasField("kernel_w")
        if self.global_pooling:
            self.expect(not (has_size or has_h or has_w),
                        "Expect: no kernel_size / kernel_h / kernel_w with global_pooling: true")
        else:
            self.expect(has_size != (has_h and has_w),
                        "Expect: kernel_size, or kernel_h and kernel_w (not both); "
                        f"Actual: kernel_size {'set' if has_size else 'unset'}, kernel_h "
                        f"{'set' if has_h else 'unset'}, kernel_w {'set' if has_w else 'unset'}")
        for field, single in (("pad", "pad"), ("stride", "stride")):
            has_h, has_w = pp.HasField(f"{field}_h"), pp.HasField(f"{field}_w")
            self.expect((not pp.HasField(single) and has_h and has_w) or not (has_h or has_w),
                        f"Expect: {single}, or {field}_h and {field}_w (not both)")
        self.pad = _pair(pp, "pad", "pad", 0)
        self.stride = _pair(pp, "stride", "stride", 1)
        self.kernel = None if self.global_pooling else _pair(pp, "kernel", "kernel_size", 0)
        if self.kernel is not None:
            self.expect(min(self.kernel) > 0, f"Expect: kernel dimensions > 0, Actual: {self.kernel}")
        self.expect(min(self.stride) > 0, f"Expect: stride > 0, Actual: {self.stride}")
        if self.global_pooling:
            self.expect(self.pad == (0, 0) and self.stride == (1, 1),
                        f"Expect: pad 0 and stride 1 with global_pooling, Actual: pad {self.pad}, "
                        f"stride {self.stride}")
        self.geometry_key, self.argmax = None, None
        if any(self.pad):
            self.expect(self.method in (P.AVE, P.MAX), "Expect: padding only with AVE or MAX pooling, "
                                                       f"Actual: {P.PoolMethod.Name(self.method)}")
            if self.kernel is not None:
                self.expect(self.pad[0] < self.kernel[0] and self.pad[1] < self.kernel[1],
                            f"Expect: pad < kernel, Actual: pad {self.pad}, kernel {self.kernel}")

    def reshape(self, bottom, top):
        if self.shapes_unchanged(bottom, top):
            return
        x = bottom[0]
        expect_4d(self, x)
        size = x.shape[2:]
        kernel = size if self.global_pooling else self.kernel
        self.expect(min(kernel) > 0, f"Expect: a non-empty image for global pooling, Actual: {x.shape}")
        if self.geometry_key != (size, kernel):     # rebuilt only when the image size changes
            self.geometry = PoolGeometry(size, kernel, self.stride, self.pad, self.ceil_mode)
            self.geometry_key = (size, kernel)
        out = self.geometry.out
        self.expect(min(out) > 0, f"Expect: kernel {kernel} fits the padded input {size} (pad {self.pad}), "
                                  f"Actual: output size {out}")
        for t in top:
            t.reshape(x.shape[:2] + out)
        self.remember_shapes(bottom, top)

    # --- tensor-level passes (SPP drives these directly) ----------------------------------------------------
    def pool_forward(self, x, out=None, keep_argmax=True):
        """y for input x (written into `out` where the kernel can, else a new tensor); remembers what
        backward needs (argmax / sampled indices).  keep_argmax=False: MAX computes the values only."""
        g, self.index = self.geometry, None
        if self.method == P.MAX:
            if not keep_argmax:
                return max_values(x, g)
            if out is None or not g.torch_ok:
                y, self.index = max_pool(x, g)
                return y
            if self.argmax is None or self.argmax.shape != out.shape or self.argmax.device != out.device:
                self.argmax = torch.empty(out.shape, dtype=torch.int64, device=out.device)
            y, self.index = max_pool(x, g, out, self.argmax)
            return y
        if self.method == P.AVE:
            return ave_pool(x, g, out)
        if self.method == P.STOCHASTIC:
            return self._stochastic_forward(x)
        raise self._unknown_method()

    def pool_backward(self, dy, x, out=None):
        """dx (written into `out`, overwritten, where the kernel can, else a new tensor)."""
        g = self.geometry
        if self.method == P.MAX and self.index is None:
            # The forward kept no argmax (the net said no backward would follow): find it now.
            self.index = max_pool(x, g)[1]
        if self.method == P.MAX and g.torch_ok:
            # torch's windows are Caffe's here (never empty): its kernel does dx[argmax] += dy, faster.
            args = (dy, x, g.kernel, g.stride, g.pad, (1, 1), g.ceil_mode, self.index)
            if out is not None:
                return torch.ops.aten.max_pool2d_with_indices_backward.grad_input(*args, grad_input=out)
            return torch.ops.aten.max_pool2d_with_indices_backward(*args)
        if self.method in (P.MAX, P.STOCHASTIC) and self.index is not None:
            return scatter_grad(dy, self.index, x.shape)
        if self.method == P.AVE:
            return ave_pool_grad(dy, x, self.geometry, out)
        if self.method == P.STOCHASTIC:
            return self._stochastic_test_grad(dy, x)
        raise self._unknown_method()

    def _unknown_method(self):
        return LayerError(f"unknown pooling method {self.method}", self.name, self.type)

    # Stochastic windows start at ph * stride (no padding) and are clipped to the image: pad the image's
    # tail with zeros (which weigh nothing) and unfold every window into a column.
    def _windows(self, x):
        g = self.geometry
        n, c = x.shape[:2]
        cols = F.unfold(g.padded(x), g.kernel, stride=g.stride)
        return cols.view(n, c, g.kernel[0] * g.kernel[1], -1)

    def _stochastic_forward(self, x):
        g = self.geometry
        n, c = x.shape[:2]
        cols = self._windows(x)
        if self.phase == caffe_pb2.TEST:
            return ((cols * cols).sum(2) / (cols.sum(2) + FLT_MIN)).view(n, c, *g.out)
        running = cols.cumsum(2)
        threshold = torch.rand_like(running[:, :, -1:]) * running[:, :, -1:]
        # The first window element whose running sum reaches the threshold (argmax finds the first True).
        pick = (running >= threshold).to(torch.uint8).argmax(2, keepdim=True)
        y = cols.gather(2, pick).view(n, c, *g.out)
        pick = pick.view(n, c, *g.out)
        rows = torch.arange(g.out[0], device=x.device).view(-1, 1) * g.stride[0] + pick // g.kernel[1]
        columns = torch.arange(g.out[1], device=x.device).view(1, -1) * g.stride[1] + pick % g.kernel[1]
        inside = (rows < g.size[0]) & (columns < g.size[1])
        self.index = torch.where(inside, rows * g.size[1] + columns, -1)
        return y

    def _stochastic_test_grad(self, dy, x):
        """Gradient of the TEST-phase weighted average sum(x^2) / sum(x) (Caffe has none; see module doc)."""
        g = self.geometry
        n, c = x.shape[:2]
        cols = self._windows(x)
        total = cols.sum(2, keepdim=True) + FLT_MIN
        squares = (cols * cols).sum(2, keepdim=True)
        dcols = dy.reshape(n, c, 1, -1) * (2 * cols * total - squares) / (total * total)
        padded = tuple(s + t for s, t in zip(g.size, g.tail))
        return g.unpadded(F.fold(dcols.reshape(n, -1, dcols.shape[-1]), padded, g.kernel, stride=g.stride))

    # --- layer hooks ---------------------------------------------------------------------------------------
    # Results go into the blobs' own memory (store_* is a no-op where the kernel already wrote there).
    def forward(self, bottom, top):
        keep_argmax = self.need_backward or len(top) > 1
        top[0].store_data(self.pool_forward(bottom[0].data, top[0].data, keep_argmax))
        if len(top) > 1:
            top[1].store_data(self.index)       # the argmax mask, as floats

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].store_diff(self.pool_backward(top[0].diff, bottom[0].data, bottom[0].diff))


@register_layer("SPP")
class SPPLayer(Layer):
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def layer_setup(self, bottom, top):
        self.pyramid_height = self.param.spp_param.pyramid_height
        self.expect(self.pyramid_height >= 1, f"Expect: pyramid_height >= 1, Actual: {self.pyramid_height}")
        self.levels, self.image = [], None

    def _level_param(self, level, height, width):
        """Caffe's GetPoolingParam: the pooling that cuts the image into 2^level bins per side."""
        bins = 2 ** level
        param = caffe_pb2.LayerParameter(name=f"{self.name}_pool{level}", type="Pooling", phase=self.phase)
        pp = param.pooling_param
        pp.pool = self.param.spp_param.pool    # SPP's MAX/AVE/STOCHASTIC enum matches Pooling's
        for axis, size in (("h", height), ("w", width)):
            kernel = math.ceil(size / bins)
            setattr(pp, f"kernel_{axis}", kernel)
            setattr(pp, f"stride_{axis}", kernel)
            setattr(pp, f"pad_{axis}", (kernel * bins - size + 1) // 2)
        return param

    def reshape(self, bottom, top):
        if self.shapes_unchanged(bottom, top):
            return
        x = bottom[0]
        expect_4d(self, x)
        n, c, h, w = x.shape
        self.expect(h > 0 and w > 0, f"Expect: non-empty input, Actual: {x.shape}")
        if self.image != (h, w):
            self.levels = []
            for level in range(self.pyramid_height):
                pool = PoolingLayer(self._level_param(level, h, w))
                try:
                    pool.setup([x], [Blob(dtype=x.dtype, device=x.device)])
                except LayerError as error:
                    # Caffe refuses these too (e.g. an image too small for 2^level bins): name the SPP layer.
                    raise LayerError(f"pyramid level {level} ({2 ** level} bins per side) on a {h}x{w} "
                                     f"image: {error}", self.name, self.type) from None
                self.levels.append(pool)
            self.image = (h, w)
        if self.pyramid_height == 1:
            top[0].reshape((n, c) + self.levels[0].geometry.out)
        else:
            top[0].reshape(n, sum(c * p.geometry.out[0] * p.geometry.out[1] for p in self.levels))

    def forward(self, bottom, top):
        x = bottom[0].data
        pooled = [pool.pool_forward(x, keep_argmax=self.need_backward) for pool in self.levels]
        if self.pyramid_height == 1:
            top[0].store_data(pooled[0])
        else:
            torch.cat([p.reshape(p.shape[0], -1) for p in pooled], dim=1, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x, dy = bottom[0].data, top[0].diff
        n = x.shape[0]
        dx, start = None, 0
        # Caffe's Split sums the levels' gradients in level order.
        for pool in self.levels:
            shape = (n, x.shape[1]) + pool.geometry.out
            width = shape[1] * shape[2] * shape[3]
            part = pool.pool_backward(dy.reshape(n, -1)[:, start:start + width].reshape(shape), x)
            dx = part if dx is None else dx + part
            start += width
        bottom[0].store_diff(dx)
