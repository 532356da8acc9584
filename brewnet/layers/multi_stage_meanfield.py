"""MultiStageMeanfield: CRF-as-RNN (Zheng et al. 2015, torrvision/crfasrnn's layer; the book's 9.5).  Mean-field
inference of the fully connected CRF (layers/dense_crf.py) unrolled as T stages that share three parameter
blobs, so the whole inference trains end to end with the network that gives its unary.

Bottoms: the unary scores U (N, L, H, W), the initial scores Q0 (the same values through a Split, in crfasrnn's
nets), the image I (N, 3, H, W) in the units of theta_beta.  Parameters (each 1 x 1 x L x L): the spatial
kernel weights Ws, the bilateral kernel weights Wb, the compatibility transform C.  Top: the scores x_T after
T stages, not normalised (a Softmax after the layer gives the marginals).  Stage t, from x_0 = Q0:

    P_t     = softmax(x_t)                        over the L labels of each pixel
    S_t     = Ks(P_t),  B_t = Kb(P_t)             normalised Gaussian filters (dense_crf's K), per label
    M_t     = Ws S_t + Wb B_t                     mixing the labels' messages
    x_{t+1} = U - C M_t

Ks is the spatial kernel exp(-|p_i - p_j|^2 / 2 theta_gamma^2), Kb the bilateral one over position / theta_alpha
and colour / theta_beta, both filtered on permutohedral lattices and divided by the filtered ones.  At setup
Ws = spatial_filter_weight x identity, Wb = bilateral_filter_weight x identity (or the crfrnn branch's
per-label *_weights_str) and C = -identity (Potts: with C = -I the stage adds the messages to the scores).

Backward, from g = dL/dx_T, stage by stage back to x_0:

    dU  += g                                      every stage adds the unary
    dC  += sum_{n,pixels} (-g) M_t^T
    dM   = C^T (-g)
    dWs += dM S_t^T,   dWb += dM B_t^T
    dP   = Ks^T(Ws^T dM) + Kb^T(Wb^T dM)           the filters' transposes (permutohedral `transposed`)
    g    = P_t * (dP - sum_l P_t dP)              softmax backward: dL/dx_t;  at t = 0 it is dL/dQ0

The image gets no gradient (its features only place the lattice): with propagate_down its diff is zero.
Parameter diffs accumulate (+=) as every brewnet layer's do; crfasrnn overwrote them, which breaks iter_size.
"""
import torch

from ..core.blob import Blob
from ..core.registry import register_layer
from ..core.layer import Layer
from . import permutohedral
from .dense_crf import bilateral_features, spatial_features


