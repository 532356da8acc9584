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
minus their sum) is packed into one int64 code, linear in the key, so that a point's d+1 vertex codes come from
its remainder-0 point's code by sums of its ranked radices (no per-vertex key is ever made); one sort of all
the codes numbers the distinct vertices and gives every point's vertex indices, and a neighbour's code is the
vertex's code plus a constant per direction, found by `searchsorted` in the sorted codes.  The three steps are
then weighted gathers with fixed indices: torch's `embedding_bag` (mode "sum", per-sample weights) is exactly
"out[r] = sum_k w[r, k] * table[index[r, k]]", and its CPU kernel (FBGEMM's) runs each step several times
faster than sparse CSR products or index_add do.

The constant c is not 1 (it depends on d, on the density of the points, since blurred mass that reaches a
missing vertex is lost, and a little on where the points fall in their simplices; densecrf
blurs with [1, 2, 1] / 2 and multiplies by 1 / (1 + 2^-d) instead), so the filter is meant to be used
normalised: `filter(v) / filter(1)`, which is what densecrf and crfasrnn do, and what `normalized=True` gives.

A lattice depends only on the features, so it is built once per image and reused for every mean-field
iteration and for all label channels at once.
"""
import torch
import torch.nn.functional as F

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
    # rank[i] = how many residuals are larger than residual i, ties going to the lower index: densecrf's
    # pairwise count, one comparison per pair of coordinates (cheaper than an (N, d+1, d+1) table or a sort).
    rank = total[:, None].repeat(1, d1)
    for i in range(d1):
        for j in range(i + 1, d1):
            later_larger = residual[:, j] > residual[:, i]
            rank[:, i] += later_larger
            rank[:, j] += ~later_larger
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


def _vertex_codes(rem0, rank, coder):
    """(N, d+1) codes of each point's d+1 simplex vertices.  Vertex r moves coordinate i of rem0 by r where the
    residual's rank is at most d - r, else by r - (d+1); the code being linear in the key, that is
    code(rem0) + r * sum(radix) - (d+1) * (the radices of the coordinates ranked above d - r), the last a
    cumulative sum over the radices ordered by rank (the implicit last coordinate has no radix)."""
    n, d1 = rem0.shape
    radix = torch.cat([coder.radix, coder.radix.new_zeros(1)])
    by_rank = torch.empty_like(rank).scatter_(1, rank, radix.expand(n, d1))
    above = by_rank.flip(1).cumsum(1)             # above[:, k]: radices of the ranks d - k ... d
    moved = torch.cat([above.new_zeros(n, 1), above[:, :d1 - 1]], 1)
    r = torch.arange(d1, device=rem0.device)
    return coder(rem0[:, :d1 - 1])[:, None] + r * int(coder.radix.sum()) - d1 * moved


class _KeyCoder:
    """Packs d-coordinate integer keys into one int64 each (mixed radix over the range of `points`, widened by
    `margin` on each side for the vertices around them and their neighbours), so that sorting and searchsorted
    work on flat tensors.  The code is linear: code(key + step) = code(key) + delta(step)."""

    def __init__(self, points, margin):
        self.low = points.amin(0) - margin
        span = points.amax(0) + margin - self.low + 1
        radix = torch.cumprod(torch.cat([span.new_ones(1), span[:-1]]), 0)
        if float(torch.prod(span.double())) >= 2.0 ** 62:
            raise DenseCRFError(f"features spread too widely for the lattice: key span {span.tolist()} "
                               "does not fit a 64-bit key (are they divided by their thetas?)")
        self.radix = radix

    def __call__(self, keys):
        return ((keys - self.low) * self.radix).sum(-1)

    def delta(self, steps):
        """code(key + step) - code(key) for each step (the last dimension holds the coordinates)."""
        return (steps * self.radix).sum(-1)


class PermutohedralLattice:
    """The lattice of one point set.  Per point its d+1 vertex indices (`offsets`) and barycentric weights;
    per lattice direction each vertex's two neighbours (`neighbours`, index M where there is none).  Filtering
    runs the three steps as embedding_bag calls on index and weight tables made once per dtype (`_plan`)."""

    def __init__(self, offsets, weights, neighbours, num_vertices, splat_order=None):
        self.offsets = offsets            # (N, d+1) vertex index of each simplex corner
        self.weights = weights            # (N, d+1) barycentric weights, summing to 1 per point
        self.neighbours = neighbours      # (d+1, 2, M) previous / next vertex along each direction
        self.num_vertices = num_vertices
        # offsets.reshape(-1) sorted by vertex (stable), when the builder has it already: the splat's order.
        self._splat_order = splat_order
        self._plans = {}
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
        flat = (values if values.dim() == 2 else values[:, None]).contiguous()
        if normalized and not transposed and flat.dtype not in self._norm:
            out = self._filter_and_normalizer(flat)
        else:
            normalization = normalized and ("before" if transposed else "after")
            out = self._filter(flat, self._plan(flat.dtype, normalization), transposed)
        return out if values.dim() == 2 else out[:, 0]

    def _filter_and_normalizer(self, values):
        """The first normalised filter in a dtype: filter(1) rides along as one more column.  A one-column
        filter costs nearly as much as a many-column one (the gathers' cost is per vertex), so this saves
        most of a filter per lattice."""
        both = self._filter(torch.cat([values, values.new_ones(len(values), 1)], 1), self._plan(values.dtype))
        self._norm[values.dtype] = inverse = 1.0 / (both[:, -1] + 1e-20)
        return both[:, :-1] * inverse[:, None]

    @staticmethod
    def _filter(values, plan, transposed=False):
        """splat, the d+1 blurs (in reverse order for the transpose), slice; a normalisation lives in the
        plan's weights."""
        (points, splat_weights, starts), (vertices, slice_weights) = plan["splat"], plan["slice"]
        grid = F.embedding_bag(points, values, starts, mode="sum", per_sample_weights=splat_weights,
                               include_last_offset=True)
        for index, taps in (plan["blurs"][::-1] if transposed else plan["blurs"]):
            grid = F.embedding_bag(index, grid, mode="sum", per_sample_weights=taps)
        return F.embedding_bag(vertices, grid, mode="sum", per_sample_weights=slice_weights)

    def _inverse_norm(self, dtype):
        if dtype not in self._norm:
            ones = self.weights.new_ones(self.num_points, 1, dtype=dtype)
            self._norm[dtype] = 1.0 / (self._filter(ones, self._plan(dtype))[:, 0] + 1e-20)
        return self._norm[dtype]

    def _plan(self, dtype, normalization=False):
        """The index and weight tables of the three steps in `dtype`, made on first use.  `normalization`
        "after" multiplies the slice's weights of point i by 1 / filter(1)_i (dividing after slicing, at no
        cost); "before" (the transpose's) multiplies the splat's weights of point i instead."""
        key = (dtype, normalization)
        if key not in self._plans:
            if not normalization:
                self._plans[key] = self._make_plan(dtype)
            else:
                plan = dict(self._plan(dtype))
                inverse = self._inverse_norm(dtype)
                if normalization == "after":
                    vertices, weights = plan["slice"]
                    plan["slice"] = (vertices, weights * inverse[:, None])
                else:
                    points, weights, starts = plan["splat"]
                    plan["splat"] = (points, weights * inverse.index_select(0, points), starts)
                self._plans[key] = plan
        return self._plans[key]

    def _make_plan(self, dtype):
        """splat: one bag per vertex, of the points around it (offsets sorted by vertex: the slice's transpose);
        blur: one bag of three per vertex and direction, (back, self, forward) with taps (1, 2, 1) / 4, a
        missing neighbour pointing at a zero row (every bag the same size and the taps shared: no compaction);
        slice: one bag per point, its simplex's vertices with its barycentric weights."""
        m, d1 = self.num_vertices, self.offsets.shape[1]
        weights = self.weights.to(dtype)
        flat = self.offsets.reshape(-1)
        # int32 indices where they fit: half the index memory and traffic (embedding_bag takes either).
        itype = torch.int32 if flat.numel() < 2 ** 31 else torch.int64
        order = self._splat_order if self._splat_order is not None else torch.argsort(flat, stable=True)
        # Bag m of the splat is empty: the grid gets a zero row m, where the blur's missing neighbours point.
        starts = flat.new_zeros(m + 2, dtype=itype)
        torch.cumsum(torch.bincount(flat, minlength=m), 0, dtype=itype, out=starts[1:m + 1])
        starts[m + 1] = starts[m]
        points = torch.div(order, d1, rounding_mode="floor").to(itype)
        splat = (points, weights.reshape(-1).index_select(0, order), starts)
        # Blur bags (back, self, forward) per vertex, plus (m, m, m) for the zero row, which stays zero.
        index = flat.new_full((d1, m + 1, 3), m, dtype=itype)
        index[:, :m, 0] = self.neighbours[:, 0]
        index[:, :m, 1] = torch.arange(m, device=flat.device)
        index[:, :m, 2] = self.neighbours[:, 1]
        taps = torch.tensor([0.25, 0.5, 0.25], dtype=dtype, device=flat.device).repeat(m + 1, 1)
        return {"splat": splat, "blurs": [(i, taps) for i in index],
                "slice": (self.offsets.to(itype), weights.contiguous())}


def build(features):
    """The permutohedral lattice of `features`, an (N, d) tensor already divided by the kernel widths; the
    geometry is computed in float64 whatever the features' dtype, so float32 and float64 filters agree."""
    if features.dim() != 2 or features.shape[1] < 1 or features.shape[0] < 1:
        raise DenseCRFError(f"features must be an (N, d) tensor with N, d >= 1, got shape {tuple(features.shape)}")
    if not torch.is_floating_point(features) or not bool(torch.isfinite(features).all()):
        raise DenseCRFError("features must be finite floating-point values")
    n, d = features.shape
    rem0, rank, bary = _enclosing_simplex(_elevate(features.double()))
    # A vertex key is within d of its point's rem0 in every coordinate, its neighbours' within d more.
    coder = _KeyCoder(rem0[:, :d], margin=2 * d + 1)
    codes, offsets, order = _number_vertices(_vertex_codes(rem0, rank, coder).reshape(-1))
    neighbours = _neighbours(codes, coder, d)
    return PermutohedralLattice(offsets.reshape(n, d + 1), bary.to(features.dtype), neighbours, len(codes),
                                splat_order=order)


def _number_vertices(codes):
    """The distinct codes (sorted), each code's vertex index, and the stable sorting order of `codes` (the
    splat's order): one sort, where torch.unique would sort again for the order."""
    sorted_codes, order = torch.sort(codes, stable=True)
    first = torch.ones_like(sorted_codes, dtype=torch.bool)
    torch.ne(sorted_codes[1:], sorted_codes[:-1], out=first[1:])
    vertex = first.cumsum(0) - 1
    return sorted_codes[first], torch.empty_like(vertex).scatter_(0, order, vertex), order


def _neighbours(codes, coder, d):
    """(d+1, 2, M): along direction j the neighbours of a vertex are key -/+ (1, ..., 1) with coordinate j
    moved by -/+ d instead (for j = d, the implicit last coordinate, all d stored coordinates move by -/+ 1).
    Only the forward ones are searched (all directions in one call): u is v's forward neighbour exactly when v
    is u's backward one."""
    m = len(codes)
    steps = torch.ones(d + 1, d, dtype=codes.dtype, device=codes.device)
    steps[:d].fill_diagonal_(-d)
    forward = _lookup(codes, codes + coder.delta(steps)[:, None])
    # back[forward[v]] = v; an absent forward neighbour (index m) writes into a spare column, dropped.
    back = torch.full((d + 1, m + 1), m, dtype=forward.dtype, device=forward.device)
    back.scatter_(1, forward, torch.arange(m, device=codes.device).expand(d + 1, m))
    return torch.stack([back[:, :m], forward], 1)


def _lookup(codes, wanted):
    """Index of each wanted code in the sorted `codes`, or len(codes) (the zero row) where absent."""
    at = torch.searchsorted(codes, wanted).clamp_(max=len(codes) - 1)
    return at.masked_fill_(codes[at] != wanted, len(codes))


def gaussian_filter_exact(features, values, normalized=False):
    """The O(N^2) filter the lattice approximates: sum_j exp(-|f_i - f_j|^2 / 2) v_j (self term included),
    optionally divided by sum_j exp(-|f_i - f_j|^2 / 2)."""
    kernel = torch.exp(-0.5 * torch.cdist(features, features).square())
    flat = values if values.dim() == 2 else values[:, None]
    out = kernel @ flat
    if normalized:
        out = out / kernel.sum(1, keepdim=True)
    return out if values.dim() == 2 else out[:, 0]
