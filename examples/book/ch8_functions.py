"""The 2-D functions of book 8.2-8.3's races, each with its gradient written by hand (what the FunctionLoss
Python layer of brewnet.tools.function_walk calls: "examples.book.ch8_functions:bend").

The book's own formulas are not available here; these are chosen to show what its figures show:

    bend(x, y)  = (1 - x)^2 + 20 (y - x^2 / 4)^2     a valley bent along the parabola y = x^2/4, minimum
                                                     (1, 0.25); from [5, 5] the steep walls (curvature ~290)
                                                     force small steps while the floor descends slowly
    climb(x, y) = x^2 + 0.2 x y - y^2 + y^4 / 2      a saddle at (0, 0) between two basins (y ~ +-1); from
                                                     [-0.23, 0] the gradient along y is tiny (-0.046), so
                                                     the plain rules linger on the ridge and the adaptive
                                                     ones, which rescale it, climb off it at once
"""
import numpy as np


def bend_value(x, y):
    return (1 - x) ** 2 + 20 * (y - x * x / 4) ** 2


def bend(p):
    x, y = p
    r = y - x * x / 4
    return bend_value(x, y), np.array([-2 * (1 - x) - 20 * r * x, 40 * r])


def climb_value(x, y):
    return x * x + 0.2 * x * y - y * y + y ** 4 / 2


def climb(p):
    x, y = p
    return climb_value(x, y), np.array([2 * x + 0.2 * y, 0.2 * x - 2 * y + 2 * y ** 3])
