"""Chapter 8 on LeNet and a lasso problem: L1 against L2 regularization and the proximal L1 step (8.4), the
trained model's weak points under input perturbation (8.5), the linear path between the initial and the
trained weights (8.6), and overfitting on a small training subset (8.7).

The LeNet runs use fewer iterations than the book's 10 000 (this machine is shared; each row says how many)
and the bundled 8 000/2 000 digits unless --data names a set.
"""
import functools

import numpy as np
import torch

from brewnet import set_random_seed, viz
from brewnet.data.idx_sets import load_idx_set
from brewnet.tools.eta import EtaProgress

from .ch6 import LENET_PARAMS, lenet
from .nets import get, net_from_text, put, set_param, solver_from_text, step
from .registry import Result, experiment

SOLVER = ('base_lr: 0.01 momentum: 0.9 lr_policy: "inv" gamma: 0.0001 power: 0.75 display: 0 max_iter: 100000 '
          'random_seed: 1701')
XAVIER = 'type: "xavier"'
EVAL_BATCH = 100


def lenet_text(batch, dropout=0.0):
    """Caffe's LeNet (ReLU, xavier) on Input blobs; with `dropout`, a Dropout layer after ip1's ReLU."""
    text = lenet(batch, "ReLU", XAVIER)
    if dropout:
        act = 'layer { name: "act1" type: "ReLU" bottom: "ip1" top: "act1" }'
        text = text.replace(act, act + f'\nlayer {{ name: "drop1" type: "Dropout" bottom: "act1" top: "act1" '
                                       f'dropout_param {{ dropout_ratio: {dropout} }} }}')
    return text


def digits(ctx):
    data = load_idx_set(ctx.data)
    scale = np.float32(0.00390625)      # LeNet's 1/256
    return (data.train_images[:, None].astype(np.float32) * scale, data.train_labels.astype(np.float32),
            data.test_images[:, None].astype(np.float32) * scale, data.test_labels.astype(np.float32))


def weights(net):
    return {name: [get(b) for b in net.layer_by_name(name).blobs] for name in LENET_PARAMS}


def load_weights(net, values):
    for name, blobs in values.items():
        for i, array in enumerate(blobs):
            set_param(net, name, i, array)


def train(ctx, label, solver_text, images, labels, iterations, batch, dropout=0.0, every=None, on_eval=None):
    """SGD on (images, labels) in a fixed shuffled order; `on_eval(iteration, net)` every `every` iterations
    and at the end.  Returns the solver and the initial weights."""
    set_random_seed(1701)
    solver = solver_from_text(lenet_text(batch, dropout), solver_text)
    net = solver.net
    initial = weights(net)
    order = np.random.RandomState(0).permutation(len(images))
    progress = EtaProgress(iterations, label=f"{ctx.ref} {label}", stream=ctx.stream)
    for it in range(iterations):
        if on_eval is not None and every and it % every == 0:
            on_eval(it, net)
        rows = order[(it * batch + np.arange(batch)) % len(order)]
        put(net, "data", images[rows])
        put(net, "label", labels[rows])
        step(solver)
        progress.update(it + 1)
    progress.close()
    if on_eval is not None:
        on_eval(iterations, net)
    return solver, initial


@functools.lru_cache(maxsize=4)
def eval_net(dropout=0.0):
    """A TEST-phase LeNet (Dropout passes through) that evaluates copies of the trained weights."""
    return net_from_text(lenet_text(EVAL_BATCH, dropout), phase="TEST")


def evaluate(values, images, labels, dropout=0.0):
    """(mean loss, accuracy) of the weights `values` on the images (a whole number of EVAL_BATCH batches)."""
    net = eval_net(dropout)
    load_weights(net, values)
    losses, correct, n = [], 0, len(images) // EVAL_BATCH * EVAL_BATCH
    for start in range(0, n, EVAL_BATCH):
        put(net, "data", images[start:start + EVAL_BATCH])
        put(net, "label", labels[start:start + EVAL_BATCH])
        net.forward()
        losses.append(float(get(net.blobs["loss"])))
        correct += int((get(net.blobs["ip2"]).argmax(axis=1) == labels[start:start + EVAL_BATCH]).sum())
    return float(np.mean(losses)), correct / n


def sizes(ctx, full_iterations):
    """(iterations, batch, test images) for the quick or the full version."""
    return (8, 8, EVAL_BATCH) if ctx.quick else (full_iterations, 64, None)


