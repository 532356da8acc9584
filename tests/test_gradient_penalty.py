"""brewnet.gradient_penalty: a WGAN-GP critic step moves D by the gradient of its whole loss (Wasserstein
terms and the penalty on interpolates), computed here by torch autograd's double backprop."""
import numpy as np
import torch

from brewnet import set_random_seed
from brewnet.adversarial import AdversarialTrainer, DeviceBatches
from brewnet.gradient_penalty import WassersteinGPLoss
from tests.test_adversarial import _d_reference, _leaf, d_net, g_net, params, solver


def test_a_critic_step_follows_the_wasserstein_loss_plus_the_penalty():
    set_random_seed(8)
    plain = 'base_lr: 1 lr_policy: "fixed" type: "SGD"'
    g, d = solver(g_net(), plain), solver(d_net(), plain)
    noises, reals = [], []
    batches = DeviceBatches(np.random.RandomState(0).normal(3.0, 0.5, size=(256, 1)), 16, seed=0)

    def recorded_noise(tensor):
        tensor.uniform_(-1, 1)
        noises.append(tensor.clone())

    def recorded_real():
        reals.append(batches())
        return reals[-1]
    loss = WassersteinGPLoss(weight=10.0, generator=torch.Generator().manual_seed(2))
    gan = AdversarialTrainer(g, d, real=recorded_real, noise=recorded_noise, loss=loss)
    g0, d0 = params(g), params(d)
    gan.discriminator_step()

    wd, wg = _leaf(d0), [t.double() for t in g0]
    real, fake = reals[0].double(), noises[0].double() @ wg[0].T + wg[1]
    e = torch.rand((16, 1), dtype=torch.float32, generator=torch.Generator().manual_seed(2)).double()
    x_hat = (e * real + (1 - e) * fake).requires_grad_()
    (grad,) = torch.autograd.grad(_d_reference(wd, x_hat).sum(), x_hat, create_graph=True)
    penalty = 10.0 * ((grad.norm(dim=1) - 1) ** 2).mean()
    total = _d_reference(wd, fake).mean() - _d_reference(wd, real).mean() + penalty
    total.backward()
    assert penalty.detach().item() > 1.0         # the penalty is a real part of the step, not a rounding error
    for before, ref, after in zip(d0, wd, params(d)):
        np.testing.assert_allclose((before - after).double().numpy(), ref.grad.numpy(), rtol=1e-3, atol=1e-6)
    assert abs(gan.history["d"][0].item() - total.item()) < 1e-4 * abs(total.item())
    assert abs(loss.norms[0].item() - grad.norm(dim=1).mean().item()) < 1e-4
    assert all(torch.equal(b, a) for b, a in zip(g0, params(g)))
