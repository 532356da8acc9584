"""Chapter 3: the AND gate learnt by a 2-4-1 sigmoid net (3.4.4), and what equal initial weights do (3.5).

The net, as prototxt: Input x (4 x 2, the AND table), InnerProduct(4) -> Sigmoid -> InnerProduct(1) ->
Sigmoid -> EuclideanLoss against y (4 x 1), trained by brewnet's SGD (lr 0.1, fixed, no momentum),
full batch. Caffe's EuclideanLoss is 1/(2N)·sum (p - y)²; the book's "1/2·sum" reading is the same layer with
loss_weight N = 4.
"""
import numpy as np

from .nets import get, params, put, solver_from_text, step
from .registry import Result, experiment

AND_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
AND_Y = np.array([[0], [0], [0], [1]], dtype=np.float32)


def _filler(value):
    if value is None:       # the book's 3.4.4 draws its weights at random
        return 'weight_filler { type: "gaussian" std: 1 } bias_filler { type: "gaussian" std: 1 }'
    w, b = value if isinstance(value, tuple) else (value, value)
    return f'weight_filler {{ type: "constant" value: {w} }} bias_filler {{ type: "constant" value: {b} }}'


def and_net(init=None, init2=None, bias=True, loss_weight=4.0):
    """The 2-4-1 sigmoid net; `init` a constant (or (weight, bias) pair) for both layers, `init2` for the
    second layer when it differs, None for random weights."""
    init2 = init if init2 is None else init2
    term = "true" if bias else "false"
    return f"""
name: "and_gate"
layer {{ name: "x" type: "Input" top: "x" input_param {{ shape {{ dim: 4 dim: 2 }} }} }}
layer {{ name: "y" type: "Input" top: "y" input_param {{ shape {{ dim: 4 dim: 1 }} }} }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "x" top: "z1"
        inner_product_param {{ num_output: 4 bias_term: {term} {_filler(init)} }} }}
layer {{ name: "sig1" type: "Sigmoid" bottom: "z1" top: "h" }}
layer {{ name: "ip2" type: "InnerProduct" bottom: "h" top: "z2"
        inner_product_param {{ num_output: 1 bias_term: {term} {_filler(init2)} }} }}
layer {{ name: "sig2" type: "Sigmoid" bottom: "z2" top: "p" }}
layer {{ name: "loss" type: "EuclideanLoss" bottom: "p" bottom: "y" top: "loss" loss_weight: {loss_weight} }}
"""


SOLVER = 'base_lr: 0.1 lr_policy: "fixed" momentum: 0 weight_decay: 0 display: 0 max_iter: 100000 random_seed: 1'


def and_solver(**kwargs):
    solver = solver_from_text(and_net(**kwargs), SOLVER)
    put(solver.net, "x", AND_X)
    put(solver.net, "y", AND_Y)
    return solver


def predictions(net):
    net.forward()
    return get(net.blobs["p"]).ravel()


