"""Numeric gradient checking with Caffe's GradientChecker semantics.

For an objective built from the layer's tops, the hand-written backward (the "computed" gradient) is compared
with central differences (f(x+h) - f(x-h)) / 2h (the "estimated" one) for every element of every checked
bottom and of every parameter blob.  Element i passes when |computed - estimated| <= threshold * scale,
scale = max(|computed|, |estimated|, 1).  Points within `kink_range` of a non-differentiable `kink` (ReLU at 0,
say) are skipped, as Caffe does.

Objectives, as in Caffe:
  * check_gradient:            0.5 * sum over all tops of top^2   (top diff = top data)
  * check_gradient_exhaustive: each top element on its own        (top diff = one-hot)
  * check_gradient_single:     one chosen top element
Stochastic layers are re-seeded before every forward so that both passes see the same randomness.
"""
import torch

from ..errors import BrewnetError


class GradientCheckError(BrewnetError, AssertionError):
    """The hand-written backward disagrees with the numeric gradient."""


class GradientChecker:
    def __init__(self, stepsize=1e-2, threshold=1e-3, seed=1701, kink=0.0, kink_range=-1.0):
        self.stepsize, self.threshold, self.seed = stepsize, threshold, seed
        self.kink, self.kink_range = kink, kink_range

    def check_gradient(self, layer, bottom, top, check_bottom=-1):
        layer.setup(bottom, top)
        self.check_gradient_single(layer, bottom, top, check_bottom, -1, -1)

    def check_gradient_exhaustive(self, layer, bottom, top, check_bottom=-1):
        layer.setup(bottom, top)
        for top_id, blob in enumerate(top):
            for index in range(blob.count()):
                self.check_gradient_single(layer, bottom, top, check_bottom, top_id, index)

    def check_gradient_eltwise(self, layer, bottom, top):
        """For element-wise layers: top element i depends only on bottom element i."""
        layer.setup(bottom, top)
        for top_id, blob in enumerate(top):
            for index in range(blob.count()):
                self.check_gradient_single(layer, bottom, top, -1, top_id, index, element_wise=True)

    def check_gradient_single(self, layer, bottom, top, check_bottom, top_id, top_index, element_wise=False):
        blobs = []     # (label, blob) pairs whose gradient we check
        if not element_wise:
            for i, p in enumerate(layer.blobs):
                if layer.param_propagate(i):        # a parameter the layer gives no gradient is not checked
                    p.diff.zero_()
                    blobs.append((f"param {i}", p))
        for i, b in enumerate(bottom):
            if check_bottom < 0 or i == check_bottom:
                blobs.append((f"bottom {i}", b))
        propagate_down = [check_bottom < 0 or i == check_bottom for i in range(len(bottom))]

        # Analytic gradient.
        self._forward(layer, bottom, top)
        self._objective(top, top_id, top_index)
        layer.Backward(top, propagate_down, bottom)
        computed = [b.diff.detach().clone().reshape(-1) for _, b in blobs]

        # Numeric gradient, element by element.
        failures = []
        for (label, blob), grad in zip(blobs, computed):
            flat = blob.data.view(-1)
            indices = [top_index] if element_wise else range(blob.count())
            for k in indices:
                original = float(flat[k])
                flat[k] = original + self.stepsize
                self._forward(layer, bottom, top)
                positive = self._objective(top, top_id, top_index)
                flat[k] = original - self.stepsize
                self._forward(layer, bottom, top)
                negative = self._objective(top, top_id, top_index)
                flat[k] = original
                estimated = (positive - negative) / (2.0 * self.stepsize)
                value = float(grad[k])
                if self.kink_range > 0 and abs(original - self.kink) <= self.kink_range:
                    continue
                scale = max(abs(value), abs(estimated), 1.0)
                if abs(value - estimated) > self.threshold * scale:
                    failures.append(f"{label}[{k}]: computed {value:.6g}, estimated {estimated:.6g}")
        if failures:
            shown = "; ".join(failures[:8])
            more = f" (and {len(failures) - 8} more)" if len(failures) > 8 else ""
            raise GradientCheckError(f"layer '{layer.name}' ({layer.type}), objective "
                                     f"{'sum of squares' if top_id < 0 else f'top {top_id}[{top_index}]'}: "
                                     f"{shown}{more}")

    def _forward(self, layer, bottom, top):
        torch.manual_seed(self.seed)
        layer.Forward(bottom, top)

    @staticmethod
    def _objective(top, top_id, top_index):
        """Set the top diffs to d(objective)/d(top) and return the objective."""
        if top_id < 0:
            loss = 0.0
            for blob in top:
                blob.diff.copy_(blob.data)
                loss += 0.5 * float((blob.data * blob.data).sum())
            return loss
        for blob in top:
            blob.diff.zero_()
        blob = top[top_id]
        blob.diff.view(-1)[top_index] = 1.0
        return float(blob.data.reshape(-1)[top_index])
