"""Softmax along one axis (softmax_param.axis, default 1: the channels).

    y[n,c,i] = exp(x[n,c,i] - max_c x[n,:,i]) / sum_c' exp(x[n,c',i] - max_c x[n,:,i])
    dE/dx[n,c,i] = y[n,c,i] * (dE/dy[n,c,i] - sum_c' dE/dy[n,c',i] * y[n,c',i])
The backward needs only the output, so the layer works in place.
"""
import torch

from ..core.layer import Layer
from ..core.registry import register_layer
from ..errors import BrewnetError, LayerError


@register_layer("Softmax")
class SoftmaxLayer(Layer):
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def reshape(self, bottom, top):
        try:
            self.axis = bottom[0].canonical_axis_index(self.param.softmax_param.axis)
        except BrewnetError as e:
            raise LayerError(str(e), self.name, self.type) from None
        self.split = (bottom[0].count(0, self.axis), bottom[0].shape[self.axis], bottom[0].count(self.axis + 1))
        top[0].reshape_like(bottom[0])

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.split)
        if self.split[2] == 1:
            x = x.view(self.split[:2])      # the last dimension: torch's vectorized kernel
        top[0].data.copy_(torch.softmax(x, dim=1).view(top[0].shape))

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        y = top[0].data.reshape(self.split)
        dy = top[0].diff.reshape(self.split)
        dx = y * (dy - (dy * y).sum(dim=1, keepdim=True))
        bottom[0].diff.copy_(dx.view(bottom[0].shape))