@experiment("3.4.4", "AND gate, 2-4-1 sigmoid net", book="predictions approach labels 0 0 0 1 after 10 000 steps")
def and_gate(ctx):
    steps = 1000 if ctx.quick else 10000
    solver = and_solver(init=None)
    trace = []
    for done in range(0, steps + 1, steps // 5):
        if done:
            step(solver, steps // 5)
        trace.append((done, predictions(solver.net)))
    ctx.say("Label vs Prediction")
    for done, p in trace:
        ctx.say(f"  step {done:5d}: " + "  ".join(f"{int(y)} vs {v:.4f}" for y, v in zip(AND_Y.ravel(), p)))
    final = trace[-1][1]
    correct = int(((final > 0.5) == (AND_Y.ravel() > 0.5)).sum())
    ours = f"after {steps} steps: predictions {np.round(final, 3).tolist()} ({correct}/4 right)"
    return Result(ours=ours, numbers={"predictions": final, "correct": correct, "steps": steps},
                  data="the AND table")


# The readings of the book's training tried in 3.5: bias or not, and the loss as 1/2·sum (loss_weight 4)
# or Caffe's 1/(2N)·sum (loss_weight 1).
READINGS = {
    "no bias, 1/2*sum": dict(bias=False, loss_weight=4.0),
    "bias 0, 1/2*sum": dict(bias=True, loss_weight=4.0, bias_init=0.0),
    "bias = weights, 1/2*sum": dict(bias=True, loss_weight=4.0, bias_init=None),
    "bias 0, mean": dict(bias=True, loss_weight=1.0, bias_init=0.0),
}
BOOK_FINAL = {0.0: (-2.490, -3.373), 1.0: (2.482, 3.231)}


def equal_init_run(value, steps, bias, loss_weight, bias_init=None):
    init = value if not bias else (value, value if bias_init is None else bias_init)
    solver = and_solver(init=init, bias=bias, loss_weight=loss_weight)
    step(solver, steps)
    w1, w2 = params(solver.net, "ip1")[0], params(solver.net, "ip2")[0]
    return w1, w2


def first_iteration(init, init2=None, bias=False):
    """The intermediate values of the first forward/backward: hidden top_val, output residual_z
    (dLoss/dz2, the bottom diff of the output Sigmoid) and grad_w (ip2's weight diff)."""
    solver = and_solver(init=init, init2=init2, bias=bias, loss_weight=4.0)
    net = solver.net
    net.clear_param_diffs()
    net.forward()
    net.backward()
    return {"top_val": get(net.blobs["h"])[:, 0], "residual_z": get(net.blobs["z2"], diff=True)[:, 0],
            "grad_w": get(net.layer_by_name("ip2").blobs[0], diff=True).ravel()}


@experiment("3.5", "equal initialisation of the AND-gate net",
            book="w=0: w1 all -2.490, w2 all -3.373; w=1: 2.482, 3.231; top_val 0.5/0.731/0.880, "
                 "residual_z 0.125, grad_w 0.135")
def equal_init(ctx):
    steps = 1000 if ctx.quick else 10000
    numbers, lines = {}, []
    for name, reading in READINGS.items():
        if ctx.quick and name != "bias 0, 1/2*sum":
            continue
        finals = []
        for value in (0.0, 1.0):
            w1, w2 = equal_init_run(value, steps, **reading)
            spread = max(np.ptp(w1), np.ptp(w2))
            finals += [w1[0, 0], w2[0, 0]]
            numbers[f"{name}/{value:g}"] = (w1, w2)
            ctx.say(f"  {name}, all {value:g}: w1 = {np.round(w1.ravel(), 3).tolist()}, "
                    f"w2 = {np.round(w2.ravel(), 3).tolist()} (spread {spread:.1e})")
        lines.append(f"{name}: {finals[0]:.3f}/{finals[1]:.3f}, {finals[2]:.3f}/{finals[3]:.3f}")
    ones = first_iteration(1.0)
    zeros = first_iteration(0.0)
    mixed = first_iteration(1.0, init2=0.0)
    numbers.update(ones=ones, zeros=zeros, mixed=mixed)
    ctx.say(f"  first iteration, all 1, no bias: top_val {np.round(ones['top_val'], 3).tolist()}")
    ctx.say(f"  first iteration, all 0: residual_z {np.round(zeros['residual_z'], 3).tolist()}, "
            f"grad_w {np.round(zeros['grad_w'], 4).tolist()}")
    ctx.say(f"  first iteration, w1 = 1, w2 = 0: residual_z {np.round(mixed['residual_z'], 3).tolist()}, "
            f"grad_w {np.round(mixed['grad_w'], 4).tolist()}")
    ours = (f"every unit of a layer keeps the same weight (spread 0). Final w1/w2 for w=0, w=1 after {steps} "
            f"steps: " + "; ".join(lines) + ". No reading gives the book's -2.490/-3.373, 2.482/3.231 (also tried "
            "with the same equations in NumPy: per-sample updates, lr 0.5 and 1, loss x2, biases at 1 or not "
            "trained): the printed finals follow from none; biases with 1/2*sum is closest and matches the signs "
            "(the book's own run probably differed in a detail not printed). First iteration: top_val "
            f"{np.round(ones['top_val'], 4).tolist()} (hidden, w=1, no bias = sigmoid(0,1,1,2); the book truncates 0.8808 to 0.880); residual_z "
            f"{zeros['residual_z'][0]:.3f} (w=0, label 0); grad_w {mixed['grad_w'][0]:.4f} only with w1=1 and "
            f"w2=0 (0.125*(0.5+0.731+0.731-0.880)); all-0 gives {zeros['grad_w'][0]:.3f}, all-1 "
            f"{ones['grad_w'][0]:.4f}: the book's printout mixes two initialisations")
    return Result(ours=ours, numbers=numbers, data="the AND table")
