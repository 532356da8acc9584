"""Chapter 8, optimization on small functions: fixed-step gradient descent on a parabola (8.1), and the races
of Caffe's six update rules on two 2-D functions (8.2 momentum and Nesterov, 8.3 the adaptive rules).

Every path is walked by brewnet's own solvers (brewnet.tools.function_walk): the point is a Parameter layer's
blob, the function the net's loss (EuclideanLoss for the parabola, a FunctionLoss Python layer with a
hand-written gradient for the 2-D functions), the solver `caffe.get_solver(...)`'s.
"""
import numpy as np
import torch

from brewnet import viz
from brewnet.tools.function_walk import parameter_net, python_loss, walk_function

from . import ch8_functions as functions
from .registry import Result, experiment

# ---------------------------------------------------------------- 8.1 fixed-step gradient descent

# f(x) = x^2 - 2x + 1 = (x - 1)^2: EuclideanLoss against a constant 1 is (x - 1)^2 / 2, so loss_weight 2.
PARABOLA = parameter_net(1, 'layer { name: "one" type: "DummyData" top: "one" dummy_data_param { shape { dim: 1 } '
                            'data_filler { type: "constant" value: 1 } } }\n'
                            'layer { name: "f" type: "EuclideanLoss" bottom: "x" bottom: "one" top: "f" '
                            'loss_weight: 2 }', name="parabola")
BOOK_LINE_01 = "[ Epoch 19 ] grad = 0.115292150461, x = 1.04611686018"
BOOK_GRAD_100 = -381327774458065309271659914509334129161310392      # = 8 * (-199)^19, exactly
STEPS = (0.1, 0.4, 0.5, 0.9, 1.0, 1.1, 100)


def parabola_walk(rate, dtype, epochs=20):
    """Gradient descent from x = 5 with a fixed step; a float64 walk takes the step as a Python float
    (SolverParameter.base_lr is a float field, where 0.1 is 0.100000001490116)."""
    exact = rate if dtype == torch.float64 else None
    return walk_function(f'type: "SGD" base_lr: {rate}', PARABOLA, [5.0], epochs, dtype=dtype, rate=exact)


def epoch_line(walk, epoch, integer=False):
    """The book's line: the gradient at the epoch's start and x after its step."""
    grad, x = walk.grads[epoch][0], walk.points[epoch + 1][0]
    if integer:
        return f"[ Epoch {epoch} ] grad = {int(grad)}, x = {int(x)}"
    return f"[ Epoch {epoch} ] grad = {grad:.12g}, x = {x:.12g}"


@experiment("8.1", "fixed-step gradient descent on x^2 - 2x + 1 from x = 5",
            book=f"step 0.1: `{BOOK_LINE_01}`; larger steps oscillate; step 100 diverges, "
                 f"grad = {BOOK_GRAD_100} at epoch 19")
def fixed_step(ctx):
    f64, f32 = parabola_walk(0.1, torch.float64), parabola_walk(0.1, torch.float32)
    big64, big32 = parabola_walk(100, torch.float64), parabola_walk(100, torch.float32)
    line64, line32 = epoch_line(f64, 19), epoch_line(f32, 19)
    for epoch in range(20):
        ctx.say("  " + epoch_line(f64, epoch))
    ctx.say(f"  float32: {line32}")
    ctx.say(f"  step 100, float64: {epoch_line(big64, 19, integer=True)}")
    grad100 = big64.grads[19][0]
    digits = _common_digits(f"{abs(int(grad100))}", f"{abs(BOOK_GRAD_100)}")
    overflow = len(big32.points) - 1
    ctx.say(f"  step 100, float32: stopped after {overflow} epochs: {big32.stopped.splitlines()[0][:160]}")
    walks = {rate: parabola_walk(rate, torch.float64) for rate in STEPS}
    viz.line_plot(ctx.figure("steps_x.png"), {f"step {r}": w.points[:, 0] for r, w in walks.items() if r <= 1},
                  x=np.arange(21), xlabel="epoch", ylabel="x", title="8.1 gradient descent on (x-1)^2: x by step size")
    viz.line_plot(ctx.figure("steps_distance.png"),     # step 0.5 reaches 0: drawn at 1e-17
                  {f"step {r}": np.maximum(np.abs(w.points[:, 0] - 1), 1e-17) for r, w in walks.items() if r < 2},
                  x=np.arange(21), xlabel="epoch", ylabel="|x - 1|", logy=True,
                  title="8.1 |x - 1|: shrinks (step < 1), stays (1), grows (> 1)")
    viz.line_plot(ctx.figure("step_100.png"), {"|grad|, float64": np.abs(big64.grads[:, 0]),
                                               "|grad|, float32 (stops: loss overflows)":
                                                   np.pad(np.abs(big32.grads[:, 0]), (0, 20 - overflow),
                                                          constant_values=np.nan)},
                  xlabel="epoch", ylabel="|grad|", logy=True, x=np.arange(20),
                  styles={"|grad|, float64": "o-", "|grad|, float32 (stops: loss overflows)": "x--"},
                  title="8.1 step 100: |grad| = 8 * 199^epoch")
    factors = {rate: 1 - 2 * rate for rate in STEPS}
    numbers = {"line64": line64, "line32": line32, "grad32": f32.grads[19][0], "x32": f32.points[20][0],
               "grad100": grad100, "digits100": digits, "overflow32": overflow,
               "x": {r: w.points[:, 0] for r, w in walks.items()}}
    ours = (f"float64: `{line64}` (every printed digit); float32 (Caffe's float): grad {f32.grads[19][0]:.8g}, "
            f"x {f32.points[20][0]:.8g} (6 digits: 20 float32 roundings); each step multiplies x - 1 by 1 - 2*step "
            f"({', '.join(f'{r}: {v:g}' for r, v in factors.items())}): 0.5 lands on 1 at once, 0.9 oscillates "
            f"inwards, 1.0 forever between 5 and -3, 1.1 outwards; step 100 float64: grad {grad100:.16e} at epoch "
            f"19, the float64 nearest to the book's integer ({digits} digits agree; the book's 45 digits are "
            f"Python integer arithmetic from x = 5, lr = 100); in float32 the loss overflows after {overflow} "
            f"epochs and brewnet stops (Caffe would go on with inf); figures steps_x.png, steps_distance.png, step_100.png")
    return Result(ours=ours, numbers=numbers, data="f(x) = x^2 - 2x + 1, x0 = 5 (the book's)")


