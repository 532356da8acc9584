"""Book 10.3 (InfoGAN) and 10.4 (WGAN, WGAN-GP), quick versions: the numbers they report, their figures and
quality rows, and the pieces they are built from (InfoGAN's information term, the slant/thickness measure)."""
import math
import os

import numpy as np
import pytest
import torch

from brewnet.core.blob import Blob
from examples.book import registry
from examples.book.ch10_common import QUICK_SAMPLES
from examples.book.ch10_infogan import CLASSES, CONTINUOUS, NOISE, InfoGANLoss, slant_and_thickness


@pytest.fixture(scope="module")
def out_root(tmp_path_factory):
    """One folder for both experiments: the quick LeNet classifier is trained once, kept there."""
    return str(tmp_path_factory.mktemp("book"))


def run(ref, out_root):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)        # as `python -m examples.book` runs them
    try:
        return registry.run_experiment(ref, registry.Context(quick=True, out_root=out_root))
    finally:
        torch.set_num_threads(threads)


def test_wgan_and_wgan_gp_quick(out_root):
    result = run("10.4", out_root)
    wgan, gp = result.numbers["WGAN"], result.numbers["WGAN-GP"]
    for n in (wgan, gp):
        assert (n["g_steps"], n["d_steps"]) == (3, 6)           # 2 critic steps per G step
        assert sum(n["histogram"]) == n["samples"] == QUICK_SAMPLES
        assert 1.0 <= n["score"] <= 10.0
        assert all(math.isfinite(n[key]) for key in ("wasserstein_start", "wasserstein_end"))
    # clipping holds every critic weight in [-0.01, 0.01] (the std-0.02 filler puts many outside first)
    assert wgan["d_param_max"] == pytest.approx(0.01, abs=1e-7)
    assert gp["d_param_max"] > 0.02                              # no clipping with the penalty
    # the critic starts with tiny input gradients (std-0.02 weights); the penalty pulls them towards 1
    assert 0 < gp["grad_norm_start"] < 0.05 and gp["grad_norm_end"] > gp["grad_norm_start"]
    names = sorted(os.path.basename(p) for p in result.figures)
    assert names == sorted(["wgan_samples_iter0.png", "wgan_samples_iter1.png", "wgan_samples_iter3.png",
                            "wgan_losses.png", "wgan-gp_samples_iter0.png", "wgan-gp_samples_iter1.png",
                            "wgan-gp_samples_iter3.png", "wgan-gp_losses.png", "wgan-gp_grad_norm.png"])
    assert all(os.path.getsize(p) > 0 for p in result.figures)
    assert sorted(result.quality) == ["WGAN", "WGAN-GP"]
    assert result.quality["WGAN-GP"].startswith(f"| WGAN-GP | 10.4 | {QUICK_SAMPLES} | ")


def test_infogan_quick(out_root):
    result = run("10.3", out_root)
    n = result.numbers
    assert n["iterations"] == 4 and n["samples"] == sum(n["histogram"]) == QUICK_SAMPLES
    # an untrained Q guesses the code at chance: cross-entropy ln 10, information 0 nats
    assert abs(n["information_start"]) < 0.05
    assert sorted(n["code_mapping"]) == list(range(10)) and sorted(n["code_mapping"].values()) == list(range(10))
    assert 0.1 <= n["code_accuracy"] <= 1.0
    assert set(n["effects"]) == {"c2", "c3"}
    assert all(-1 <= r <= 1 for e in n["effects"].values() for r in e.values())
    assert sorted(os.path.basename(p) for p in result.figures) == [
        "categorical_code.png", "continuous_code_c2.png", "continuous_code_c3.png", "losses.png"]
    assert result.quality["InfoGAN"].startswith(f"| InfoGAN | 10.3 | {QUICK_SAMPLES} | ")


def test_infogan_information_term_is_the_gradient_of_its_loss():
    """The diffs InfoGANLoss writes at Q's outputs are d/d(outputs) of CE(c1) + 1/2 |c23 - mean|^2 (batch
    means), as autograd computes them."""
    torch.manual_seed(0)
    loss = InfoGANLoss(weight=1.0)
    z = torch.empty(6, NOISE + CLASSES + CONTINUOUS)
    loss(z)
    assert torch.equal(z[:, NOISE:NOISE + CLASSES].argmax(1), loss.codes)
    assert torch.equal(z[:, NOISE + CLASSES:], loss.continuous)
    logits, means = torch.randn(6, CLASSES), torch.randn(6, CONTINUOUS)
    outputs = {"score": Blob((6, 1)), "q_cat": Blob((6, CLASSES)), "q_cont": Blob((6, CONTINUOUS))}
    outputs["q_cat"].data.copy_(logits)
    outputs["q_cont"].data.copy_(means)
    value = loss.generator(outputs) - torch.nn.functional.softplus(-outputs["score"].data).mean()
    leaf_l, leaf_m = logits.clone().requires_grad_(), means.clone().requires_grad_()
    expected = (torch.nn.functional.cross_entropy(leaf_l, loss.codes)
                + 0.5 * ((leaf_m - loss.continuous) ** 2).sum(1).mean())
    expected.backward()
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    torch.testing.assert_close(outputs["q_cat"].diff, leaf_l.grad)
    torch.testing.assert_close(outputs["q_cont"].diff, leaf_m.grad)


def test_slant_and_thickness_by_hand():
    image = -np.ones((1, 28, 28))
    for row in range(4, 24):                    # a stroke leaning right towards the top (y grows upwards)
        col = 10 + (24 - row) // 3
        image[0, row, col:col + 2] = 1
    upright = -np.ones((1, 28, 28))
    upright[0, 4:24, 13:17] = 1                 # a vertical bar, twice as thick
    slant, thickness = slant_and_thickness(np.concatenate([image, upright]))
    assert slant[0] == pytest.approx(1 / 3, abs=0.05) and slant[1] == pytest.approx(0.0, abs=1e-9)
    assert thickness.tolist() == [40 / 784, 80 / 784]
