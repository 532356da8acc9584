"""Chapter 8's experiments (quick versions): the book's printed trace digit for digit, the races against the
rules written in NumPy, the proximal L1 step's exact zeros on the lasso, and the LeNet experiments' shapes."""
import numpy as np
import pytest

from examples.book import ch8, ch8_functions, ch8_lenet
from examples.book.registry import Context, run_experiment


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return str(tmp_path_factory.mktemp("book8"))


def run(ref, out):
    return run_experiment(ref, Context(quick=True, out_root=out)).numbers


def test_fixed_step_descent_prints_the_books_trace(out):
    n = run("8.1", out)
    assert n["line64"] == ch8.BOOK_LINE_01                          # every printed digit, float64
    assert n["line32"] == "[ Epoch 19 ] grad = 0.115292072296, x = 1.04611682892"     # Caffe's float
    assert n["grad32"] == pytest.approx(0.115292150461, rel=1e-6)
    assert n["grad100"] == float(ch8.BOOK_GRAD_100)                  # the double nearest the book's integer
    assert n["digits100"] == 16
    assert n["overflow32"] == 9                                      # (4 * 199^9)^2 > float32's 3.4e38
    x = n["x"]
    assert x[0.5][1] == 1.0 and x[1.0][20] == 5.0 and x[1.0][19] == -3.0     # lands; oscillates for ever
    assert abs(x[0.9][20] - 1) < abs(x[0.9][19] - 1) and np.sign(x[0.9][20] - 1) != np.sign(x[0.9][19] - 1)
    assert abs(x[1.1][20] - 1) == pytest.approx(4 * 1.2 ** 20)


def numpy_rule(name, rate, start, function, iterations):
    """Caffe's rules written out (float64, the solver fields rounded to float as SolverParameter holds them)."""
    f = lambda v: float(np.float32(v))
    lr, p, h, u = f(rate), np.array(start, dtype=float), np.zeros(2), np.zeros(2)
    for t in range(1, iterations + 1):
        g = function(p)[1]
        if name == "gd":
            step = lr * g
        elif name == "nesterov":
            old, h = h, f(0.9) * h + lr * g
            step = (1 + f(0.9)) * h - f(0.9) * old
        elif name == "adam":
            h, u = f(0.9) * h + (1 - f(0.9)) * g, f(0.999) * u + (1 - f(0.999)) * g * g
            step = lr * np.sqrt(1 - f(0.999) ** t) / (1 - f(0.9) ** t) * h / (np.sqrt(u) + f(1e-8))
        else:       # adagrad
            h = h + g * g
            step = lr * g / (np.sqrt(h) + f(1e-8))
        p = p - step
    return p


@pytest.mark.parametrize("race", ["bend", "climb"])
def test_races_are_caffes_rules(race):
    walks = ch8.race(race, ("gd", "nesterov", "adagrad", "adam"), quick=True)
    function = getattr(ch8_functions, race)
    column = 1 if race == "bend" else 2
    for name, walk in walks.items():
        expected = numpy_rule(name, ch8.SOLVERS[name][column], ch8.RACES[race][1], function, 10)
        np.testing.assert_allclose(walk.points[-1], expected, rtol=1e-10, err_msg=name)


def test_races_and_the_learning_rate_placement(out):
    n2, n3 = run("8.2", out), run("8.3", out)
    assert n2["gap_fixed"] < 1e-12 and n2["gap_step"] > 1e-3         # same path until the rate changes
    np.testing.assert_allclose(n2["bend"]["gd"]["end"], [4.567, 5.155], atol=1e-3)
    climb = n3["climb"]
    assert climb["adagrad"]["escape"] == 7                           # off the saddle in 7 steps; gd still on it
    assert climb["gd"]["escape"] is None and abs(climb["gd"]["end"][1]) < 0.05
    np.testing.assert_allclose(n3["bend"]["adam"]["end"], [4.690, 4.968], atol=1e-3)


def test_lasso_proximal_step_gives_exact_zeros(out):
    n = run("8.4", out)
    lasso = n["lasso"]
    assert lasso["sub_exact_zeros"] == 0 and lasso["sub_max_on_true_zeros"] > 1e-3
    assert lasso["prox_exact_zeros"] == lasso["ista_zeros"] == 29 and lasso["prox_zeros_on_true_zeros"] == 29
    assert lasso["support_found"] and lasso["prox_vs_ista"] < 1e-6
    assert n["L1 proximal"]["exact_zeros"] > 0 == n["L1"]["exact_zeros"] == n["L2"]["exact_zeros"]


def test_perturbation_linear_path_and_overfitting_curves(out):
    n5 = run("8.5", out)
    assert list(n5["noise"]) == list(ch8_lenet.NOISE) and n5["shift"][6] < n5["shift"][0]
    n6 = run("8.6", out)
    assert len(n6["alpha"]) == 5 and n6["alpha"][0] == -0.5 and n6["alpha"][-1] == 1.5
    loss = n6["curves"]["test loss"]
    assert loss[1] > loss[3]                                         # a = 0 above a = 1: training helped
    n7 = run("8.7", out)
    assert set(n7) == {"plain", "weight decay 0.005", "dropout 0.5", "both"}
    assert n7["plain"]["iteration"] == [0, 4, 8]
    assert n7["plain"]["train loss"][-1] < n7["plain"]["train loss"][0]
