"""LRN: local response normalization (Caffe's lrn_layer), on (N, C, H, W).

ACROSS_CHANNELS, n = local_size (odd), the window c - (n-1)/2 .. c + (n-1)/2 over channels (zero outside):

    scale[c] = k + alpha / n * sum_{c' in window(c)} x[c']^2,     y = x * scale^-beta
    dx[c]    = dy[c] * scale[c]^-beta - 2 alpha beta / n * x[c] * sum_{c' in window(c)} dy y / scale [c']

WITHIN_CHANNEL: Caffe composes it from layers — square, AVE pooling (kernel n, pad (n-1)/2, stride 1, with
pooling's padded-window divisor), power (1 + alpha * .)^-beta, product with x — so k is not used there:

    s = 1 + alpha * avepool(x^2),     y = x * s^-beta
    dx = dy * s^-beta + 2 x * avepool^T(-alpha beta * dy * x * s^(-beta-1))
"""
import torch
import torch.nn.functional as F

from ..core.layer import Layer
from ..core.registry import register_layer
from ..proto import caffe_pb2
from .pooling import PoolGeometry, ave_pool, ave_pool_grad


@register_layer("LRN")
class LRNLayer(Layer):
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def layer_setup(self, bottom, top):
        lp = self.param.lrn_param
        self.size, self.alpha, self.beta, self.k = lp.local_size, lp.alpha, lp.beta, lp.k
        self.expect(self.size % 2 == 1 and self.size > 0,
                    f"Expect: an odd, positive local_size, Actual: {self.size}")
        self.across = lp.norm_region == caffe_pb2.LRNParameter.ACROSS_CHANNELS
        self.pre_pad = (self.size - 1) // 2

    def reshape(self, bottom, top):
        x = bottom[0]
        self.expect(x.num_axes == 4, f"Expect: a 4-axis (num, channels, height, width) bottom, "
                                     f"Actual: {x.shape}")
        if not self.across and getattr(self, "geometry_size", None) != x.shape[2:]:
            n = self.size
            self.geometry = PoolGeometry(x.shape[2:], (n, n), (1, 1), (self.pre_pad, self.pre_pad))
            self.geometry_size = x.shape[2:]
        top[0].reshape_like(x)

    def _channel_window_sum(self, t):
        """sum over the local_size channels centred on each channel (zero beyond the edges)."""
        n, c, h, w = t.shape
        sums = F.avg_pool2d(t.reshape(n, 1, c, h * w), (self.size, 1), stride=1, padding=(self.pre_pad, 0),
                            divisor_override=1)
        return sums.view(n, c, h, w)

    def forward(self, bottom, top):
        x = bottom[0].data
        if self.across:
            self.scale = self._channel_window_sum(x * x).mul_(self.alpha / self.size).add_(self.k)
        else:
            self.scale = ave_pool(x * x, self.geometry).mul_(self.alpha).add_(1.0)
        self.factor = self.scale.pow(-self.beta)       # scale^-beta, kept for backward
        torch.mul(x, self.factor, out=top[0].data)     # into the top's own memory, as Caffe

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x, y, dy, factor = bottom[0].data, top[0].data, top[0].diff, self.factor
        if self.across:
            ratio = self._channel_window_sum(dy * y / self.scale)
            dx = dy * factor - (2.0 * self.alpha * self.beta / self.size) * x * ratio
        else:
            inner = dy * x * factor / self.scale * (-self.alpha * self.beta)
            dx = dy * factor + 2.0 * x * ave_pool_grad(inner, x, self.geometry)
        bottom[0].store_diff(dx)
