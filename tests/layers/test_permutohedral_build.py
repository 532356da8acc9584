"""The lattice's construction against the rule it implements, written out here the slow way: each point's d+1
vertex keys, the distinct vertices, and each vertex's neighbours along every lattice direction.  `build` never
makes these keys (it works on int64 codes linear in them), so this checks the code arithmetic, the one-sort
numbering and the forward-only neighbour search; and the normaliser the first normalised filter computes on
the way against a separate filter of ones."""
import pytest
import torch

from brewnet.layers.dense_crf import spatial_features
from brewnet.layers.permutohedral import _elevate, _enclosing_simplex, build


def _vertex_keys(features):
    """(N, d+1, d): vertex r of a point's simplex moves coordinate i of the remainder-0 point by r where the
    residual's rank is at most d - r, else by r - (d+1)."""
    rem0, rank, _ = _enclosing_simplex(_elevate(features.double()))
    d = features.shape[1]
    r = torch.arange(d + 1)[None, :, None]
    return rem0[:, None, :d] + torch.where(rank[:, None, :d] <= d - r, r, r - (d + 1))


def _point_sets():
    g = torch.Generator().manual_seed(3)
    return {"5-D random": torch.rand(300, 5, generator=g, dtype=torch.float64) * 3.0,
            # Integer-valued colours and positions (like uint8 images): many tied residuals, whose ranks must
            # follow densecrf's rule (the lower index ranks first).
            "5-D ties": torch.randint(0, 4, (300, 5), generator=g).double() / 1.5,
            "2-D grid": spatial_features(12, 10, 3.0, torch.float64)}


@pytest.mark.parametrize("name", list(_point_sets()))
def test_vertices_are_the_distinct_simplex_keys(name):
    features = _point_sets()[name]
    lattice = build(features)
    keys = _vertex_keys(features)
    d = features.shape[1]
    vertex_key = torch.zeros(lattice.num_vertices, d, dtype=keys.dtype)
    vertex_key[lattice.offsets.reshape(-1)] = keys.reshape(-1, d)
    # Same index <=> same key: every point's corners read back their own keys, and the vertices are distinct.
    assert torch.equal(vertex_key[lattice.offsets], keys)
    assert len(torch.unique(vertex_key, dim=0)) == lattice.num_vertices
    torch.testing.assert_close(lattice.weights.sum(1), torch.ones(len(features), dtype=torch.float64))


@pytest.mark.parametrize("name", list(_point_sets()))
def test_neighbours_are_the_keys_one_step_away(name):
    features = _point_sets()[name]
    lattice = build(features)
    d, m = features.shape[1], lattice.num_vertices
    vertex_key = torch.zeros(m, d, dtype=torch.long)
    vertex_key[lattice.offsets.reshape(-1)] = _vertex_keys(features).reshape(-1, d)
    index_of = {tuple(k): v for v, k in enumerate(vertex_key.tolist())}
    found = 0
    for j in range(d + 1):
        step = torch.ones(d, dtype=torch.long)
        if j < d:
            step[j] = -d
        for side, sign in ((0, -1), (1, 1)):
            expected = [index_of.get(tuple(k), m) for k in (vertex_key + sign * step).tolist()]
            assert lattice.neighbours[j, side].tolist() == expected, (j, side)
            found += sum(e < m for e in expected)
    assert found > m        # not a lattice of isolated vertices


@pytest.mark.parametrize("d", [2, 5])
def test_first_normalised_filter_carries_the_normaliser(d):
    """The first normalised call filters a column of ones along; later calls fold 1 / filter(1) into the
    slice's weights.  Both equal filter(v) / filter(1) computed apart, and the transpose uses the same
    normaliser whichever call came first."""
    g = torch.Generator().manual_seed(d)
    features = torch.rand(250, d, generator=g, dtype=torch.float64) * 3.0
    values = torch.rand(250, 4, generator=g, dtype=torch.float64) + 0.5
    separate = build(features)
    expected = separate.filter(values) / separate.filter(torch.ones(250, dtype=torch.float64))[:, None]
    lattice = build(features)
    first, later = lattice.filter(values, normalized=True), lattice.filter(values, normalized=True)
    torch.testing.assert_close(first, expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(later, expected, rtol=1e-12, atol=0)
    transposed_first = build(features).filter(values, normalized=True, transposed=True)
    torch.testing.assert_close(lattice.filter(values, normalized=True, transposed=True), transposed_first,
                               rtol=1e-12, atol=0)
    assert (first - values).abs().mean() > 0.01          # the filter did something


def test_tied_residuals_rank_the_lower_coordinate_first():
    """densecrf's rule, which decides which zero-weight vertex a point on a simplex face creates (the anchor
    test against densecrf fails with the opposite rule): points of the plane sum(x) = 0 whose rounding leaves
    residuals (0.5, 0.5, -1) in some order."""
    elevated = torch.tensor([[0.5, 0.5, -1.0], [-1.0, 0.5, 0.5], [0.5, -1.0, 0.5]], dtype=torch.float64)
    rem0, rank, bary = _enclosing_simplex(elevated)
    assert rank.tolist() == [[0, 1, 2], [2, 0, 1], [0, 2, 1]]
    # Vertex 2 (weight 0) moves the coordinate ranked 0 by +2 and the others by -1: the tie picks which.
    assert bary[:, 2].tolist() == [0.0, 0.0, 0.0] and bool((rem0 == 0).all())
