"""BatchNorm followed by Scale in place on one blob, run by the Net as one step (the group BatchNormLayer names
as its `fusion`; runtime/fusion.py finds the groups and says when the Net runs them).

Caffe computes every layer on its own; BatchNorm followed by a Scale in place on the same blob (the
ResNet/DenseNet idiom, since Caffe's BatchNorm has no affine part) then costs four passes over the
activation in forward (normalize, copy into the top, Scale's copy of its input, scale) and four in backward.
Intel's Caffe fork fused the pair; brewnet does too.  The blob in between is never observable: both layers
work in place on one blob, so after Forward it holds Scale's output and after Backward BatchNorm's bottom
diff, whether the pair runs as two layers or as one

    y = (x - mean) / sqrt(var + eps) * gamma + beta        (torch's affine batch norm, one kernel each way)

which gives the same numbers up to float rounding (x * (invstd * gamma) + ..., rather than Caffe's two
roundings).  The running statistics are updated exactly as BatchNorm does (BatchNormLayer.normalize_batch).
"""
import torch
import torch.nn.functional as F

from ..runtime import deferred
from ..core.blob import flat, four_axes


def _channels_second(tensor, split):
    """The tensor as torch's batch-norm kernels read it: channels on axis 1.  A blob of 2 or more axes
    already is (N, C, ...); only a 1-D one needs the (N, 1, 1) view."""
    return tensor if tensor.dim() >= 2 else tensor.view(split)


