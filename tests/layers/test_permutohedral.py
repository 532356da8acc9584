"""The permutohedral lattice against the exact Gaussian filter it approximates.

Comparisons use the normalised filter, filter(v) / filter(1) (densecrf's use of it): the lattice's raw sum has
a scale of its own (about 0.135 x the Gaussian sum in 2-D, 0.007-0.01 in 5-D, depending on the density), which
normalising cancels.  The lattice is an approximation: its implied kernel follows exp(-r^2 / 2) within about
10% per pair (it interpolates inside simplices whose edges are about the kernel's width), so the bounds below
are the measured errors of these point sets (values kept away from zero, as marginals are) with a margin of
about 2x, and the error is also checked against how much the filter changes its input, so that an identity
or a wrong width would fail.
"""
import pytest
import torch

from brewnet.errors import DenseCRFError
from brewnet.layers.permutohedral import build, gaussian_filter_exact


def _points(n, d, spread, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    features = torch.rand(n, d, generator=g, dtype=torch.float64) * spread
    # Smooth plus random values: the filter must both keep the smooth part and average out the noise.
    values = torch.stack([torch.sin(features.sum(1)) + 2.0, torch.rand(n, generator=g, dtype=torch.float64) + 1.0,
                          torch.cos(features[:, 0]) + 2.0], 1)
    return features.to(dtype), values.to(dtype)


def _relative_error(approx, exact):
    return ((approx - exact).abs() / exact.abs()).mean().item()


# (d, points, spread, bound on the mean relative error, bound on the largest): measured over four seeds, mean
# 0.69-0.73% and largest 3.7-3.9% in 2-D, mean 0.89-0.96% and largest 5.5-7.2% in 5-D.
CASES = [(2, 400, 4.0, 0.015, 0.08), (5, 600, 3.0, 0.02, 0.12)]


@pytest.mark.parametrize("d,n,spread,bound,largest", CASES)
def test_normalised_filter_matches_exact_gaussian(d, n, spread, bound, largest):
    features, values = _points(n, d, spread)
    approx = build(features).filter(values, normalized=True)
    exact = gaussian_filter_exact(features, values, normalized=True)
    assert approx.shape == (n, 3)
    assert _relative_error(approx, exact) < bound
    assert ((approx - exact).abs() / exact.abs()).max().item() < largest
    # The filter really smooths: the lattice's error (measured 4-6%) is a small part of what filtering changes.
    change = (exact - values).abs().mean().item()
    assert (approx - exact).abs().mean().item() < 0.1 * change


@pytest.mark.parametrize("d,n,spread,bound,largest", CASES)
def test_kernel_width_is_one_in_feature_units(d, n, spread, bound, largest):
    """The exact filter of width 1 is closer to the lattice than widths 0.8 or 1.25 (densecrf's scaling)."""
    features, values = _points(n, d, spread)
    approx = build(features).filter(values, normalized=True)
    errors = {s: _relative_error(approx, gaussian_filter_exact(features / s, values, normalized=True))
              for s in (0.8, 1.0, 1.25)}
    assert errors[1.0] < errors[0.8] and errors[1.0] < errors[1.25]


@pytest.mark.parametrize("d", [2, 5])
def test_constant_input_stays_constant(d):
    features, _ = _points(300, d, 3.0)
    out = build(features).filter(torch.full((300, 2), 7.5, dtype=torch.float64), normalized=True)
    torch.testing.assert_close(out, torch.full_like(out, 7.5), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("d", [2, 5])
def test_linear_in_the_values(d):
    features, values = _points(300, d, 3.0)
    other = values.flip(0) * 3.0 - 1.0
    lattice = build(features)
    for normalized in (False, True):
        combined = lattice.filter(2.0 * values - 0.5 * other, normalized=normalized)
        parts = 2.0 * lattice.filter(values, normalized=normalized) - 0.5 * lattice.filter(other, normalized=normalized)
        torch.testing.assert_close(combined, parts, rtol=1e-10, atol=1e-10)


def test_channels_filter_independently_and_1d_values():
    features, values = _points(200, 5, 3.0)
    lattice = build(features)
    together = lattice.filter(values)
    for c in range(values.shape[1]):
        torch.testing.assert_close(lattice.filter(values[:, c]), together[:, c], rtol=1e-12, atol=1e-12)


def test_raw_sum_is_a_scaled_gaussian_sum_in_2d():
    """Unnormalised, the 2-D lattice gives 0.135 x the Gaussian sum (measured), nearly uniformly over points."""
    features, _ = _points(400, 2, 4.0)
    ones = torch.ones(400, dtype=torch.float64)
    ratio = build(features).filter(ones) / gaussian_filter_exact(features, ones)
    assert 0.12 < ratio.mean().item() < 0.15
    assert ratio.std().item() / ratio.mean().item() < 0.05


def test_isolated_points_keep_their_values():
    features = torch.tensor([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0]], dtype=torch.float64)
    values = torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.float64)
    torch.testing.assert_close(build(features).filter(values, normalized=True), values)


@pytest.mark.parametrize("d", [2, 5])
def test_float32_agrees_with_float64(d):
    features, values = _points(300, d, 3.0)
    out64 = build(features).filter(values, normalized=True)
    out32 = build(features.float()).filter(values.float(), normalized=True)
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), out64, rtol=1e-5, atol=1e-5)


def test_bad_shapes_are_named():
    with pytest.raises(DenseCRFError, match=r"\(N, d\).*shape \(5,\)"):
        build(torch.zeros(5))
    lattice = build(torch.zeros(4, 2))
    with pytest.raises(DenseCRFError, match=r"shape \(3, 2\) do not fit a lattice of 4 points"):
        lattice.filter(torch.zeros(3, 2))


@pytest.mark.parametrize("d", [2, 5])
def test_transposed_filter_is_the_adjoint(d):
    """<K u, v> = <u, K^T v> for the raw and the normalised filter: what MultiStageMeanfield's backward uses."""
    features, values = _points(300, d, 3.0)
    other = torch.rand(300, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    lattice = build(features)
    for normalized in (False, True):
        forward = (lattice.filter(values, normalized=normalized) * other).sum()
        adjoint = (values * lattice.filter(other, normalized=normalized, transposed=True)).sum()
        torch.testing.assert_close(forward, adjoint, rtol=1e-12, atol=0)
    # The transpose is a different map (a normalised filter is not symmetric), not the filter again.
    assert (lattice.filter(other, normalized=True, transposed=True)
            - lattice.filter(other, normalized=True)).abs().max() > 1e-4
