"""Chapter 4's experiments (quick versions): brewnet's Convolution against the written-out mathematics."""
import numpy as np

from examples.book import ch4
from examples.book.registry import Context, run_experiment


def test_filters_match_the_correlation_and_draw_a_figure(tmp_path):
    result = run_experiment("4.1.2", Context(quick=True, out_root=str(tmp_path)))
    assert result.numbers["max_error"] < 1e-12
    assert result.numbers["outputs"].shape[0] == len(ch4.FILTERS)
    with open(result.figures[0], "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    assert result.figures[0].endswith("4.1.2/filters.png")


def test_convolution_theorem(tmp_path):
    result = run_experiment("4.1.4", Context(quick=True, out_root=str(tmp_path)))
    assert result.numbers["max_error"] < 1e-12 and result.numbers["scale"] > 1


def test_backward_equals_both_derivations(tmp_path):
    result = run_experiment("4.2", Context(quick=True, out_root=str(tmp_path)))
    assert set(result.numbers["errors"]) == {"im2col", "rotated kernel"}
    assert result.numbers["worst"] < 1e-12 and result.numbers["scale"] > 1


def test_the_derivations_are_not_trivially_equal():
    """A wrong kernel orientation must show: the rotated-kernel dX differs from im2col's with an unrotated one."""
    rng = np.random.RandomState(1)
    x, w, dy = rng.randn(1, 2, 5, 5), rng.randn(3, 2, 3, 3), rng.randn(1, 3, 3, 3)
    dx, _ = ch4.backward_im2col(x, w, dy)
    dx_wrong, _ = ch4.backward_im2col(x, w[:, :, ::-1, ::-1], dy)
    dx_rot, _ = ch4.backward_rotated(x, w, dy)
    np.testing.assert_allclose(dx_rot, dx, atol=1e-12)
    assert np.abs(dx_wrong - dx).max() > 0.1
