"""WGAN-GP's critic loss for brewnet.adversarial (book 10.4): the Wasserstein loss plus the gradient penalty

    weight * mean_n (||dD(x^_n)/dx^_n||_2 - target)^2,   x^_n = e_n x_n + (1 - e_n) x~_n,  e_n ~ U(0, 1),

on interpolates between a real batch x and G's samples x~ (Gulrajani et al. 2017: weight 10, target 1, no
weight clipping).  Its parameter gradient is a double backward through D's hand-written layers
(brewnet/layers/double_backward.py), added to D's diffs before D's update.

    gan = AdversarialTrainer(g, d, real, k=5, loss=WassersteinGPLoss(weight=10))
"""
import torch

from .adversarial import WassersteinLoss
from .layers.double_backward import gradient_penalty


def blob_name(net, blob):
    """The name under which `net` holds `blob`."""
    return next(name for name, b in net.blobs.items() if b is blob)


class WassersteinGPLoss(WassersteinLoss):
    """WassersteinLoss without clipping, plus the penalty after D's backward of the real and fake batches.
    `norms` and `penalties` keep each D step's mean gradient norm and penalty (0-d device tensors, read when
    convenient), to see the penalty work."""

    def __init__(self, weight=10.0, target=1.0, generator=None):
        super().__init__(clip=None)
        self.weight, self.target, self.generator_rng = float(weight), float(target), generator
        self.norms, self.penalties = [], []

    def interpolates(self, real, fake):
        """e x + (1 - e) x~ with one e ~ U(0, 1) per sample."""
        shape = (real.shape[0],) + (1,) * (real.dim() - 1)
        if self.generator_rng is None:      # torch's global stream, drawn where the batch lives
            e = torch.rand(shape, dtype=real.dtype, device=real.device)
        else:                               # a CPU torch.Generator of the caller's (reproducible draws)
            e = torch.rand(shape, dtype=real.dtype, generator=self.generator_rng).to(real.device)
        return e * real + (1 - e) * fake

    def after_discriminator_backward(self, trainer, real, fake):
        net = trainer.d_net
        trainer.d_in.store_data(self.interpolates(real, fake))
        net.forward()
        score = self.score or next(iter(trainer.d_outputs))
        penalty, norms = gradient_penalty(net, blob_name(net, trainer.d_in), score, self.weight, self.target)
        self.norms.append(norms.mean())
        self.penalties.append(penalty)
        return penalty