def _common_digits(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


# ---------------------------------------------------------------- 8.2-8.3 the races

SOLVERS = {     # name -> (solver fields, rate on bend, rate on climb)
    "gd": ('type: "SGD"', 0.0008, 0.05),
    "momentum": ('type: "SGD" momentum: 0.9', 0.0003, 0.01),
    "nesterov": ('type: "Nesterov" momentum: 0.9', 0.0003, 0.01),
    "adagrad": ('type: "AdaGrad" delta: 1e-8', 1.0, 0.1),
    "rmsprop": ('type: "RMSProp" rms_decay: 0.9 delta: 1e-8', 0.1, 0.01),
    "adadelta": ('type: "AdaDelta" momentum: 0.95 delta: 1e-6', 1.0, 1.0),
    "adam": ('type: "Adam" momentum: 0.9 momentum2: 0.999 delta: 1e-8', 0.3, 0.05),
}
RACES = {   # name -> (function, start, iterations, contour window, log-spaced levels)
    "bend": ("bend", [5.0, 5.0], 50, ((2.8, 5.6), (2.6, 6.4)), True),
    "climb": ("climb", [-0.23, 0.0], 50, ((-0.6, 0.4), (-1.4, 1.4)), False),
}
RACE_NOTE = ("the book's two functions are not printed in a form available here: bend = (1-x)^2 + 20(y - x^2/4)^2 "
             "(a bent valley, minimum (1, 0.25)) and climb = x^2 + 0.2xy - y^2 + y^4/2 (a saddle at 0 between "
             "basins at y ~ +-1) stand in for them (examples/book/ch8_functions.py); float64 walks")


def race(name, solvers, quick=False):
    function, start, iterations, _, _ = RACES[name]
    iterations = 10 if quick else iterations
    net = parameter_net(2, python_loss(f"{functions.__name__}:{function}"), name=name)
    column = 1 if name == "bend" else 2
    return {s: walk_function(f"{SOLVERS[s][0]} base_lr: {SOLVERS[s][column]}", net, start, iterations,
                             dtype=torch.float64) for s in solvers}


def draw_race(ctx, name, walks, tag):
    function, _, _, (xlim, ylim), logscale = RACES[name]
    value = getattr(functions, f"{function}_value")
    viz.contour_paths(ctx.figure(f"{name}_{tag}.png"), value, xlim, ylim, {s: w.points for s, w in walks.items()},
                      logscale=logscale, title=f"{ctx.ref} {name}: {len(walks)} solvers from {RACES[name][1]}")
    viz.line_plot(ctx.figure(f"{name}_{tag}_loss.png"), {s: w.losses for s, w in walks.items()},
                  xlabel="iteration", ylabel="f", logy=name == "bend", title=f"{ctx.ref} {name}: f along the paths")


def summary(walks, name):
    parts = []
    for s, w in walks.items():
        end = w.points[-1]
        escape = _escape(w) if name == "climb" else None
        parts.append(f"{s} -> ({end[0]:.3f}, {end[1]:.3f}) f {w.losses[-1]:.4g}" +
                     (f", off the saddle (|y| > 0.5) at {escape}" if escape is not None else ""))
    return "; ".join(parts)


def _escape(walk):
    off = np.nonzero(np.abs(walk.points[:, 1]) > 0.5)[0]
    return int(off[0]) if len(off) else None


def book_momentum(rates, start, function, momentum=0.9):
    """Momentum with the rate outside the velocity (v = m v + g; x -= lr v: torch.optim's form and the
    lr placement the book's formula has), in NumPy; Caffe keeps it inside (h = m h + lr g; x -= h)."""
    p, v, path = np.array(start, dtype=float), np.zeros(2), [np.array(start, dtype=float)]
    for lr in rates:
        v = momentum * v + function(p)[1]
        p = p - lr * v
        path.append(p.copy())
    return np.array(path)


def lr_placement(ctx, quick):
    """Caffe's momentum against the book's form on bend: the same path under a fixed rate, apart once the
    rate changes (a step policy dividing it by 10 half-way)."""
    iterations = 10 if quick else 50
    half = iterations // 2
    net = parameter_net(2, python_loss(f"{functions.__name__}:bend"), name="bend")
    lr = float(np.float32(0.0003))
    fixed = walk_function('type: "SGD" momentum: 0.9 base_lr: 0.0003', net, [5, 5], iterations, dtype=torch.float64)
    step = walk_function(f'type: "SGD" momentum: 0.9 base_lr: 0.0003 lr_policy: "step" gamma: 0.1 stepsize: {half}',
                         net, [5, 5], iterations, dtype=torch.float64)
    m = float(np.float32(0.9))
    book_fixed = book_momentum([lr] * iterations, [5, 5], functions.bend, m)
    rates = [float(np.float32(lr) * np.float32(0.1) ** (i // half)) for i in range(iterations)]
    book_step = book_momentum(rates, [5, 5], functions.bend, m)
    gap_fixed = float(np.abs(fixed.points - book_fixed).max())
    gap_step = float(np.abs(step.points - book_step).max())
    viz.contour_paths(ctx.figure("momentum_lr_placement.png"), functions.bend_value, (3, 5.2), (3.5, 5.3),
                      {"Caffe h = m h + lr g (lr / 10 at half)": step.points,
                       "book v = m v + g, x -= lr v (lr / 10 at half)": book_step,
                       "either, fixed lr": fixed.points}, logscale=True,
                      title="8.2 momentum: where the learning rate sits")
    return gap_fixed, gap_step, step.points[-1], book_step[-1]


@experiment("8.2", "momentum and Nesterov against gradient descent (bend and climb races)",
            book="figs 8-10...8-13: contour plots with the paths; the bend race from [5, 5], 50 iterations, gd "
                 "lr 0.0008, momentum lr 3e-4; the climb race from the saddle [-0.23, 0]")
def momentum_race(ctx):
    numbers, parts = _run_races(ctx, ("gd", "momentum", "nesterov"), "momentum")
    gap_fixed, gap_step, caffe_end, book_end = lr_placement(ctx, ctx.quick)
    numbers.update(gap_fixed=gap_fixed, gap_step=gap_step, caffe_end=caffe_end, book_end=book_end)
    ctx.say(f"  lr placement: fixed lr, max |Caffe - book| {gap_fixed:.1e}; lr / 10 half-way: {gap_step:.3g}")
    ours = ("; ".join(parts) + f". Learning-rate placement: Caffe's h = m h + lr g and the book's v = m v + g, "
            f"x -= lr v walk the same path under a fixed rate (max gap {gap_fixed:.0e}, rounding); once the rate "
            f"drops 10x half-way they part (max gap {gap_step:.3g}): Caffe's history keeps the old rate's steps "
            f"and fades them, the book's form rescales the whole velocity at once (momentum_lr_placement.png)")
    return Result(ours=ours, numbers=numbers, data=RACE_NOTE)


def _run_races(ctx, solvers, tag):
    """Both races with `solvers`, drawn; (per race and solver: end point, last value, escape step; the row's
    text per race)."""
    numbers, parts = {}, []
    for name in RACES:
        walks = race(name, solvers, ctx.quick)
        draw_race(ctx, name, walks, tag)
        numbers[name] = {s: {"end": w.points[-1], "f": w.losses[-1], "escape": _escape(w)} for s, w in walks.items()}
        parts.append(f"{name}: " + summary(walks, name))
        ctx.say(f"  {parts[-1]}")
    return numbers, parts


@experiment("8.3", "AdaGrad, RMSProp, AdaDelta, Adam: the six rules on bend and climb",
            book="figs 8-14...8-17: AdaGrad, RMSProp, AdaDelta and Adam on the same bend and climb races, each "
                 "rule's path on the contours")
def adaptive_race(ctx):
    numbers, parts = _run_races(ctx, SOLVERS, "all")
    rates = "; ".join(f"{s} {v[1]:g}/{v[2]:g}" for s, v in SOLVERS.items())
    ours = "; ".join(parts) + f" (rates bend/climb: {rates}; the book gives gd's and momentum's only)"
    return Result(ours=ours, numbers=numbers, data=RACE_NOTE)
