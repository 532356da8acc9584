"""Mean field's shortcuts against the general formulas they replace: Potts as softmax(m - U) instead of the
compatibility product, messages accumulated in place, one spatial lattice shared by a batch."""
import torch

from brewnet.layers.dense_crf import dense_crf, dense_crf_exact, mean_field
from tests.layers.test_dense_crf import PARAMS, _scene


def test_potts_shortcut_equals_the_compatibility_product():
    """2 (1 - I) is not Potts' matrix, so it takes the matmul path; with both weights halved it is the same
    model as Potts with the weights as given."""
    _, image, unary = _scene(11, labels=3)
    theta_alpha, theta_beta, theta_gamma, w_bilateral, w_spatial, iterations = PARAMS
    general = 2.0 * (1 - torch.eye(3, dtype=torch.float64))
    for infer in (dense_crf, dense_crf_exact):
        potts = infer(unary, image, *PARAMS)
        through_matmul = infer(unary, image, theta_alpha, theta_beta, theta_gamma, w_bilateral / 2, w_spatial / 2,
                               iterations, compatibility=general)
        torch.testing.assert_close(potts, through_matmul, rtol=1e-12, atol=1e-14)
        assert (potts - torch.softmax(-unary, 0)).abs().max() > 0.05     # the pairwise term did act


def test_mean_field_leaves_the_filters_outputs_alone():
    """Messages add up in place in a tensor of their own: a filter may hand back a tensor it keeps."""
    g = torch.Generator().manual_seed(0)
    unary = torch.rand(20, 3, generator=g, dtype=torch.float64)
    kept = [torch.rand(20, 3, generator=g, dtype=torch.float64) for _ in range(2)]
    copies = [k.clone() for k in kept]
    q = mean_field(unary, [lambda q: kept[0], lambda q: kept[1]], [2.0, 0.5], 1 - torch.eye(3, dtype=torch.float64), 2)
    for k, c in zip(kept, copies):
        assert torch.equal(k, c)
    expected = torch.softmax(2.0 * kept[0] + 0.5 * kept[1] - unary, 1)      # Potts, messages constant
    torch.testing.assert_close(q, expected, rtol=1e-12, atol=1e-15)


def test_batch_of_images_of_one_size_shares_the_spatial_lattice_and_matches_one_by_one():
    scenes = [_scene(s, labels=3) for s in (12, 13, 14)]
    unary = torch.stack([u for _, _, u in scenes])
    image = torch.stack([i for _, i, _ in scenes])
    batched = dense_crf(unary, image, *PARAMS)
    for n in range(3):
        torch.testing.assert_close(batched[n], dense_crf(unary[n], image[n], *PARAMS), rtol=1e-12, atol=1e-14)