class BatchNormScale:
    """BatchNorm (layer `first`) then Scale (layer `first + 1`), both in place on one blob."""

    def __init__(self, net, first):
        self.net, self.first, self.last = net, first, first + 1
        self.bn, self.scale = net.layers[first], net.layers[first + 1]
        self.blob = net.top_vecs[first][0]
        self.fused_forward = False
        self.x = None       # the input, kept for backward (it is the blob's old memory, which nobody holds)
        self.reserve = None     # cuDNN's reserve space when forward ran its kernel (a GPU), for its backward
        self.reshaped_for = None    # the blob and Scale parameter shapes the two layers were last reshaped for

    @classmethod
    def match(cls, net, i):
        """A group for the BatchNorm at layer i (it names this class as its `fusion`) when layer i + 1 is a
        Scale in place on the same blob, one learned value per channel, and neither carries a loss weight."""
        if i + 1 >= len(net.layers) or net.layers[i + 1].type != "Scale":
            return None
        bn, scale = net.layers[i], net.layers[i + 1]
        blob_id = net.top_ids[i][0]
        in_place = (net.bottom_ids[i] == [blob_id] and net.bottom_ids[i + 1] == [blob_id]
                    and net.top_ids[i + 1] == [blob_id])
        # Scale's learned blob must be one value per channel of BatchNorm's (N, C, inner) split.
        per_channel = (len(bn.split) == 3 and getattr(scale, "split", None) == bn.split
                       and scale.blobs and scale.blobs[0].count() == bn.channels)
        no_loss = not any(bn.loss_weights) and not any(scale.loss_weights)
        return cls(net, i) if in_place and per_channel and no_loss else None

    # --- forward ---------------------------------------------------------------------------------------------
    def forward(self):
        """Both layers' Forward in one pass; falls back to the two layers when the blob's memory is held
        elsewhere (a pycaffe array on it must see the result written into that memory)."""
        bn, scale, blob = self.bn, self.scale, self.blob
        shape = blob.data.shape
        shapes = (shape, scale.blobs[0].data.shape, scale.blobs[-1].data.shape)
        if shapes != self.reshaped_for:
            # Both layers' reshape depends on these shapes alone: while they stay, the two have nothing to do
            # (their own checks pass again, a visible part of a thin net's forward).
            bn.reshape([blob], [blob])
            scale.reshape([blob], [blob])
            self.reshaped_for = shapes
        x = blob.take_data() if scale.split == bn.split else None
        if x is None:
            self.run_unfused_forward()
            return
        bn.x_norm = scale.x = None          # the unfused state of an earlier run: free its memory
        self.reserve = None
        x = _channels_second(x, bn.split)
        gamma, beta = self._gamma_beta()
        if bn.use_global_stats:
            self.mean, self.var = bn.global_stats()
            y = F.batch_norm(x, self.mean, self.var, gamma, beta, False, 0.0, bn.eps)
        elif bn.cudnn_applies(x, gamma):
            y, self.mean, self.invstd, self.reserve = bn.normalize_batch_cudnn(x, gamma, beta)
        else:
            y, self.mean, self.invstd = bn.normalize_batch(x, gamma, beta)
        blob.data = y if y.shape == shape else y.view(shape)
        self.x = x if bn.need_backward or scale.need_backward else None
        self.fused_forward = True

    def run_unfused_forward(self):
        self.fused_forward = False
        for layer in (self.bn, self.scale):
            layer.forward_loss([self.blob], [self.blob])

    def _gamma_beta(self):
        gamma = flat(self.scale.blobs[0].data)
        beta = flat(self.scale.blobs[-1].data) if self.scale.bias_layer is not None else None
        return gamma, beta

    # --- backward --------------------------------------------------------------------------------------------
    def backward(self):
        """Both layers' Backward in one kernel: dx (BatchNorm's bottom diff), d gamma and d beta (added to
        Scale's parameter diffs), as the Net would ask of the two layers."""
        net, bn, scale, blob = self.net, self.bn, self.scale, self.blob
        want_x = net.layer_need_backward[self.first] and net.bottom_need_backward[self.first][0]
        scale_backward = net.layer_need_backward[self.last]
        want_gamma = scale_backward and scale.param_propagate(0)
        want_beta = scale_backward and scale.bias_layer is not None and scale.param_propagate(len(scale.blobs) - 1)
        if not (want_x or want_gamma or want_beta):
            return
        gamma, _ = self._gamma_beta()
        dy = _channels_second(blob.diff, bn.split)
        if self.reserve is not None:        # forward ran cuDNN's kernel: its backward, all three gradients
            dx, dgamma, dbeta = torch.ops.aten.cudnn_batch_norm_backward(
                four_axes(self.x), four_axes(dy), gamma, None, None, self.mean, self.invstd, bn.eps,
                self.reserve)
        else:
            if bn.use_global_stats:
                stats = (self.mean, self.var, None, None)
            else:
                stats = (None, None, self.mean, self.invstd)
            dx, dgamma, dbeta = torch.ops.aten.native_batch_norm_backward(
                dy, self.x, gamma, *stats, not bn.use_global_stats, bn.eps, [want_x, want_gamma, want_beta])
        del dy
        params, grads = [], []          # accumulated as Caffe's Backward does, gathered over the pass
        if want_gamma:
            params.append(scale.blobs[0])
            grads.append(dgamma)
        if want_beta:
            params.append(scale.blobs[-1])
            grads.append(dbeta)
        if params:
            deferred.add_to_diffs(params, grads)
        if want_x:
            if dx.shape != blob.data.shape:
                dx = dx.view(blob.data.shape)
            if blob.release_diff():
                blob.diff = dx
            else:
                blob.store_diff(dx)

    def unfuse(self):
        """After a fused Forward, give BatchNorm and Scale what their own Backward reads: the normalized
        input and 1 / sqrt(var + eps)."""
        if not self.fused_forward:
            return
        self.fused_forward = False
        if self.x is None:
            return
        invstd = torch.rsqrt(self.var + self.bn.eps) if self.bn.use_global_stats else self.invstd
        x_norm = (self.x.view(self.bn.split) - self.mean.view(1, -1, 1)) * invstd.view(1, -1, 1)
        self.bn.x_norm, self.bn.invstd = x_norm, invstd
        self.scale.x = x_norm
