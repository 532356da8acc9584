"""High-dimensional Gaussian filtering on the permutohedral lattice (Adams, Baek & Davis 2010), in batched torch
ops: the fast filter behind dense CRF inference (Krähenbühl & Koltun 2011) and crfasrnn's MultiStageMeanfield.

For points with features f_i in R^d (already divided by their kernel widths theta) and values v_i in R^C,

    filter(v)_i  ~  c * sum_j exp(-|f_i - f_j|^2 / 2) v_j          (the self term j = i included)

in three steps, all linear in v:

1. embed each point into the hyperplane {x in R^(d+1): sum x = 0}, scaled (as densecrf does) so that the blur of
   step 2 is a Gaussian of standard deviation 1 in feature units; find the enclosing simplex of the lattice
   (the plane's integer points whose coordinates are all congruent mod d+1) by rounding to the nearest
   remainder-0 point and ranking the residuals; the point's d+1 barycentric weights sum to 1;
2. splat: every vertex receives the weighted sum of the values of the points around it; blur: along each of
   the d+1 lattice directions in turn, every vertex becomes [1, 2, 1] / 4 of (its neighbour back, itself,
   its neighbour forward), a missing neighbour counting as zero;
3. slice: each point reads its simplex's vertices back with the same weights.

The vertices are found without a hash table: each vertex key (its first d integer coordinates; the last is
minus their sum) is packed into one int64, `torch.unique` numbers the distinct keys (its inverse gives every
point's vertex indices), and `searchsorted` on the sorted keys finds each vertex's neighbours.  The three steps
are then products with sparse CSR matrices made once from these indices.

The constant c is not 1 (it depends on d, on the density of the points, since blurred mass that reaches a
missing vertex is lost, and a little on where the points fall in their simplices; densecrf
blurs with [1, 2, 1] / 2 and multiplies by 1 / (1 + 2^-d) instead), so the filter is meant to be used
normalised: `filter(v) / filter(1)`, which is what densecrf and crfasrnn do, and what `normalized=True` gives.

A lattice depends only on the features, so it is built once per image and reused for every mean-field
iteration and for all label channels at once.
"""
import warnings

import torch

from ..errors import DenseCRFError


def _elevate(features):
    """The (N, d) features as (N, d+1) points of the plane sum(x) = 0, scaled by densecrf's factors: the d-th
    basis direction gets 1 / sqrt((i+1)(i+2)), times sqrt(2/3) (d+1) so that the blur is a unit Gaussian."""
    n, d = features.shape
    i = torch.arange(d, dtype=features.dtype, device=features.device)
    scale = (2.0 / 3.0) ** 0.5 * (d + 1) / torch.sqrt((i + 1) * (i + 2))
    cf = features * scale
    # suffix[:, k] = sum of cf[:, k:], with a zero column for k = d.
    suffix = torch.cat([cf.flip(1).cumsum(1).flip(1), cf.new_zeros(n, 1)], dim=1)
    elevated = suffix.clone()
    elevated[:, 1:] -= i.add(1) * cf
    return elevated


def _enclosing_simplex(elevated):
    """The remainder-0 point `rem0` of each point's simplex, the rank of each coordinate's residual (0 for the
    largest), and the (N, d+1) barycentric weights of the simplex's vertices, vertex r first."""
    n, d1 = elevated.shape
    d = d1 - 1
    down = torch.floor(elevated / d1) * d1
    up = down + d1
    rem0 = torch.where(up - elevated < elevated - down, up, down)
    total = (rem0.sum(1) / d1).round().long()
    residual = elevated - rem0
    # rank[i] = how many residuals are larger than residual i, ties going to the lower index.
    later = torch.triu(torch.ones(d1, d1, dtype=torch.bool, device=elevated.device), diagonal=1)
    ri, rj = residual[:, :, None], residual[:, None, :]
    larger = torch.where(later, rj > ri, rj >= ri)
    larger.diagonal(dim1=1, dim2=2).fill_(False)
    rank = larger.sum(2) + total[:, None]
    # A point off the plane's remainder-0 grid (total != 0) is brought back by wrapping ranks around.
    wrap = (rank < 0).long() - (rank > d).long()
    rank = rank + wrap * d1
    rem0 = rem0 + wrap.to(rem0.dtype) * d1
    v = (elevated - rem0) / d1
    bary = elevated.new_zeros(n, d1 + 1)
    bary.scatter_add_(1, d - rank, v)
    bary.scatter_add_(1, d - rank + 1, -v)
    bary[:, 0] += 1.0 + bary[:, d1]
    return rem0.round().long(), rank, bary[:, :d1]


