"""Losses on probabilities rather than scores: InfogainLoss (a softmax, then the log-probabilities weighted
by an information-gain matrix H) and MultinomialLogisticLoss (minus the log of the label's probability).
Labels, the ignore_label and normalization as in loss.py."""
import torch

from ..core.blob import Blob
from ..core.registry import register_layer
from ..errors import BrewnetError, LayerError
from ..proto import caffe_pb2
from ..proto.io import read_binary
from .loss import LOG_THRESHOLD, LossLayer, NormalizedLoss, _split_axis, softmax_over_channels


@register_layer("InfogainLoss")
class InfogainLossLayer(NormalizedLoss):
    """Softmax, then a loss weighted by an infogain matrix H (K x K):

        p = softmax(x) along infogain_loss_param.axis
        E = -1/Z * sum over non-ignored (n,i) of sum_k H[l, k] * log(max(p[n,k,i], 1e-20)),  l = l(n,i)
        dE/dx[n,k,i] = w/Z * (p[n,k,i] * sum_j H[l, j] - H[l, k])
    H is the third bottom when given, else read once from infogain_loss_param.source (a binaryproto).
    The legacy `normalize` field is refused (as Caffe does for this layer); an optional second top gets p.
    """
    exact_num_bottom_blobs = -1
    min_bottom_blobs = 2
    max_bottom_blobs = 3
    exact_num_top_blobs = -1
    min_top_blobs = 1
    max_top_blobs = 2
    accepts_legacy_normalize = False

    def allow_force_backward(self, bottom_index):
        # Caffe allows forcing bottom 2 and then aborts in Backward; we just never ask for H's gradient.
        return bottom_index == 0

    def layer_setup(self, bottom, top):
        self.read_loss_param()
        self.infogain = None
        if len(bottom) < 3:
            source = self.param.infogain_loss_param.source
            self.expect(self.param.infogain_loss_param.HasField("source"),
                        "Expect: infogain_loss_param.source (the H matrix as binaryproto) or a third bottom, "
                        "Actual: neither")
            try:
                proto = read_binary(source, caffe_pb2.BlobProto())
                self.infogain = Blob(dtype=bottom[0].dtype, device=bottom[0].device,
                                     name=f"{self.name}.infogain").from_proto(proto, source=source)
            except BrewnetError as e:
                raise LayerError(f"cannot load the infogain matrix: {e}", self.name, self.type) from None

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        try:
            self.axis = bottom[0].canonical_axis_index(self.param.infogain_loss_param.axis)
        except BrewnetError as e:
            raise LayerError(str(e), self.name, self.type) from None
        self.outer, self.channels, self.inner = _split_axis(bottom[0], self.axis)
        self.expect(self.outer * self.inner == bottom[1].count(),
                    f"Expect: number of labels == number of predictions ({self.outer * self.inner} for axis "
                    f"{self.axis} of shape {bottom[0].shape}), Actual: {bottom[1].count()} labels")
        matrix = bottom[2] if len(bottom) > 2 else self.infogain
        self.expect(matrix.count() == self.channels * self.channels,
                    f"Expect: infogain matrix of {self.channels} x {self.channels} values, "
                    f"Actual: {matrix.count()} values of shape {matrix.shape}")
        if len(top) > 1:
            top[1].reshape_like(bottom[0])

    def forward(self, bottom, top):
        H = (bottom[2] if len(bottom) > 2 else self.infogain).data
        self.H = H.reshape(self.channels, self.channels).to(bottom[0].data.dtype)
        self.prob = softmax_over_channels(bottom[0].data, self.outer, self.channels, self.inner)
        labels, valid = self.read_labels(bottom[1], self.channels, self.ignore_label)
        self.labels = torch.where(valid, labels, torch.zeros_like(labels)).view(self.outer, self.inner)
        self.valid = valid.view(self.outer, 1, self.inner)
        rows = self.H[self.labels].permute(0, 2, 1)          # H[l(n,i), k] laid out as (n, k, i)
        log_p = torch.log(self.prob.clamp(min=LOG_THRESHOLD))
        loss = -(rows * log_p * self.valid).sum()
        self.count = self.valid.sum()
        torch.div(loss, self.normalizer(self.outer, self.inner, self.count), out=top[0].data)
        if len(top) > 1:
            top[1].data.copy_(self.prob.view(top[1].shape))

    def backward(self, top, propagate_down, bottom):
        self.refuse_backward_to(propagate_down, 1)
        self.refuse_backward_to(propagate_down, 2, "infogain matrix")
        if not propagate_down[0]:
            return
        rows = self.H[self.labels].permute(0, 2, 1)
        row_sums = self.H.sum(dim=1)[self.labels].unsqueeze(1)
        grad = (self.prob * row_sums - rows) * self.valid
        scale = self.loss_weight(top) / self.normalizer(self.outer, self.inner, self.count)
        bottom[0].diff.copy_((grad * scale).view(bottom[0].shape))


@register_layer("MultinomialLogisticLoss")
class MultinomialLogisticLossLayer(LossLayer):
    """Log loss on probabilities p (N x K) that some earlier layer produced:

        E = -1/N * sum_n log(max(p[n, l(n)], 1e-20))
        dE/dp[n,k] = -w/N / max(p[n, l(n)], 1e-20)  for k == l(n), else 0
    """

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        self.expect(bottom[1].count(1) == 1,
                    f"Expect: one label per sample (N x 1 x 1 x 1), Actual: label shape {bottom[1].shape}")

    def forward(self, bottom, top):
        num = bottom[0].shape[0]
        p = bottom[0].data.reshape(num, -1)
        labels, _ = self.read_labels(bottom[1], p.shape[1])
        self.labels = labels.view(num, 1)
        self.p_true = p.gather(1, self.labels).clamp(min=LOG_THRESHOLD)
        top[0].data.copy_(-torch.log(self.p_true).sum() / num)

    def backward(self, top, propagate_down, bottom):
        self.refuse_backward_to(propagate_down, 1)
        if not propagate_down[0]:
            return
        num = bottom[0].shape[0]
        grad = torch.zeros_like(bottom[0].data).view(num, -1)
        grad.scatter_(1, self.labels, -self.loss_weight(top) / num / self.p_true)
        bottom[0].diff.copy_(grad.view(bottom[0].shape))
