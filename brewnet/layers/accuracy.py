"""Accuracy: the fraction of predictions whose true class is among the top_k scores.

For scores x (classes along accuracy_param.axis) and labels l, a prediction at (n, i) is correct when fewer
than top_k classes score at least as high as the true one, ties counting against it (Caffe's rule):

    correct(n,i) = #{c != l : x[n,c,i] >= x[n,l,i]} < top_k
    top[0] = sum correct / #non-ignored            (0 when every label is ignored)
    top[1] (optional, K values) = per class: correct of that class / labels of that class (0 if none)

There is no gradient: asking for one is an error.
"""
import torch

from ..core.layer import Layer
from ..core.registry import register_layer
from ..errors import BrewnetError, LayerError
from .loss import read_labels


@register_layer("Accuracy")
class AccuracyLayer(Layer):
    exact_num_bottom_blobs = 2
    min_top_blobs = 1
    max_top_blobs = 2

    def layer_setup(self, bottom, top):
        p = self.param.accuracy_param
        self.top_k = p.top_k
        self.ignore_label = p.ignore_label if p.HasField("ignore_label") else None

    def reshape(self, bottom, top):
        self.expect(bottom[1].count() > 0 and self.top_k <= bottom[0].count() // bottom[1].count(),
                    f"Expect: top_k <= the number of classes, Actual: top_k {self.top_k}, "
                    f"{bottom[0].count()} scores for {bottom[1].count()} labels")
        try:
            self.axis = bottom[0].canonical_axis_index(self.param.accuracy_param.axis)
        except BrewnetError as e:
            raise LayerError(str(e), self.name, self.type) from None
        self.outer = bottom[0].count(0, self.axis)
        self.classes = bottom[0].shape[self.axis]
        self.inner = bottom[0].count(self.axis + 1)
        self.expect(self.outer * self.inner == bottom[1].count(),
                    f"Expect: number of labels == number of predictions ({self.outer * self.inner} for axis "
                    f"{self.axis} of shape {bottom[0].shape}), Actual: {bottom[1].count()} labels")
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape((self.classes,))

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.outer, self.classes, self.inner)
        labels, valid = read_labels(self, bottom[1], self.classes, self.ignore_label)
        safe = torch.where(valid, labels, torch.zeros_like(labels))
        true_score = x.gather(1, safe.view(self.outer, 1, self.inner))
        better = (x >= true_score).sum(dim=1).view(-1) - 1     # the true class itself is not "better"
        correct = (better < self.top_k) & valid
        count = valid.sum()
        accuracy = correct.sum().to(x.dtype) / count.clamp(min=1).to(x.dtype)
        top[0].data.copy_(accuracy)
        if len(top) > 1:
            per_label = torch.zeros(self.classes, dtype=x.dtype, device=x.device)
            hits = torch.zeros_like(per_label)
            per_label.index_add_(0, safe, valid.to(x.dtype))
            hits.index_add_(0, safe, correct.to(x.dtype))
            top[1].data.copy_(torch.where(per_label > 0, hits / per_label.clamp(min=1), torch.zeros_like(hits)))
