"""Dense CRF mean field: the lattice version against the exact O(N^2) one, and what inference does to a noisy
labelling of a two-region image."""
import pytest
import torch

from brewnet.errors import DenseCRFError
from brewnet.layers.dense_crf import (bilateral_features, dense_crf, dense_crf_exact, gaussian_kernel,
                                      spatial_features)

COLOURS = torch.tensor([[200.0, 60.0, 60.0], [60.0, 80.0, 200.0], [90.0, 200.0, 90.0]])
# theta_alpha, theta_beta, theta_gamma, w_bilateral, w_spatial, iterations: the kernel widths scaled to a
# 12x12 image (crfasrnn's 80 / 13 / 3 are for 500x500 images), colours in 0-255.
PARAMS = (3.0, 20.0, 3.0, 5.0, 3.0, 5)


def _scene(seed, size=12, labels=2, noise=1.4):
    """A two-region image (a bar of region 1 reaching into region 0, a third label never true) with noisy
    colours, its true labels, and a noisy unary (minus log-probabilities) that favours the truth 0.8 : 0.2."""
    g = torch.Generator().manual_seed(seed)
    truth = torch.zeros(size, size, dtype=torch.long)
    truth[:, size // 2:] = 1
    truth[size // 3: 2 * size // 3, 2:5] = 1
    image = COLOURS[truth].permute(2, 0, 1) + 10.0 * torch.randn(3, size, size, generator=g)
    p = torch.full((labels, size, size), 0.2 / (labels - 1))
    p.scatter_(0, truth[None], 0.8)
    logits = p.log() + noise * torch.randn(labels, size, size, generator=g)
    return truth, image.double(), -torch.log_softmax(logits, 0).double()


def _accuracy(q, truth):
    return (q.argmax(0) == truth).double().mean().item()


@pytest.mark.parametrize("infer", [dense_crf, dense_crf_exact])
def test_marginals_sum_to_one(infer):
    _, image, unary = _scene(0, labels=3)
    q = infer(unary, image, *PARAMS)
    assert q.shape == unary.shape and q.dtype == torch.float64
    torch.testing.assert_close(q.sum(0), torch.ones(12, 12, dtype=torch.float64))
    assert bool((q > 0).all())


@pytest.mark.parametrize("infer", [dense_crf, dense_crf_exact])
def test_zero_weights_give_the_softmax_of_minus_unary(infer):
    _, image, unary = _scene(1, labels=3)
    q = infer(unary, image, 3.0, 20.0, 3.0, 0.0, 0.0, 5)
    torch.testing.assert_close(q, torch.softmax(-unary, 0))


def test_scores_convention_is_minus_energy():
    _, image, unary = _scene(2)
    torch.testing.assert_close(dense_crf(-unary, image, *PARAMS, unary_kind="scores"),
                               dense_crf(unary, image, *PARAMS))


@pytest.mark.parametrize("seed", range(3))
def test_lattice_marginals_agree_with_exact(seed):
    """Measured over five seeds: argmax identical on every pixel, mean |difference| 0.0002-0.005, largest
    0.013-0.141 (pixels near a tie between labels, where the lattice's ~1% filter error moves Q most)."""
    _, image, unary = _scene(seed, labels=3)
    fast, exact = dense_crf(unary, image, *PARAMS), dense_crf_exact(unary, image, *PARAMS)
    assert (fast.argmax(0) == exact.argmax(0)).double().mean().item() >= 0.97
    assert (fast - exact).abs().mean().item() < 0.01
    assert (fast - exact).abs().max().item() < 0.25


def test_one_iteration_of_the_exact_version_by_hand():
    """One iteration written out: normalised kernels (self term included), Potts, softmax of minus energy."""
    _, image, unary = _scene(3, size=6, labels=3)
    q0 = torch.softmax(-unary.reshape(3, -1).t(), 1)
    k1 = torch.exp(-0.5 * torch.cdist(bilateral_features(image, 3.0, 20.0),
                                      bilateral_features(image, 3.0, 20.0)).square())
    k2 = torch.exp(-0.5 * torch.cdist(spatial_features(6, 6, 3.0, torch.float64),
                                      spatial_features(6, 6, 3.0, torch.float64)).square())
    m = 5.0 * (k1 @ q0) / k1.sum(1, keepdim=True) + 3.0 * (k2 @ q0) / k2.sum(1, keepdim=True)
    pairwise = m.sum(1, keepdim=True) - m      # Potts: the messages of every other label
    expected = torch.softmax(-unary.reshape(3, -1).t() - pairwise, 1).t().reshape(3, 6, 6)
    torch.testing.assert_close(dense_crf_exact(unary, image, 3.0, 20.0, 3.0, 5.0, 3.0, 1), expected)
    torch.testing.assert_close(gaussian_kernel(spatial_features(6, 6, 3.0, torch.float64)),
                               k2 / k2.sum(1, keepdim=True))


def test_crfasrnn_compatibility_and_weight_matrices_give_the_same_marginals():
    """crfasrnn's Potts is -identity on (L, L) weight matrices: a per-pixel constant away from 1 - identity."""
    _, image, unary = _scene(4, labels=3)
    eye = torch.eye(3, dtype=torch.float64)
    crfasrnn = dense_crf(unary, image, 3.0, 20.0, 3.0, 5.0 * eye, 3.0 * eye, 5, compatibility=-eye)
    torch.testing.assert_close(crfasrnn, dense_crf(unary, image, *PARAMS))


def test_noisy_labelling_is_cleaned_up():
    """Seeds 5-9 measured: 72-73% of pixels right by the unary alone, 99.8-100% after the CRF."""
    truth, image, unary = _scene(5, size=32, noise=1.6)
    before = _accuracy(-unary, truth)
    after = _accuracy(dense_crf(unary, image, 5.0, 20.0, 3.0, 5.0, 3.0, 5), truth)
    assert before < 0.8
    assert after > 0.98


def test_batch_and_float32():
    scenes = [_scene(s, labels=3) for s in (6, 7)]
    unary = torch.stack([u for _, _, u in scenes])
    image = torch.stack([i for _, i, _ in scenes])
    batched = dense_crf(unary.float(), image.float(), *PARAMS)
    assert batched.shape == (2, 3, 12, 12) and batched.dtype == torch.float32
    for n in range(2):
        torch.testing.assert_close(batched[n].double(), dense_crf(unary[n], image[n], *PARAMS),
                                   rtol=1e-4, atol=1e-4)


def test_unary_and_image_of_different_sizes_are_refused():
    with pytest.raises(DenseCRFError, match=r"unary \(2, 12, 12\) and image \(3, 10, 12\) differ"):
        dense_crf(torch.zeros(2, 12, 12), torch.zeros(3, 10, 12), *PARAMS)


def test_image_without_three_channels_is_refused():
    with pytest.raises(DenseCRFError, match=r"image \(1, 12, 12\) has 1 channels.*needs 3"):
        dense_crf_exact(torch.zeros(2, 12, 12), torch.zeros(1, 12, 12), *PARAMS)
    with pytest.raises(DenseCRFError, match=r"unary \(2, 12, 12\) and image \(12, 12\)"):
        dense_crf(torch.zeros(2, 12, 12), torch.zeros(12, 12), *PARAMS)


def test_bad_compatibility_and_theta_are_refused():
    with pytest.raises(DenseCRFError, match=r"compatibility \(3, 3\) does not fit 2 labels"):
        dense_crf(torch.zeros(2, 4, 4), torch.zeros(3, 4, 4), *PARAMS, compatibility=torch.eye(3))
    with pytest.raises(DenseCRFError, match="theta_beta must be positive, got 0"):
        dense_crf(torch.zeros(2, 4, 4), torch.zeros(3, 4, 4), 3.0, 0, 3.0, 1.0, 1.0, 1)
