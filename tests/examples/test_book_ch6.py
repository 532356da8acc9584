"""Chapter 6's experiments (quick versions): the deterministic ones against the book's printed digits."""
import numpy as np
import pytest

from examples.book import ch6
from examples.book.registry import Context, run_experiment


def test_zca_gives_the_books_matrix_and_identity_covariance(tmp_path):
    result = run_experiment("6.4", Context(quick=True, out_root=str(tmp_path)))
    w = result.numbers["W"]
    np.testing.assert_allclose(w, ch6.BOOK_W, atol=1e-3)          # the book prints 3 digits, truncated
    np.testing.assert_allclose(result.numbers["WCW"], np.eye(2), atol=1e-12)
    np.testing.assert_allclose(result.numbers["cov_after"], np.eye(2), atol=1e-10)
    assert any(path.endswith("zca_patches.png") for path in result.figures)


def test_naive_formulas_fail_where_brewnet_layers_stay_finite(tmp_path):
    n = run_experiment("6.5", Context(quick=True, out_root=str(tmp_path))).numbers
    naive, ours = n["softmax [1000, 2000, 3000]"]
    assert np.isnan(naive).all()
    np.testing.assert_allclose(ours, [0, 0, 1], atol=1e-300)
    np.testing.assert_allclose(n["softmax [1, 2, 3]"][1], [0.09003057, 0.24472847, 0.66524096], atol=1e-8)
    for case in ("sigmoid CE x=[800], t=[0]", "sigmoid CE x=[-800], t=[1]"):
        assert np.isinf(n[case][0]) and n[case][1] == pytest.approx(800.0)
    reconstructed = [k for k in n if k.startswith("sigmoid CE x=[8.4")][0]
    assert n[reconstructed][0] == pytest.approx(0.000222961919658, abs=1e-15)
    assert n[reconstructed][1] == pytest.approx(0.000222961919658, abs=1e-15)


def test_deep_net_variances_follow_the_derivation(tmp_path):
    n = run_experiment("6.2-6.3", Context(quick=True, out_root=str(tmp_path))).numbers
    msra = n[("ReLU", "msra")]
    ratio = np.array(msra["forward"]) / np.array(msra["predicted_forward"])
    assert np.all((ratio > 0.5) & (ratio < 2))                     # MSRA keeps ReLU's variance, as derived
    small = n[("ReLU", "gaussian(0.01)")]
    assert small["forward"][-1] < 1e-12 and small["backward"][0] < 1e-10   # std 0.01 vanishes both ways
    np.testing.assert_allclose(small["forward"], small["predicted_forward"], rtol=0.6)
    tanh = n[("TanH", "xavier")]
    assert 0.8 < tanh["forward"][0] < 1.2 and tanh["forward"][-1] < tanh["forward"][0]


def test_lenet_statistics_show_the_initialisations(tmp_path):
    n = run_experiment("6.1", Context(quick=True, out_root=str(tmp_path))).numbers
    xavier, gauss = n["relu+xavier"], n["relu+gaussian(std 1)"]
    assert 0 <= xavier["accuracy"] <= 1 and xavier["diverged"] is None
    assert gauss["activation_std"]["ip1"] > 100 * xavier["activation_std"]["ip1"]
    assert gauss["gradient_std"]["conv1"] > 100 * xavier["gradient_std"]["conv1"]
    assert 0.2 < n["sigmoid+gaussian(std 1)"]["activation_std"]["act1"] < 0.5   # sigmoid saturates at 0 and 1