@register_layer("MultiStageMeanfield")
class MultiStageMeanfieldLayer(Layer):
    exact_num_bottom_blobs = 3
    exact_num_top_blobs = 1
    not_recordable = "it builds a permutohedral lattice from each image, whose size depends on the pixel values"

    def layer_setup(self, bottom, top):
        p = self.param.multi_stage_meanfield_param
        self.iterations = int(p.num_iterations)
        self.expect(self.iterations >= 1,
                    f"Expect: multi_stage_meanfield_param.num_iterations >= 1, Actual: {self.iterations}")
        self.thetas = {name: float(getattr(p, name)) for name in ("theta_alpha", "theta_beta", "theta_gamma")}
        for name, value in self.thetas.items():
            self.expect(value > 0, f"Expect: multi_stage_meanfield_param.{name} > 0, Actual: {value:g}")
        self.expect(bottom[0].data.dim() == 4, f"Expect: unary scores of shape (N, labels, H, W), Actual: "
                                               f"{list(bottom[0].shape)}")
        labels = bottom[0].shape[1]
        if self.blobs:          # weights from a caffemodel: keep them (shape checked), as crfasrnn does
            self._check_blobs(labels)
            return
        data = bottom[0].data
        self.blobs = [Blob((1, 1, labels, labels), dtype=data.dtype, device=data.device, name=f"{self.name}.{i}")
                      for i in range(3)]
        eye = torch.eye(labels, dtype=data.dtype, device=data.device)
        self.blobs[0].data.copy_(eye * self._initial_weights(p, "spatial", labels))
        self.blobs[1].data.copy_(eye * self._initial_weights(p, "bilateral", labels))
        self.blobs[2].data.copy_(-eye)

    def _initial_weights(self, p, kernel, labels):
        """The diagonal: the crfrnn branch's per-label string when given, else the one weight of master."""
        text = getattr(p, f"{kernel}_filter_weights_str").split()
        if not text:
            return torch.tensor(float(getattr(p, f"{kernel}_filter_weight")))
        try:
            values = [float(v) for v in text]
        except ValueError:
            values = None
        self.expect(values is not None and len(values) == labels,
                    f"Expect: multi_stage_meanfield_param.{kernel}_filter_weights_str to hold {labels} numbers "
                    f"(one per label), Actual: '{' '.join(text)}'")
        return torch.tensor(values)

    def _check_blobs(self, labels):
        shapes = [tuple(b.shape) for b in self.blobs]
        self.expect(len(self.blobs) == 3 and all(b.count() == labels * labels for b in self.blobs),
                    f"Expect: 3 blobs (spatial weights, bilateral weights, compatibility) of {labels} x {labels} "
                    f"values for {labels} labels, Actual: shapes {shapes}")

    def allow_force_backward(self, bottom_index):
        return bottom_index != 2

    def reshape(self, bottom, top):
        if self.shapes_unchanged(bottom, top):
            return
        unary, q0, image = (list(b.shape) for b in bottom)
        self.expect(len(unary) == 4, f"Expect: unary scores of shape (N, labels, H, W), Actual: {unary}")
        self.expect(q0 == unary, f"Expect: Q0 shaped like the unary {unary}, Actual: {q0}")
        self.expect(len(image) == 4 and image[1] == 3 and image[0] == unary[0] and image[2:] == unary[2:],
                    f"Expect: an image of shape {[unary[0], 3] + unary[2:]} (3 channels, the unary's N, H and W), "
                    f"Actual: {image} (unary {unary})")
        self._check_blobs(unary[1])
        top[0].reshape(*unary)
        height, width = unary[2:]
        data = bottom[0].data
        # The spatial kernel depends only on the grid: one lattice for every image and every forward.
        self.spatial = permutohedral.build(spatial_features(height, width, self.thetas["theta_gamma"],
                                                            data.dtype, data.device))
        self.remember_shapes(bottom, top)

    def forward(self, bottom, top):
        num, labels = bottom[0].shape[:2]
        unary = bottom[0].data.reshape(num, labels, -1)
        x = bottom[1].data.reshape(num, labels, -1)
        self.bilateral = [permutohedral.build(bilateral_features(img.to(unary.dtype), self.thetas["theta_alpha"],
                                                                 self.thetas["theta_beta"]))
                          for img in bottom[2].data]
        spatial_w, bilateral_w, compat = (b.data.reshape(labels, labels) for b in self.blobs)
        self.stages = []
        for _ in range(self.iterations):
            prob = torch.softmax(x, dim=1)
            smooth, appearance = self._spatial(prob), self._bilateral(prob)
            message = spatial_w @ smooth + bilateral_w @ appearance
            self.stages.append((prob, smooth, appearance, message))
            x = unary - compat @ message
        top[0].data.copy_(x.reshape(top[0].shape))

    def _spatial(self, values, transposed=False):
        """The normalised spatial filter of (N, L, P) values: one lattice, all images and labels at once."""
        num, labels, pixels = values.shape
        flat = values.permute(2, 0, 1).reshape(pixels, num * labels)
        out = self.spatial.filter(flat, normalized=True, transposed=transposed)
        return out.reshape(pixels, num, labels).permute(1, 2, 0)

    def _bilateral(self, values, transposed=False):
        return torch.stack([lattice.filter(v.t(), normalized=True, transposed=transposed).t()
                            for lattice, v in zip(self.bilateral, values)])

    def backward(self, top, propagate_down, bottom):
        num, labels = bottom[0].shape[:2]
        spatial_w, bilateral_w, compat = (b.data.reshape(labels, labels) for b in self.blobs)
        grads = [torch.zeros_like(b.data.reshape(labels, labels)) for b in self.blobs]
        g = top[0].diff.reshape(num, labels, -1)
        unary_diff = torch.zeros_like(g)
        for prob, smooth, appearance, message in reversed(self.stages):
            unary_diff += g
            d_message = -(compat.t() @ g)
            grads[2] -= (g @ message.transpose(1, 2)).sum(0)
            grads[0] += (d_message @ smooth.transpose(1, 2)).sum(0)
            grads[1] += (d_message @ appearance.transpose(1, 2)).sum(0)
            d_prob = (self._spatial(spatial_w.t() @ d_message, transposed=True)
                      + self._bilateral(bilateral_w.t() @ d_message, transposed=True))
            g = prob * (d_prob - (prob * d_prob).sum(1, keepdim=True))
        for j, grad in enumerate(grads):
            if self.param_propagate(j):
                self.blobs[j].accumulate_diff(grad.reshape(self.blobs[j].shape))
        if propagate_down[0]:
            bottom[0].diff.copy_(unary_diff.reshape(bottom[0].shape))
        if propagate_down[1]:
            bottom[1].diff.copy_(g.reshape(bottom[1].shape))
        if len(propagate_down) > 2 and propagate_down[2]:
            bottom[2].diff.zero_()