@functools.lru_cache(maxsize=2)
def trained_lenet(ctx_data, iterations, batch, stream=None):
    """One LeNet trained with Caffe's lenet_solver (L2 0.0005) and its initial weights, shared by 8.5 and
    8.6 when they run in one process."""
    from .registry import Context
    ctx = Context(data=ctx_data, ref="8.5-8.6", stream=stream)
    train_x, train_y, _, _ = digits(ctx)
    solver, initial = train(ctx, "LeNet", SOLVER + " weight_decay: 0.0005", train_x, train_y, iterations, batch)
    return initial, weights(solver.net)


# ---------------------------------------------------------------- 8.4 L1 and L2; the lasso

REGULARIZERS = {    # name -> solver fields, the book's accuracy
    "L2": ('weight_decay: 0.0005 regularization_type: "L2"', 0.9912),
    "L1": ('weight_decay: 0.0005 regularization_type: "L1"', 0.9766),
    "L1 proximal": ('weight_decay: 0.0005 regularization_type: "L1" proximal_l1: true', None),
}


def lasso_problem(seed=0, n=100, dim=50, zeros=30):
    """y = A w + noise with `zeros` of the `dim` true weights exactly 0 (the book's 50 dimensions, 30 zeros)."""
    rng = np.random.RandomState(seed)
    a = rng.randn(n, dim).astype(np.float32)
    w = np.zeros(dim, dtype=np.float32)
    support = rng.choice(dim, dim - zeros, replace=False)
    w[support] = rng.choice([-1, 1], len(support)) * rng.uniform(0.5, 2.0, len(support))
    y = (a @ w + 0.1 * rng.randn(n)).astype(np.float32)
    return a, y, w


def lasso_net(n, dim):
    """w is an InnerProduct's weights (one output, no bias); EuclideanLoss is 1/(2n) |A w - y|^2."""
    return (f'layer {{ name: "a" type: "Input" top: "a" input_param {{ shape {{ dim: {n} dim: {dim} }} }} }}\n'
            f'layer {{ name: "y" type: "Input" top: "y" input_param {{ shape {{ dim: {n} dim: 1 }} }} }}\n'
            f'layer {{ name: "w" type: "InnerProduct" bottom: "a" top: "p" inner_product_param {{ num_output: 1 '
            f'bias_term: false weight_filler {{ type: "constant" value: 0 }} }} }}\n'
            f'layer {{ name: "loss" type: "EuclideanLoss" bottom: "p" bottom: "y" top: "loss" }}')


def lasso_walk(a, y, lam, lr, iterations, proximal_l1):
    fields = f'base_lr: {lr} lr_policy: "fixed" weight_decay: {lam} regularization_type: "L1" display: 0 ' \
             f'max_iter: {iterations}' + (" proximal_l1: true" if proximal_l1 else "")
    solver = solver_from_text(lasso_net(*a.shape), fields)
    put(solver.net, "a", a)
    put(solver.net, "y", y[:, None])
    step(solver, iterations)
    return get(solver.net.layer_by_name("w").blobs[0]).ravel()


def ista(a, y, lam, lr, iterations):
    """The proximal gradient method in NumPy float32: w = S_{lr*lam}(w - lr * A^T (A w - y) / n)."""
    lr, lam = np.float32(lr), np.float32(lam)
    w = np.zeros(a.shape[1], dtype=np.float32)
    for _ in range(iterations):
        w = w - lr * (a.T @ (a @ w - y) / np.float32(len(y)))
        w = w - np.clip(w, -lr * lam, lr * lam)
    return w


def lasso(ctx):
    a, y, truth = lasso_problem()
    lam, lr, iterations = 0.1, 0.05, (200 if ctx.quick else 2000)
    sub = lasso_walk(a, y, lam, lr, iterations, False)
    prox = lasso_walk(a, y, lam, lr, iterations, True)
    reference = ista(a, y, lam, lr, iterations)
    zero = truth == 0
    numbers = {"sub_exact_zeros": int((sub == 0).sum()), "prox_exact_zeros": int((prox == 0).sum()),
               "prox_zeros_on_true_zeros": int((prox[zero] == 0).sum()),
               "sub_max_on_true_zeros": float(np.abs(sub[zero]).max()),
               "prox_vs_ista": float(np.abs(prox - reference).max()), "ista_zeros": int((reference == 0).sum()),
               "support_found": bool(np.all(prox[~zero] != 0))}
    order = np.argsort(np.abs(truth), kind="stable")       # the 30 true zeros first
    series = {"true": truth[order], "subgradient (Caffe L1)": sub[order], "proximal_l1": prox[order]}
    viz.line_plot(ctx.figure("lasso_weights.png"), series, x=np.arange(len(truth)), xlabel="weight (true zeros "
                  "first)", ylabel="w", styles={"true": "ko", "subgradient (Caffe L1)": "x", "proximal_l1": "+"},
                  title="8.4 lasso: 50 weights, 30 true zeros")
    viz.line_plot(ctx.figure("lasso_zeros.png"), {"subgradient (Caffe L1)": np.abs(sub[zero]) + 1e-12,
                                                  "proximal_l1 (0 drawn at 1e-12)": np.abs(prox[zero]) + 1e-12},
                  x=np.arange(zero.sum()), xlabel="true zero", ylabel="|w|", logy=True,
                  styles={"subgradient (Caffe L1)": "x", "proximal_l1 (0 drawn at 1e-12)": "+"},
                  title="8.4 lasso: |w| on the 30 true zeros")
    return numbers, lam, lr, iterations


