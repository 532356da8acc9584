"""brewnet.adversarial: the alternating G/D loop on two nets, each with its own solver (pycaffe's API)."""
import numpy as np
import pytest
import torch

import caffe
from brewnet import set_random_seed
from brewnet.adversarial import (AdversarialError, AdversarialTrainer, DeviceBatches, MinimaxLoss,
                                 NonSaturatingLoss, WassersteinLoss, frozen_params)
from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text

BATCH = 16


def ip(name, bottom, n, std=0.5):
    return (f'layer {{ name: "{name}" type: "InnerProduct" bottom: "{bottom}" top: "{name}" '
            f'inner_product_param {{ num_output: {n} weight_filler {{ type: "gaussian" std: {std} }} '
            f'bias_filler {{ type: "constant" value: 0.1 }} }} }}')


def g_net(batch=BATCH):
    """x = a z + b: a 1-D generator."""
    return (f'name: "G" force_backward: true layer {{ name: "z" type: "Input" top: "z" input_param {{ shape '
            f'{{ dim: {batch} dim: 1 }} }} }} ' + ip("gen", "z", 1, std=1.0))


def d_net(batch=BATCH):
    return (f'name: "D" force_backward: true layer {{ name: "data" type: "Input" top: "data" input_param {{ shape '
            f'{{ dim: {batch} dim: 1 }} }} }} ' + ip("h", "data", 8)
            + ' layer { name: "act" type: "TanH" bottom: "h" top: "h" } ' + ip("score", "h", 1))


def solver(net_text, solver_text="base_lr: 0.05 momentum: 0.5 lr_policy: \"fixed\" type: \"Adam\" momentum2: 0.999"):
    param = parse_text(f'{solver_text} display: 0 net_param {{ {net_text} }}', caffe_pb2.SolverParameter())
    return caffe.get_solver(param)


def params(s):
    return [b.data.clone() for b in s._solver.net.learnable_params]


def real_batches(seed=0, n=512):
    rng = np.random.RandomState(seed)
    return DeviceBatches(rng.normal(3.0, 0.5, size=(n, 1)), BATCH, seed=seed)


def test_a_generator_step_leaves_the_discriminator_untouched():
    set_random_seed(3)
    g, d = solver(g_net()), solver(d_net())
    gan = AdversarialTrainer(g, d, real=real_batches())
    gan.step(2)                          # momentum history exists in both solvers
    d_before, g_before = params(d), params(g)
    d_history = [h.data.clone() for h in d._solver.history]
    d_diffs = [b.diff.clone() for b in d._solver.net.learnable_params]
    gan.generator_step()
    for before, blob in zip(d_before, d._solver.net.learnable_params):
        assert torch.equal(before, blob.data)
    for before, blob in zip(d_diffs, d._solver.net.learnable_params):
        assert torch.equal(before, blob.diff)       # no parameter gradient was computed in D
    for before, h in zip(d_history, d._solver.history):
        assert torch.equal(before, h.data)
    assert any(not torch.equal(b, a) for b, a in zip(g_before, params(g)))
    assert all(layer.param_propagate_down == [True, True]
               for layer in d._solver.net.layers if layer.type == "InnerProduct")


def test_a_discriminator_step_leaves_the_generator_untouched():
    set_random_seed(4)
    g, d = solver(g_net()), solver(d_net())
    gan = AdversarialTrainer(g, d, real=real_batches())
    g_before, d_before = params(g), params(d)
    gan.discriminator_step()
    assert all(torch.equal(b, a) for b, a in zip(g_before, params(g)))
    assert all(not torch.equal(b, a) for b, a in zip(d_before, params(d)))


def _d_reference(w, x):
    """The test's D written as torch ops on the weights w (float64): InnerProduct 8, TanH, InnerProduct 1."""
    h = torch.tanh(x @ w[0].T + w[1])
    return (h @ w[2].T + w[3]).reshape(-1)


def _leaf(tensors):
    return [t.double().clone().requires_grad_(True) for t in tensors]


def test_the_steps_follow_the_non_saturating_gradients():
    """SGD with lr 1 and no momentum: each parameter moves by minus the loss's gradient, computed here by
    autograd on the same weights, noise and real batch."""
    set_random_seed(5)
    plain = 'base_lr: 1 lr_policy: "fixed" type: "SGD"'
    g, d = solver(g_net(), plain), solver(d_net(), plain)
    noises, reals, batches = [], [], real_batches()

    def recorded_noise(tensor):
        tensor.uniform_(-1, 1)
        noises.append(tensor.clone())

    def recorded_real():
        reals.append(batches())
        return reals[-1]
    gan = AdversarialTrainer(g, d, real=recorded_real, noise=recorded_noise)
    g0, d0 = params(g), params(d)
    gan.discriminator_step()
    wd, wg = _leaf(d0), [t.double() for t in g0]
    fake = noises[0].double() @ wg[0].T + wg[1]
    loss = (torch.nn.functional.softplus(-_d_reference(wd, reals[0].double())).mean()
            + torch.nn.functional.softplus(_d_reference(wd, fake)).mean())
    loss.backward()
    for before, ref, after in zip(d0, wd, params(d)):
        np.testing.assert_allclose((before - after).double().numpy(), ref.grad.numpy(), rtol=1e-4, atol=1e-6)
    assert gan.history["d"][0].item() == pytest.approx(loss.item(), rel=1e-5)

    d1 = params(d)
    gan.generator_step()
    wg, wd = _leaf(g0), [t.double() for t in d1]
    g_loss = torch.nn.functional.softplus(-_d_reference(wd, noises[1].double() @ wg[0].T + wg[1])).mean()
    g_loss.backward()
    for before, ref, after in zip(g0, wg, params(g)):
        np.testing.assert_allclose((before - after).double().numpy(), ref.grad.numpy(), rtol=1e-4, atol=1e-6)
    assert gan.history["g"][0].item() == pytest.approx(g_loss.item(), rel=1e-5)


