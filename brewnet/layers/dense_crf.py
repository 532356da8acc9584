"""Fully connected CRF with Gaussian edge potentials (Krähenbühl & Koltun 2011): mean-field inference, fast
(permutohedral lattice) and exact (dense N x N kernels, for small images and as the test oracle).

Library code for crfasrnn's MultiStageMeanfield; no layer type is registered here.

Pixel i has position p_i = (x, y) = (column, row) and colour I_i = (r, g, b) in the units of theta_beta
(crfasrnn: 0-255). Two kernels over the features f = p / theta and (p / theta_alpha, I / theta_beta):

    appearance (bilateral)  k1(i, j) = exp(-|p_i - p_j|^2 / 2 theta_alpha^2 - |I_i - I_j|^2 / 2 theta_beta^2)
    smoothness (spatial)    k2(i, j) = exp(-|p_i - p_j|^2 / 2 theta_gamma^2)

Mean field, n iterations from Q = softmax(-U):

    m_i(l)        = w1 * K1(Q)_i(l) + w2 * K2(Q)_i(l)
    pairwise_i(l) = sum_l' mu(l, l') m_i(l')          (Potts: mu = 1 - identity)
    Q_i           = softmax(-U_i - pairwise_i)

Messages follow densecrf / crfasrnn exactly, not the paper's sum over j != i: each kernel is normalised,

    K(Q)_i = sum_j k(i, j) Q_j / sum_j k(i, j)        (j = i included),

which is what the lattice computes well (its absolute scale is not the Gaussian's; normalising cancels it), and
what the crfasrnn weights (bilateral.par / spatial.par, trained models) were fitted to.  The exact version uses
the same definition, so the two differ only by the lattice's approximation.
In densecrf (pydensecrf) terms this is NORMALIZE_AFTER with Potts compat = the weight (addPairwiseGaussian /
addPairwiseBilateral, sxy / srgb = the thetas): the marginals then agree up to float32 rounding
(tests/layers/test_dense_crf_anchor.py); its default NORMALIZE_SYMMETRIC is a different model.

Unary conventions (`unary_kind`): "energy" (default) takes U = minus log-probabilities (densecrf's unary);
"scores" takes the network's scores S as crfasrnn does, U = -S (so Q = softmax(S) before the first iteration).
Weights w1 (bilateral), w2 (spatial) are numbers, or (L, L) matrices applied to the messages as crfasrnn's
kernel-weight blobs are (a diagonal holds per-label weights).  Potts with crfasrnn's compatibility -identity
gives the same Q: the two differ by a per-pixel constant, which the softmax removes.
"""
import torch

from ..errors import DenseCRFError
from . import permutohedral


def spatial_features(height, width, theta_gamma, dtype=torch.float32, device=None):
    """(H*W, 2) features (x, y) / theta_gamma, pixels in row-major order."""
    y, x = torch.meshgrid(torch.arange(height, dtype=dtype, device=device),
                          torch.arange(width, dtype=dtype, device=device), indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1)], 1) / theta_gamma


def bilateral_features(image, theta_alpha, theta_beta):
    """(H*W, 5) features (x / theta_alpha, y / theta_alpha, r / theta_beta, g / theta_beta, b / theta_beta) of
    a (3, H, W) image."""
    _, height, width = image.shape
    xy = spatial_features(height, width, theta_alpha, image.dtype, image.device)
    return torch.cat([xy, image.reshape(3, -1).t() / theta_beta], 1)


def dense_crf(unary, image, theta_alpha, theta_beta, theta_gamma, w_bilateral, w_spatial, iterations,
              compatibility=None, unary_kind="energy"):
    """Mean-field marginals Q, shaped like `unary` ((L, H, W) or (N, L, H, W)), with the Gaussian filtering done
    on permutohedral lattices (one per image and kernel, shared by every iteration and label)."""
    return _infer(unary, image, (theta_alpha, theta_beta, theta_gamma), (w_bilateral, w_spatial), iterations,
                  compatibility, unary_kind, _lattice_filters)


def dense_crf_exact(unary, image, theta_alpha, theta_beta, theta_gamma, w_bilateral, w_spatial, iterations,
                    compatibility=None, unary_kind="energy"):
    """The same mean field with dense N x N kernel matrices: O(N^2) memory and time, for images of a few
    thousand pixels at most (the oracle of `dense_crf`)."""
    return _infer(unary, image, (theta_alpha, theta_beta, theta_gamma), (w_bilateral, w_spatial), iterations,
                  compatibility, unary_kind, _exact_filters)


def mean_field(unary, filters, weights, compatibility, iterations):
    """Mean field on one image: `unary` (P, L) energies, `filters` the normalised kernels (callables taking
    and returning (P, L)), `weights` one number or (L, L) matrix per kernel."""
    unary = unary.contiguous()      # (P, L) rows: a transposed view would make every step below strided
    potts = _is_potts(compatibility)
    q = torch.softmax(-unary, dim=1)
    for _ in range(iterations):
        messages = _messages(q, filters, weights)
        if potts:
            # Potts' pairwise term sum_{l' != l} m(l') = sum(m) - m(l): the sum is the same for every label of a
            # pixel and the softmax removes it, leaving softmax(m - U) (densecrf's own form), with no matmul.
            q = torch.softmax(messages.sub_(unary), dim=1)
        else:
            q = torch.softmax(-unary - messages @ compatibility.t(), dim=1)
    return q