def _vertex_keys(rem0, rank):
    """(N, d+1, d) integer keys of each point's d+1 simplex vertices: vertex r moves coordinate i of rem0 by
    r where the residual's rank is at most d - r, else by r - (d+1)."""
    d1 = rem0.shape[1]
    d = d1 - 1
    r = torch.arange(d1, device=rem0.device)[None, :, None]
    shift = torch.where(rank[:, None, :d] <= d - r, r, r - d1)
    return rem0[:, None, :d] + shift


class _KeyCoder:
    """Packs d-coordinate integer keys into one int64 each (mixed radix over the keys' range, with room for
    the neighbours' offsets), so that torch.unique and searchsorted work on flat tensors."""

    def __init__(self, keys, margin):
        self.low = keys.amin(0) - margin
        span = keys.amax(0) + margin - self.low + 1
        radix = torch.cumprod(torch.cat([span.new_ones(1), span[:-1]]), 0)
        if float(torch.prod(span.double())) >= 2.0 ** 62:
            raise DenseCRFError(f"features spread too widely for the lattice: key span {span.tolist()} "
                               "does not fit a 64-bit key (are they divided by their thetas?)")
        self.radix = radix

    def __call__(self, keys):
        return ((keys - self.low) * self.radix).sum(-1)


class PermutohedralLattice:
    """The lattice of one point set.  Per point its d+1 vertex indices (`offsets`) and barycentric weights;
    per lattice direction each vertex's two neighbours (`neighbours`, index M where there is none).  Filtering
    multiplies by sparse matrices made from these (splat = S^T, one blur matrix per direction, slice = S):
    torch's CSR kernels run the three steps several times faster than gathers and index_add do."""

    def __init__(self, offsets, weights, neighbours, num_vertices):
        self.offsets = offsets            # (N, d+1) vertex index of each simplex corner
        self.weights = weights            # (N, d+1) barycentric weights, summing to 1 per point
        self.neighbours = neighbours      # (d+1, 2, M) previous / next vertex along each direction
        self.num_vertices = num_vertices
        self._matrices = {}
        self._norm = {}

    @property
    def num_points(self):
        return self.offsets.shape[0]

    def filter(self, values, normalized=False, transposed=False):
        """Gaussian-filter `values` ((N,) or (N, C)): the raw lattice sum, or with `normalized` divided by the
        filtered ones (densecrf's normalisation, which makes a constant input come out unchanged).

        `transposed` applies the transpose of that linear map (what backward needs).  The lattice filter is
        slice . blur_d ... blur_0 . splat with slice = splat^T and each directional blur symmetric, so its
        transpose is the same chain with the blurs in reverse order; the two differ (slightly) only because
        the blurs of a sparse lattice do not commute.  Normalised, the transpose divides before filtering."""
        if values.dim() not in (1, 2) or values.shape[0] != self.num_points:
            raise DenseCRFError(f"values of shape {tuple(values.shape)} do not fit a lattice of "
                                f"{self.num_points} points: expected ({self.num_points},) or ({self.num_points}, C)")
        flat = values if values.dim() == 2 else values[:, None]
        if normalized and transposed:
            flat = flat * self._inverse_norm(flat.dtype)[:, None]
        out = self._filter(flat, transposed)
        if normalized and not transposed:
            out = out * self._inverse_norm(out.dtype)[:, None]
        return out if values.dim() == 2 else out[:, 0]

    def _filter(self, values, transposed=False):
        splat, blurs, slice_ = self._sparse(values.dtype)
        grid = splat @ values
        for blur in (reversed(blurs) if transposed else blurs):
            grid = blur @ grid
        return slice_ @ grid

    def _inverse_norm(self, dtype):
        if dtype not in self._norm:
            ones = self.weights.new_ones(self.num_points, 1, dtype=dtype)
            self._norm[dtype] = 1.0 / (self._filter(ones)[:, 0] + 1e-20)
        return self._norm[dtype]

    def _sparse(self, dtype):
        """(splat, [blur per direction], slice) as CSR matrices of `dtype`, made on first use."""
        if dtype not in self._matrices:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
                self._matrices[dtype] = self._make_sparse(dtype)
        return self._matrices[dtype]

    def _make_sparse(self, dtype):
        n, m = self.num_points, self.num_vertices
        weights = self.weights.to(dtype)
        slice_ = _csr(self.offsets, weights, m)
        # The splat is the slice's transpose: the points around each vertex, found by sorting on the vertex.
        flat = self.offsets.reshape(-1)
        order = torch.argsort(flat, stable=True)
        counts = torch.bincount(flat, minlength=m)
        points = torch.div(order, self.offsets.shape[1], rounding_mode="floor")
        splat = torch.sparse_csr_tensor(_row_starts(counts), points, weights.reshape(-1)[order], (m, n))
        vertices = torch.arange(m, device=flat.device)
        taps = torch.tensor([0.25, 0.5, 0.25], dtype=dtype, device=flat.device).expand(m, 3)
        blurs = [_csr(torch.stack([previous, vertices, following], 1), taps, m)
                 for previous, following in self.neighbours]
        return splat, blurs, slice_