@experiment("8.4", "L1 against L2 regularization (LeNet) and the lasso: subgradient vs proximal step",
            book="LeNet after 10 000 iterations: L1 0.9766, L2 0.9912; weight histograms (L1 sparser); lasso "
                 "with 50 dims, 30 true zeros: subgradient leaves small non-zeros, soft threshold exact zeros")
def regularization(ctx):
    iterations, batch, test_n = sizes(ctx, 1500)
    train_x, train_y, test_x, test_y = digits(ctx)
    test_x, test_y = test_x[:test_n], test_y[:test_n]
    numbers, parts, rows = {}, [], {}
    for name, (fields, book) in REGULARIZERS.items():
        solver, _ = train(ctx, name, f"{SOLVER} {fields}", train_x, train_y, iterations, batch)
        values = weights(solver.net)
        loss, acc = evaluate(values, test_x, test_y)
        flat = {layer: blobs[0].ravel() for layer, blobs in values.items()}
        every = np.concatenate(list(flat.values()))
        small, exact = float(np.mean(np.abs(every) < 1e-3)), int((every == 0).sum())
        numbers[name] = {"accuracy": acc, "loss": loss, "small": small, "exact_zeros": exact, "count": len(every)}
        rows[name] = flat
        parts.append(f"{name} {acc:.4f}" + (f" (book {book})" if book else "") +
                     f", |w| < 1e-3: {100 * small:.1f}%, exact zeros {exact}")
        ctx.say(f"  {parts[-1]}")
    viz.histogram_rows(ctx.figure("weight_histograms.png"), rows, bins=80,
                       title="8.4 LeNet weights: L2, L1 (Caffe's subgradient), L1 with proximal_l1")
    lasso_numbers, lam, lr, lasso_iters = lasso(ctx)
    numbers["lasso"] = lasso_numbers
    ln = lasso_numbers
    ctx.say(f"  lasso: {ln}")
    ours = (f"LeNet after {iterations} iterations of {batch} (CPU time; the book 10 000), weight_decay 0.0005: "
            + "; ".join(parts) + f". Lasso (brewnet InnerProduct + EuclideanLoss, lambda {lam}, lr {lr}, "
            f"{lasso_iters} steps): Caffe's L1 subgradient {ln['sub_exact_zeros']} exact zeros (on the 30 true zeros "
            f"|w| up to {ln['sub_max_on_true_zeros']:.1e}), proximal_l1 {ln['prox_exact_zeros']} exact zeros "
            f"({ln['prox_zeros_on_true_zeros']} of the 30 true ones, support kept: {ln['support_found']}), equal "
            f"to NumPy ISTA within {ln['prox_vs_ista']:.0e}. On LeNet Caffe's L1 term rides in the momentum "
            f"history (a pull of lr*decay/(1-momentum) = 10x lr*decay per step), the proximal threshold is lr*decay "
            f"once per step: Caffe's L1 herds most weights into a band around 0 without reaching it, proximal_l1 "
            f"zeroes the ones it reaches exactly and stays near L2's accuracy here; figures weight_histograms.png, "
            f"lasso_weights.png, lasso_zeros.png")
    return Result(ours=ours, numbers=numbers, data=_where(ctx) + "; lasso: seeded Gaussian A (100 x 50)")


def _where(ctx):
    return "bundled digits (8 000 train, 2 000 test)" if ctx.data is None else ctx.data


# ---------------------------------------------------------------- 8.5 perturbations

NOISE = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
SHIFTS = (0, 1, 2, 3, 4, 5, 6)


def shifted(images, pixels):
    """Each image moved `pixels` to the right and down, zeros coming in."""
    out = np.zeros_like(images)
    if pixels == 0:
        return images.copy()
    out[..., pixels:, pixels:] = images[..., :-pixels, :-pixels]
    return out


