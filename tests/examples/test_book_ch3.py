"""Chapter 3's experiments (quick versions) against the book's printed numbers and a NumPy oracle."""
import numpy as np
import pytest

from examples.book.registry import Context, run_experiment


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def numpy_and_gate(value, steps, lr=0.1):
    """The same reading written out: 2-4-1 sigmoid net, biases start at 0, loss 1/2·sum, full batch."""
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], float)
    y = np.array([[0], [0], [0], [1]], float)
    w1, w2, b1, b2 = np.full((2, 4), value), np.full((4, 1), value), np.zeros(4), np.zeros(1)
    for _ in range(steps):
        h = _sigmoid(x @ w1 + b1)
        p = _sigmoid(h @ w2 + b2)
        r2 = (p - y) * p * (1 - p)
        r1 = (r2 @ w2.T) * h * (1 - h)
        w2, b2 = w2 - lr * h.T @ r2, b2 - lr * r2.sum(0)
        w1, b1 = w1 - lr * x.T @ r1, b1 - lr * r1.sum(0)
    return w1, w2


@pytest.fixture(scope="module")
def equal_init(tmp_path_factory):
    return run_experiment("3.5", Context(quick=True, out_root=str(tmp_path_factory.mktemp("book"))))


def test_first_iteration_values_of_the_book(equal_init):
    n = equal_init.numbers
    np.testing.assert_allclose(n["ones"]["top_val"], [0.5, 0.7310586, 0.7310586, 0.8807971], atol=1e-6)
    np.testing.assert_allclose(n["zeros"]["residual_z"], [0.125, 0.125, 0.125, -0.125], atol=1e-7)
    # 0.135 = 0.125 * (0.5 + 0.731 + 0.731 - 0.881): first layer all 1, second all 0.
    np.testing.assert_allclose(n["mixed"]["grad_w"], [0.125 * (0.5 + 2 * 0.7310586 - 0.8807971)] * 4, atol=1e-6)
    np.testing.assert_allclose(n["zeros"]["grad_w"], [0.125] * 4, atol=1e-7)
    assert abs(n["ones"]["grad_w"][0] - 0.135) > 0.02


def test_equal_weights_stay_equal_and_follow_the_math(equal_init):
    for value in (0.0, 1.0):
        w1, w2 = equal_init.numbers[f"bias 0, 1/2*sum/{value:g}"]
        assert np.ptp(w1) == 0 and np.ptp(w2) == 0
        ref1, ref2 = numpy_and_gate(value, 1000)
        np.testing.assert_allclose(w1, ref1.T, atol=2e-4)         # Caffe stores out x in
        np.testing.assert_allclose(w2, ref2.T, atol=2e-4)
    assert equal_init.numbers["bias 0, 1/2*sum/0"][0][0, 0] == pytest.approx(-0.913, abs=1e-3)
    assert "0.1352" in equal_init.ours and "mixes two initialisations" in equal_init.ours


def test_and_gate_learns_the_table(tmp_path):
    result = run_experiment("3.4.4", Context(quick=True, out_root=str(tmp_path)))
    p = result.numbers["predictions"]
    assert result.numbers["correct"] == 4
    assert p[3] > 0.5 > max(p[:3])
