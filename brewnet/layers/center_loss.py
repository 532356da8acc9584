"""CenterLoss (Wen et al. 2016, "A Discriminative Feature Learning Approach for Deep Face Recognition";
caffe-face's layer, and the book's 5.9): pulls each feature towards the center of its class.

Bottoms: features x (N x D once the axes from `axis` on are flattened) and labels y (N values in [0, K)).
Parameter: the centers C (K x D), filled by `center_filler`.  Top: the scalar

    L = 1/(2N) sum_i |x_i - c_{y_i}|^2

Backward, with w = top[0].diff (the loss weight):
    dL/dx_i = w (x_i - c_{y_i}) / N
    centers:  diff[k] += alpha * sum_{i: y_i = k} (c_k - x_i) / (1 + n_k),   n_k = #{i: y_i = k}

The centers' "diff" is caffe-face's update rule, not the gradient of L: it does not depend on N or on the
loss weight, and the 1 + n_k keeps a rare class's step small.  The solver then moves the centers by
lr * lr_mult * diff (weight decay by decay_mult; caffe-face's prototxt uses decay_mult 0), so the paper's
alpha is lr * lr_mult * alpha here.  Because the centers are an ordinary parameter blob, they are written to
caffemodel / HDF5 snapshots, copied by -weights, restored by -snapshot and averaged across data-parallel
ranks like any weight.

center_loss_param speaks two dialects that mean the same:
    caffe-face:  num_output (K), center_filler, axis
    the book:    cluster_num (K), alpha, loss_weight
num_output and cluster_num name the same number (both given and different: an error).  The book's
loss_weight is the layer's loss weight, as LayerParameter.loss_weight (both given and different: an error).
"""
import torch

from ..core.blob import Blob
from ..core.filler import fill
from ..core.registry import register_layer
from .common import canonical_axis
from .loss import LossLayer


def read_caffe_face_binary(param):
    """caffe-face numbers center_loss_param 147, Caffe 1.0's (and brewnet's) swish_param: a binary caffe-face
    net arrives with its CenterLoss parameters as a swish_param of unknown fields.  Re-read those bytes as
    the CenterLossParameter they are (prototxt names the field and needs nothing)."""
    if param.HasField("swish_param") and not param.HasField("center_loss_param"):
        param.center_loss_param.ParseFromString(param.swish_param.SerializeToString())
        param.ClearField("swish_param")


@register_layer("CenterLoss")
class CenterLossLayer(LossLayer):

    def __init__(self, param):
        read_caffe_face_binary(param)
        super().__init__(param)

    def layer_setup(self, bottom, top):
        p = self.param.center_loss_param
        self.num_classes = self._num_classes(p)
        self.alpha = float(p.alpha)
        self.expect(self.alpha >= 0, f"Expect: center_loss_param.alpha >= 0, Actual: {self.alpha}")
        axis = canonical_axis(self, bottom[0], p.axis)
        self.dim = bottom[0].count(axis)
        if self.blobs:          # centers given (caffemodel, -weights): keep them, as Caffe skips the filler
            shape = tuple(self.blobs[0].shape)
            self.expect(len(self.blobs) == 1 and shape == (self.num_classes, self.dim),
                        f"Expect: one centers blob of shape ({self.num_classes}, {self.dim}), "
                        f"Actual: {len(self.blobs)} blob(s), the first of shape {shape}")
            return
        data = bottom[0].data
        self.blobs = [Blob((self.num_classes, self.dim), dtype=data.dtype, device=data.device,
                           name=f"{self.name}.0")]
        fill(p.center_filler, self.blobs[0])

    def _num_classes(self, p):
        given = {name: getattr(p, name) for name in ("num_output", "cluster_num") if p.HasField(name)}
        self.expect(given, "Expect: center_loss_param.num_output (caffe-face) or cluster_num (the book) "
                           "giving the number of classes, Actual: neither")
        self.expect(len(set(given.values())) == 1,
                    f"Expect: center_loss_param.num_output and cluster_num to agree (both name the number "
                    f"of classes), Actual: num_output {p.num_output}, cluster_num {p.cluster_num}")
        k = next(iter(given.values()))
        self.expect(k > 0, f"Expect: the number of classes > 0, Actual: {k}")
        return k

    def set_loss_weights(self, top):
        p = self.param.center_loss_param
        outer = list(self.layer_param.loss_weight)
        if p.HasField("loss_weight") and outer:
            self.expect(outer == [p.loss_weight],      # both float32: equal text gives equal values
                        f"Expect: loss_weight and center_loss_param.loss_weight to agree (both scale the "
                        f"loss), Actual: {', '.join(f'{w:.7g}' for w in outer)} and {p.loss_weight:.7g}")
        super().set_loss_weights(top)

    def default_loss_weight(self, top_index):
        return float(self.param.center_loss_param.loss_weight) if top_index == 0 else 0.0

    def reshape(self, bottom, top):
        if self.shapes_unchanged(bottom, top):
            return
        axis = canonical_axis(self, bottom[0], self.param.center_loss_param.axis)
        dim, num = bottom[0].count(axis), bottom[0].count(0, axis)
        self.expect(dim == self.dim, f"Expect: features of {self.dim} values (count from axis {axis}), "
                                     f"Actual: {dim} (bottom shape {list(bottom[0].shape)})")
        self.expect(bottom[1].count() == num, f"Expect: one label per feature ({num}), Actual: "
                                              f"{bottom[1].count()} (label shape {list(bottom[1].shape)})")
        self.num = num
        top[0].reshape(())
        self.remember_shapes(bottom, top)

    def forward(self, bottom, top):
        self.labels, _ = self.read_labels(bottom[1], self.num_classes, want_valid=False)
        x = bottom[0].data.reshape(self.num, self.dim)
        # x_i - c_{y_i}, kept for both gradients (caffe-face's distance_)
        self.distance = x - self.blobs[0].data.index_select(0, self.labels)
        top[0].data.copy_(torch.sum(self.distance * self.distance) / (2 * self.num))

    def backward(self, top, propagate_down, bottom):
        self.refuse_backward_to(propagate_down, 1)
        if self.param_propagate(0):
            self.blobs[0].accumulate_diff(self._center_update())
        if propagate_down[0]:
            scale = self.loss_weight(top) / self.num
            torch.mul(self.distance, scale, out=bottom[0].diff.view(self.num, self.dim))

    def _center_update(self):
        """alpha * sum_{i: y_i = k} (c_k - x_i) / (1 + n_k), for every k (zero for a class absent here)."""
        d = self.distance
        pulled = torch.zeros((self.num_classes, self.dim), dtype=d.dtype, device=d.device)
        pulled.index_add_(0, self.labels, d, alpha=-1)
        counts = torch.ones(self.num_classes, dtype=d.dtype, device=d.device)
        counts.index_add_(0, self.labels, torch.ones_like(self.labels, dtype=d.dtype))
        if self.alpha != 1:
            pulled.mul_(self.alpha)
        return pulled.div_(counts.unsqueeze(1))
