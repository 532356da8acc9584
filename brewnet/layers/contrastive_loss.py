"""ContrastiveLoss (Caffe's contrastive_loss_layer): the siamese networks' loss on pairs of features."""
import torch

from ..core.registry import register_layer
from .loss import LossLayer


def _legacy_dim(blob, index):
    """Caffe's LegacyShape: missing trailing axes count as 1."""
    return blob.shape[index] if index < blob.num_axes else 1


@register_layer("ContrastiveLoss")
class ContrastiveLossLayer(LossLayer):
    """Siamese loss on feature pairs a, b (N x C x 1 x 1) and similarity flags y (N):

        d^2 = ||a - b||^2
        E = 1/(2N) * sum [ y * d^2 + (1 - y) * max(margin - d, 0)^2 ]
        legacy_version: the dissimilar term is max(margin - d^2, 0) instead.
        dE/da = -dE/db = w/N * (a - b)                          for similar pairs
                         -w/N * (margin - d)/(d + 1e-4) * (a-b)  dissimilar, when margin - d > 0
                         -w/N * (a - b)                          legacy, when margin - d^2 > 0
    """
    exact_num_bottom_blobs = 3

    def allow_force_backward(self, bottom_index):
        return bottom_index != 2

    def layer_setup(self, bottom, top):
        a, b, y = bottom
        for blob, what in ((a, "bottom 0"), (b, "bottom 1")):
            self.expect(_legacy_dim(blob, 2) == 1 and _legacy_dim(blob, 3) == 1,
                        f"Expect: {what} of shape N x C x 1 x 1, Actual: {blob.shape}")
        self.expect(_legacy_dim(a, 1) == _legacy_dim(b, 1),
                    f"Expect: both features with the same channels, Actual: {a.shape} vs. {b.shape}")
        self.expect(y.count(1) == 1, f"Expect: similarity bottom of shape N x 1 x 1 x 1, Actual: {y.shape}")

    def forward(self, bottom, top):
        num = bottom[0].shape[0]
        self.diff = (bottom[0].data - bottom[1].data.view(bottom[0].shape)).reshape(num, -1)
        self.dist_sq = (self.diff * self.diff).sum(dim=1)
        self.similar = bottom[2].data.reshape(num).to(torch.int64) != 0
        p = self.param.contrastive_loss_param
        if p.legacy_version:
            dissimilar = (p.margin - self.dist_sq).clamp(min=0)
        else:
            dissimilar = (p.margin - self.dist_sq.sqrt()).clamp(min=0) ** 2
        loss = torch.where(self.similar, self.dist_sq, dissimilar).sum()
        top[0].data.copy_(loss / num / 2)

    def backward(self, top, propagate_down, bottom):
        # Like Caffe, a request to propagate to the similarity flags (bottom 2) is ignored.
        p = self.param.contrastive_loss_param
        num = self.diff.shape[0]
        if p.legacy_version:
            dissimilar_coeff = -((p.margin - self.dist_sq) > 0).to(self.diff.dtype)
        else:
            dist = self.dist_sq.sqrt()
            mdist = p.margin - dist
            dissimilar_coeff = torch.where(mdist > 0, -mdist / (dist + 1e-4), torch.zeros_like(dist))
        coeff = torch.where(self.similar, torch.ones_like(self.dist_sq), dissimilar_coeff).unsqueeze(1)
        for i, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[i]:
                alpha = sign * self.loss_weight(top) / num
                bottom[i].diff.copy_((alpha * coeff * self.diff).view(bottom[i].shape))