def _messages(q, filters, weights):
    """sum_k w_k K_k(q), accumulated in place into the first term (a new tensor: the filters' outputs are
    never written to, in case a filter hands back a tensor it keeps)."""
    total = None
    for weight, kernel in zip(weights, filters):
        filtered = kernel(q)
        if total is None:
            total = _weighted(weight, filtered)
        elif isinstance(weight, (int, float)):
            total.add_(filtered, alpha=weight)
        else:
            total.add_(_weighted(weight, filtered))
    return total


def _weighted(weight, messages):
    return messages @ weight.t() if isinstance(weight, torch.Tensor) and weight.dim() == 2 else messages * weight


def _is_potts(compatibility):
    labels = compatibility.shape[0]
    eye = torch.eye(labels, dtype=compatibility.dtype, device=compatibility.device)
    return bool(torch.equal(compatibility, 1 - eye))


def _lattice_filters(image, thetas, shared):
    theta_alpha, theta_beta, theta_gamma = thetas
    _, height, width = image.shape
    bilateral = permutohedral.build(bilateral_features(image, theta_alpha, theta_beta))
    if "spatial" not in shared:     # the spatial kernel depends on the grid only: one lattice for the batch
        shared["spatial"] = permutohedral.build(spatial_features(height, width, theta_gamma, image.dtype,
                                                                 image.device))
    spatial = shared["spatial"]
    return [lambda q: bilateral.filter(q, normalized=True), lambda q: spatial.filter(q, normalized=True)]


def _exact_filters(image, thetas, shared):
    theta_alpha, theta_beta, theta_gamma = thetas
    _, height, width = image.shape
    if "spatial" not in shared:
        shared["spatial"] = gaussian_kernel(spatial_features(height, width, theta_gamma, image.dtype, image.device))
    kernels = [gaussian_kernel(bilateral_features(image, theta_alpha, theta_beta)), shared["spatial"]]
    return [lambda q, k=k: k @ q for k in kernels]


def gaussian_kernel(features, normalized=True):
    """Dense (P, P) matrix exp(-|f_i - f_j|^2 / 2), rows divided by their sums when `normalized`."""
    kernel = torch.exp(-0.5 * torch.cdist(features, features).square())
    return kernel / kernel.sum(1, keepdim=True) if normalized else kernel


def _infer(unary, image, thetas, weights, iterations, compatibility, unary_kind, make_filters):
    batched = unary.dim() == 4
    unary, image = _check_inputs(unary, image, thetas, iterations, unary_kind)
    labels = unary.shape[1]
    compatibility = _compatibility(compatibility, labels, unary)
    weights = [_weight(w, labels, unary, name) for w, name in zip(weights, ("w_bilateral", "w_spatial"))]
    if unary_kind == "scores":
        unary = -unary
    out, shared = [], {}
    for u, img in zip(unary, image.to(unary.dtype)):
        flat = u.reshape(labels, -1).t()
        q = mean_field(flat, make_filters(img, thetas, shared), weights, compatibility, iterations)
        out.append(q.t().reshape(u.shape))
    q = torch.stack(out)
    return q if batched else q[0]


def _check_inputs(unary, image, thetas, iterations, unary_kind):
    shapes = f"unary {tuple(unary.shape)} and image {tuple(image.shape)}"
    if unary.dim() not in (3, 4) or image.dim() != unary.dim():
        raise DenseCRFError(f"{shapes}: expected unary (L, H, W) with image (3, H, W), or unary (N, L, H, W) "
                            "with image (N, 3, H, W)")
    if image.shape[-3] != 3:
        raise DenseCRFError(f"image {tuple(image.shape)} has {image.shape[-3]} channels: the appearance kernel "
                            "needs 3 (r, g, b)")
    if unary.shape[:-3] != image.shape[:-3] or unary.shape[-2:] != image.shape[-2:]:
        raise DenseCRFError(f"{shapes} differ in batch or spatial size (H, W)")
    if unary.dim() == 3:
        unary, image = unary[None], image[None]
    if not torch.is_floating_point(unary):
        raise DenseCRFError(f"unary must be floating point, got {unary.dtype}")
    for name, theta in zip(("theta_alpha", "theta_beta", "theta_gamma"), thetas):
        if not theta > 0:
            raise DenseCRFError(f"{name} must be positive, got {theta}")
    if not isinstance(iterations, int) or iterations < 0:
        raise DenseCRFError(f"iterations must be a non-negative integer, got {iterations!r}")
    if unary_kind not in ("energy", "scores"):
        raise DenseCRFError(f"unary_kind must be 'energy' (minus log-probabilities) or 'scores', got {unary_kind!r}")
    return unary, image


def _compatibility(compatibility, labels, like):
    if compatibility is None:
        return 1 - torch.eye(labels, dtype=like.dtype, device=like.device)
    compatibility = torch.as_tensor(compatibility, dtype=like.dtype, device=like.device)
    if compatibility.shape != (labels, labels):
        raise DenseCRFError(f"compatibility {tuple(compatibility.shape)} does not fit {labels} labels: "
                            f"expected ({labels}, {labels})")
    return compatibility


def _weight(weight, labels, like, name):
    if isinstance(weight, (int, float)):
        return float(weight)
    weight = torch.as_tensor(weight, dtype=like.dtype, device=like.device)
    if weight.dim() == 0:
        return float(weight)
    if weight.shape != (labels, labels):
        raise DenseCRFError(f"{name} {tuple(weight.shape)} does not fit {labels} labels: expected a number "
                            f"or ({labels}, {labels})")
    return weight