def _row_starts(counts):
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def _csr(columns, values, width):
    """CSR matrix whose row r holds values[r, k] at columns[r, k]; a column equal to `width` marks no entry
    (a missing neighbour) and is left out."""
    columns, order = torch.sort(columns, dim=1)
    values = torch.gather(values, 1, order)
    present = columns < width
    return torch.sparse_csr_tensor(_row_starts(present.sum(1)), columns[present], values[present],
                                   (columns.shape[0], width))


def build(features):
    """The permutohedral lattice of `features`, an (N, d) tensor already divided by the kernel widths; the
    geometry is computed in float64 whatever the features' dtype, so float32 and float64 filters agree."""
    if features.dim() != 2 or features.shape[1] < 1 or features.shape[0] < 1:
        raise DenseCRFError(f"features must be an (N, d) tensor with N, d >= 1, got shape {tuple(features.shape)}")
    if not torch.is_floating_point(features) or not bool(torch.isfinite(features).all()):
        raise DenseCRFError("features must be finite floating-point values")
    n, d = features.shape
    rem0, rank, bary = _enclosing_simplex(_elevate(features.double()))
    keys = _vertex_keys(rem0, rank).reshape(-1, d)
    coder = _KeyCoder(keys, margin=d + 1)
    codes, offsets = torch.unique(coder(keys), sorted=True, return_inverse=True)
    neighbours = _neighbours(codes, keys[_first_occurrence(offsets, len(codes))], coder)
    return PermutohedralLattice(offsets.reshape(n, d + 1), bary.to(features.dtype), neighbours, len(codes))


def _first_occurrence(inverse, count):
    """For each of `count` unique values, the position of one row of the original that maps to it."""
    positions = torch.arange(len(inverse), device=inverse.device)
    first = torch.full((count,), len(inverse), dtype=positions.dtype, device=inverse.device)
    return first.scatter_reduce_(0, inverse, positions, reduce="amin")


def _neighbours(codes, vertex_keys, coder):
    """(d+1, 2, M): along direction j the neighbours of a vertex are key -/+ (1, ..., 1) with coordinate j
    moved by +/- d instead (for j = d, the implicit last coordinate, all d stored coordinates move by -/+ 1)."""
    m, d = vertex_keys.shape
    found = []
    for j in range(d + 1):
        step = vertex_keys.new_ones(d)
        if j < d:
            step[j] = -d
        pair = [_lookup(codes, coder(vertex_keys - step)), _lookup(codes, coder(vertex_keys + step))]
        found.append(torch.stack(pair))
    return torch.stack(found)


def _lookup(codes, wanted):
    """Index of each wanted code in the sorted `codes`, or len(codes) (the zero row) where absent."""
    at = torch.searchsorted(codes, wanted).clamp_(max=len(codes) - 1)
    return torch.where(codes[at] == wanted, at, torch.full_like(at, len(codes)))


def gaussian_filter_exact(features, values, normalized=False):
    """The O(N^2) filter the lattice approximates: sum_j exp(-|f_i - f_j|^2 / 2) v_j (self term included),
    optionally divided by sum_j exp(-|f_i - f_j|^2 / 2)."""
    kernel = torch.exp(-0.5 * torch.cdist(features, features).square())
    flat = values if values.dim() == 2 else values[:, None]
    out = kernel @ flat
    if normalized:
        out = out / kernel.sum(1, keepdim=True)
    return out if values.dim() == 2 else out[:, 0]