def test_a_toy_gan_learns_a_one_dimensional_gaussian():
    """Real x ~ N(3, 0.5); G starts near N(0.1, 1). After 300 rounds G's samples sit around 3."""
    set_random_seed(6)
    g, d = solver(g_net(64)), solver(d_net(64))
    rng = np.random.RandomState(0)
    gan = AdversarialTrainer(g, d, real=DeviceBatches(rng.normal(3.0, 0.5, size=(2048, 1)), 64, seed=1))
    start = gan.sample().ravel()
    gan.step(300)
    samples = np.concatenate([gan.sample().ravel() for _ in range(8)])
    assert abs(start.mean() - 3.0) > 2.0
    assert abs(samples.mean() - 3.0) < 0.3, samples.mean()
    assert 0.1 < samples.std() < 1.5, samples.std()
    d_losses, g_losses = gan.losses()
    assert d_losses.shape == (300,) and g_losses.shape == (300,)
    # At equilibrium D cannot tell: its loss nears 2 log 2 = 1.386 and G's log 2 = 0.693.
    assert abs(d_losses[-50:].mean() - 2 * np.log(2)) < 0.25, d_losses[-50:].mean()


def test_k_critic_steps_per_generator_step_and_wasserstein_clipping():
    set_random_seed(7)
    g, d = solver(g_net()), solver(d_net(), 'base_lr: 0.01 lr_policy: "fixed" type: "RMSProp" rms_decay: 0.9')
    gan = AdversarialTrainer(g, d, real=real_batches(), k=5, loss=WassersteinLoss(clip=0.01))
    gan.step(2)
    d_losses, g_losses = gan.losses()
    assert d_losses.shape == (10,) and g_losses.shape == (2,)
    assert d.iter == 10 and g.iter == 2
    for blob in d._solver.net.learnable_params:
        assert float(blob.data.abs().max()) <= 0.01


def test_minimax_loss_gradient_is_minus_sigmoid():
    class Blob:
        def __init__(self, s):
            self.data, self.diff = s, torch.zeros_like(s)

        def store_diff(self, t):
            self.diff.copy_(t)
    b = Blob(torch.tensor([[-2.0], [0.0], [3.0]]))
    loss = MinimaxLoss().generator({"score": b})
    s = b.data.reshape(-1)
    np.testing.assert_allclose(b.diff.reshape(-1).numpy(), (-torch.sigmoid(s) / 3).numpy(), rtol=1e-6)
    assert float(loss) == pytest.approx(float(torch.log1p(-torch.sigmoid(s)).mean()), rel=1e-6)
    loss = NonSaturatingLoss().generator({"score": b})
    assert float(loss) == pytest.approx(float(-torch.log(torch.sigmoid(s)).mean()), rel=1e-6)


def test_errors_name_what_does_not_fit():
    no_force = d_net().replace("force_backward: true", "")
    with pytest.raises(AdversarialError, match="force_backward: true"):
        AdversarialTrainer(solver(g_net()), solver(no_force), real=real_batches())
    with pytest.raises(AdversarialError,
                       match=r"G's output 'gen' has shape \(8, 1\) but D's input 'data' has \(16, 1\)"):
        AdversarialTrainer(solver(g_net(8)), solver(d_net()), real=real_batches())
    with pytest.raises(AdversarialError, match="no blob 'noise'"):
        AdversarialTrainer(solver(g_net()), solver(d_net()), real=real_batches(), g_input="noise")
    with pytest.raises(AdversarialError, match="k >= 1"):
        AdversarialTrainer(solver(g_net()), solver(d_net()), real=real_batches(), k=0)


def test_device_batches_cover_an_epoch_before_repeating():
    batches = DeviceBatches(np.arange(12, dtype=np.float32)[:, None], 4, seed=0)
    seen = np.concatenate([batches().numpy().ravel() for _ in range(3)])
    assert sorted(seen) == list(range(12)) and batches.epoch == 1
    batches()
    assert batches.epoch == 2


def test_frozen_params_restores_the_flags():
    net = solver(d_net())._solver.net
    with frozen_params(net):
        assert all(layer.param_propagate_down == [False, False] for layer in net.layers if layer.blobs)
    assert all(layer.param_propagate_down == [True, True] for layer in net.layers if layer.blobs)