@experiment("8.5", "the model's weak points: accuracy under input noise and shifts",
            book="figures: LeNet's accuracy falls with added noise and with translations of the digits")
def perturbation(ctx):
    iterations, batch, test_n = sizes(ctx, 1500)
    _, trained = trained_lenet(ctx.data, iterations, batch, ctx.stream)
    _, _, test_x, test_y = digits(ctx)
    test_x, test_y = test_x[:test_n], test_y[:test_n]
    rng = np.random.RandomState(0)
    noise = {s: evaluate(trained, np.clip(test_x + s * rng.randn(*test_x.shape).astype(np.float32), 0, 1),
                         test_y)[1] for s in NOISE}
    shift = {k: evaluate(trained, shifted(test_x, k), test_y)[1] for k in SHIFTS}
    viz.line_plot(ctx.figure("noise.png"), {"accuracy": list(noise.values())}, x=list(noise), xlabel="noise std "
                  "(pixels in [0, 1], clipped)", ylabel="test accuracy", title="8.5 LeNet under Gaussian noise")
    viz.line_plot(ctx.figure("shift.png"), {"accuracy": list(shift.values())}, x=list(shift),
                  xlabel="shift right and down (pixels)", ylabel="test accuracy", title="8.5 LeNet under shifts")
    viz.image_grid(ctx.figure("examples.png"), np.concatenate(
        [np.clip(test_x[:1] + s * rng.randn(1, 1, 28, 28), 0, 1)[:, 0] for s in NOISE] +
        [shifted(test_x[:1], k)[:, 0] for k in SHIFTS]), ncols=len(NOISE),
        titles=[f"noise {s}" for s in NOISE] + [f"shift {k}" for k in SHIFTS], title="8.5 perturbed inputs")
    ctx.say(f"  noise: {noise}\n  shift: {shift}")
    ours = (f"LeNet after {iterations} iterations of {batch}: accuracy by noise std " +
            ", ".join(f"{s}: {a:.4f}" for s, a in noise.items()) + "; by shift " +
            ", ".join(f"{k} px: {a:.4f}" for k, a in shift.items()) +
            " (pooling absorbs a pixel or two; larger shifts move strokes out of the learned places)")
    return Result(ours=ours, numbers={"noise": noise, "shift": shift}, data=_where(ctx))


# ---------------------------------------------------------------- 8.6 the linear path

def alphas(quick):
    return np.linspace(-0.5, 1.5, 5 if quick else 41)


@experiment("8.6", "the linear path from the initial to the trained LeNet (Goodfellow et al.)",
            book="figure: loss and accuracy along (1 - a) theta0 + a theta1, a in [-0.5, 1.5], train and test: "
                 "the loss falls smoothly from a = 0 to 1, no bump")
def linear_path(ctx):
    iterations, batch, test_n = sizes(ctx, 1500)
    initial, trained = trained_lenet(ctx.data, iterations, batch, ctx.stream)
    train_x, train_y, test_x, test_y = digits(ctx)
    n = test_n or 2000
    sets = {"train": (train_x[:n], train_y[:n]), "test": (test_x[:n], test_y[:n])}
    curves = {f"{k} {m}": [] for k in sets for m in ("loss", "accuracy")}
    grid = alphas(ctx.quick)
    for alpha in grid:
        values = {layer: [(1 - alpha) * w0 + alpha * w1 for w0, w1 in zip(initial[layer], trained[layer])]
                  for layer in initial}
        for name, (x, y) in sets.items():
            loss, acc = evaluate(values, x, y)
            curves[f"{name} loss"].append(loss)
            curves[f"{name} accuracy"].append(acc)
    viz.line_plot(ctx.figure("path_loss.png"), {k: v for k, v in curves.items() if "loss" in k}, x=grid,
                  xlabel="alpha", ylabel="loss", logy=True, title="8.6 loss along (1-a) theta0 + a theta1")
    viz.line_plot(ctx.figure("path_accuracy.png"), {k: v for k, v in curves.items() if "accuracy" in k}, x=grid,
                  xlabel="alpha", ylabel="accuracy", title="8.6 accuracy along (1-a) theta0 + a theta1")
    inside = (grid >= 0) & (grid <= 1)
    test_loss = np.array(curves["test loss"])
    turns = int(np.sum(np.diff(np.sign(np.diff(test_loss[inside]))) != 0))
    monotone = bool(np.all(np.diff(test_loss[inside]) < 0))
    best = float(grid[int(np.argmin(test_loss))])
    best_train = float(grid[int(np.argmin(curves["train loss"]))])
    at = {a: {k: v[int(np.argmin(np.abs(grid - a)))] for k, v in curves.items()} for a in (-0.5, 0.0, 1.0, 1.5)}
    ctx.say(f"  {at}")
    ours = (f"LeNet after {iterations} iterations of {batch}, {len(grid)} values of alpha: test loss " +
            ", ".join(f"a={a}: {v['test loss']:.3g}" for a, v in at.items()) + "; test accuracy " +
            ", ".join(f"a={a}: {v['test accuracy']:.4f}" for a, v in at.items()) +
            f"; from a = 0 the test loss falls {'without a bump' if turns <= 1 else 'with bumps'} ({turns} "
            f"turn{'s' if turns != 1 else ''} on [0, 1]{', monotone' if monotone else ''}), lowest at a = {best:g}; "
            f"the train loss lowest at a = {best_train:g}"
            + (": going on past theta1 fits the training digits better and the test digits worse"
               if best_train > 1 and best < best_train else "") + " (path_loss.png, path_accuracy.png)")
    return Result(ours=ours, numbers={"alpha": grid, "curves": curves, "monotone": monotone, "best": best,
                                      "turns": turns, "best_train": best_train},
                  data=_where(ctx) + f"; {n} train and {n} test images along the path")


