"""brewnet.tools.function_walk: solvers walking a small function, against the same rules written in NumPy."""
import numpy as np
import pytest
import torch

from brewnet.tools.function_walk import FunctionWalkError, parameter_net, python_loss, walk_function

SQUARE = ('layer { name: "one" type: "DummyData" top: "one" dummy_data_param { shape { dim: 1 } '
          'data_filler { type: "constant" value: 1 } } }\n'
          'layer { name: "f" type: "EuclideanLoss" bottom: "x" bottom: "one" top: "f" loss_weight: 2 }')


def valley(p):
    """f = x^2 + 10 y^2 + x y, for the FunctionLoss layer (module:function)."""
    x, y = p
    return x * x + 10 * y * y + x * y, np.array([2 * x + y, 20 * y + x])


def test_builtin_layers_walk_x_squared_minus_2x_plus_1_as_python_floats_do():
    walk = walk_function('type: "SGD" base_lr: 0.1', parameter_net(1, SQUARE), [5], 20, dtype=torch.float64,
                         rate=0.1)
    x, xs, gs = 5.0, [5.0], []
    for _ in range(20):
        g = 2 * x - 2
        x -= 0.1 * g
        xs.append(x)
        gs.append(g)
    np.testing.assert_array_equal(walk.points[:, 0], xs)            # bit for bit
    np.testing.assert_array_equal(walk.grads[:, 0], gs)
    np.testing.assert_array_equal(walk.losses, [(v - 1) ** 2 for v in xs[:-1]])


def test_python_loss_walks_with_adam_as_the_formula():
    net = parameter_net(2, python_loss("tests.tools.test_function_walk:valley"))
    walk = walk_function('type: "Adam" base_lr: 0.25 momentum: 0.9 momentum2: 0.999', net, [1.5, -1.0], 30,
                         dtype=torch.float64)
    lr, b1, b2 = (float(np.float32(v)) for v in (0.25, 0.9, 0.999))
    p, m, v = np.array([1.5, -1.0]), np.zeros(2), np.zeros(2)
    for t in range(1, 31):
        g = valley(p)[1]
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        p = p - lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (np.sqrt(v) + float(np.float32(1e-8)))
    np.testing.assert_allclose(walk.points[-1], p, rtol=1e-12)
    np.testing.assert_allclose(walk.grads[0], [2 * 1.5 - 1, -20 + 1.5])
    assert walk.losses[0] == pytest.approx(1.5 ** 2 + 10 - 1.5)
    assert walk.points.shape == (31, 2) and walk.grads.shape == (30, 2)


def test_a_missing_function_is_named():
    net = parameter_net(2, python_loss("tests.tools.test_function_walk:nowhere"))
    with pytest.raises(FunctionWalkError, match="module 'tests.tools.test_function_walk' has no function 'nowhere'"):
        walk_function('type: "SGD" base_lr: 0.1', net, [0, 0], 1)


def test_a_diverging_float32_walk_stops_where_the_loss_overflows():
    walk = walk_function('type: "SGD" base_lr: 100', parameter_net(1, SQUARE), [5], 20)
    assert "the loss is inf: layer 'f' (type EuclideanLoss)" in walk.stopped
    assert walk.points.shape == (10, 1) and walk.grads.shape == (9, 1)      # (4 * 199^9)^2 > 3.4e38
    assert walk.grads[-1, 0] == np.float32(8 * 199.0 ** 8)