# ---------------------------------------------------------------- 8.7 overfitting

OVERFIT = {     # name -> (solver fields, dropout ratio)
    "plain": ("weight_decay: 0", 0.0),
    "weight decay 0.005": ("weight_decay: 0.005", 0.0),
    "dropout 0.5": ("weight_decay: 0", 0.5),
    "both": ("weight_decay: 0.005", 0.5),
}


@experiment("8.7", "overfitting on a small training subset: weight decay and dropout",
            book="figures: train loss falls to ~0 while test loss rises on a small subset; weight decay and "
                 "dropout narrow the gap")
def overfitting(ctx):
    iterations, batch, every, subset = (8, 8, 4, EVAL_BATCH) if ctx.quick else (1000, 50, 100, 500)
    train_x, train_y, test_x, test_y = digits(ctx)
    small_x, small_y = train_x[:subset], train_y[:subset]
    test_n = EVAL_BATCH if ctx.quick else len(test_x)
    test_x, test_y = test_x[:test_n], test_y[:test_n]
    numbers, parts, loss_series, acc_series = {}, [], {}, {}
    for name, (fields, dropout) in OVERFIT.items():
        log = {"iteration": [], "train loss": [], "test loss": [], "train accuracy": [], "test accuracy": []}

        def on_eval(it, net, log=log, dropout=dropout):
            values = weights(net)
            (tl, ta), (vl, va) = evaluate(values, small_x, small_y, dropout), evaluate(values, test_x, test_y, dropout)
            for key, value in zip(log, (it, tl, vl, ta, va)):
                log[key].append(value)
        train(ctx, name, f"{SOLVER} {fields}", small_x, small_y, iterations, batch, dropout, every, on_eval)
        numbers[name] = log
        loss_series[f"{name} train"], loss_series[f"{name} test"] = log["train loss"], log["test loss"]
        acc_series[f"{name} test"] = log["test accuracy"]
        best = int(np.argmin(log["test loss"]))
        parts.append(f"{name}: train loss {log['train loss'][-1]:.3g} acc {log['train accuracy'][-1]:.3f}, test loss "
                     f"{log['test loss'][-1]:.3g} (lowest {log['test loss'][best]:.3g} at {log['iteration'][best]}) "
                     f"acc {log['test accuracy'][-1]:.4f}")
        ctx.say(f"  {parts[-1]}")
    x = numbers["plain"]["iteration"]
    styles = {k: "--" if k.endswith("train") else "-" for k in loss_series}
    viz.line_plot(ctx.figure("overfit_loss.png"), loss_series, x=x, xlabel="iteration", ylabel="loss", logy=True,
                  styles=styles, title=f"8.7 LeNet on {subset} training digits: train (--) and test (-) loss")
    viz.line_plot(ctx.figure("overfit_accuracy.png"), acc_series, x=x, xlabel="iteration", ylabel="test accuracy",
                  title=f"8.7 test accuracy, {subset} training digits")
    ours = (f"{subset} training digits, {iterations} iterations of {batch} ({iterations * batch // subset} epochs), "
            f"test on {test_n}: " + "; ".join(parts))
    return Result(ours=ours, numbers=numbers, data=_where(ctx) + f"; first {subset} training digits")
