"""Chapter 7.6: network structures, trained side by side on the same data with the generators of
brewnet.models. Deep supervision (DSN) against the same net without its companion classifiers; the unrolled
view of ResNet (Veit et al. 2016): delete one residual block at test time and measure the accuracy, against a
plain net of the same layers, where deleting a block breaks the chain; FractalNet (DropPath joins) and
DenseNet; one table of parameter counts, time per iteration and test accuracy.
"""
import time

import numpy as np

from brewnet import set_random_seed, viz
from brewnet.data.idx_sets import load_idx_set
from brewnet.models import densenet, dsn, fractalnet, resnet
from brewnet.models.common import parameter_count
from brewnet.tools.eta import EtaProgress

from .nets import get, net_from_text, put, quiet, solver_from_text, step
from .registry import Result, experiment

SOLVER = ('base_lr: {lr} momentum: 0.9 weight_decay: 0.0005 lr_policy: "poly" power: 1 max_iter: {iterations} '
          'display: 0 random_seed: 1701')


class Settings:
    """The sizes of a run. Full: small widths and a few hundred iterations, so that the six trainings fit in
    about ten minutes of one CPU thread; quick: the test's toy version."""

    def __init__(self, quick):
        self.iterations, self.batch = (30, 16) if quick else (1000, 64)
        self.test_count = 48 if quick else 2000
        self.test_batch = 16 if quick else 100
        self.depth = 8 if quick else 20
        self.width = 4 if quick else 8
        self.widths = (4, 8) if quick else (8, 16, 32)
        self.dense_depth, self.growth = (7, 4) if quick else (10, 6)
        self.dsn_convs = 2 if quick else 3


def load(ctx, s):
    """Training images (scaled to [0, 1)), labels, and the first test_count test images and labels."""
    data = load_idx_set(ctx.data)
    scale = np.float32(1 / 256)
    train_x = data.train_images[:, None].astype(np.float32) * scale
    test_x = data.test_images[:s.test_count, None].astype(np.float32) * scale
    return (train_x, data.train_labels.astype(np.float32), test_x,
            data.test_labels[:s.test_count].astype(np.float32))


def short_run_statistics(param, fraction=0.95):
    """BatchNorm's running mean and variance forget at `fraction` per iteration instead of Caffe's 0.999: over a
    few hundred iterations 0.999 weighs the first (stale) batches almost as much as the last ones, and the TEST
    net normalises with statistics of weights long gone."""
    for layer in param.layer:
        if layer.type == "BatchNorm":
            layer.batch_norm_param.moving_average_fraction = fraction
    return param


def train(ctx, name, param, data, s, lr):
    """Train a generated net; returns (solver, main-loss curve, CPU seconds per iteration). CPU time, not wall
    time: the laboratory's machine is shared, and one thread's CPU time does not depend on the others' load."""
    set_random_seed(1701)
    param = short_run_statistics(param)
    solver = solver_from_text(str(param), SOLVER.format(lr=lr, iterations=s.iterations))
    train_x, train_y = data[0], data[1]
    order = np.random.RandomState(0).permutation(len(train_x))
    losses, progress = [], EtaProgress(s.iterations, label=f"7.6 {name}", stream=ctx.stream)
    start = time.process_time()
    for it in range(s.iterations):
        rows = order[(it * s.batch + np.arange(s.batch)) % len(order)]
        put(solver.net, "data", train_x[rows])
        put(solver.net, "label", train_y[rows])
        step(solver)
        losses.append(float(get(solver.net.blobs["loss"])))
        progress.update(it + 1)
    progress.close()
    return solver, losses, (time.process_time() - start) / s.iterations


def accuracy(net, data, s):
    """Test accuracy from the `score` blob of a TEST net over the test images."""
    test_x, test_y = data[2], data[3]
    correct = 0
    for start in range(0, len(test_x), s.test_batch):
        put(net, "data", test_x[start:start + s.test_batch])
        put(net, "label", test_y[start:start + s.test_batch])
        net.forward()
        correct += int((get(net.blobs["score"]).argmax(axis=1) == test_y[start:start + s.test_batch]).sum())
    return correct / len(test_x)


def test_net(param, trained):
    """A TEST-phase net of `param` holding the trained net's weights (matched by layer name)."""
    net = net_from_text(str(param), phase="TEST")
    with quiet():                       # it logs every layer it ignores (the deleted block's)
        net.copy_trained_layers_from(trained.to_proto())
    return net


def generators(s):
    """name -> (generator(**inputs) of the NetParameter, learning rate)."""
    return {
        f"ResNet-{s.depth}": (lambda **kw: resnet.cifar_resnet(s.depth, width=s.width, **kw), 0.1),
        f"Plain-{s.depth}": (lambda **kw: resnet.cifar_resnet(s.depth, width=s.width, shortcuts=False, **kw), 0.1),
        "DSN": (lambda **kw: dsn.dsn(s.widths, s.dsn_convs, aux_weight=0.3, **kw), 0.02),
        "DSN without companions": (lambda **kw: dsn.dsn(s.widths, s.dsn_convs, deep_supervision=False, **kw), 0.02),
        "FractalNet-C3": (lambda **kw: fractalnet.fractalnet(3, s.widths, seed=1701, **kw), 0.1),
        f"DenseNet-{s.dense_depth}": (lambda **kw: densenet.densenet(s.dense_depth, growth=s.growth, **kw), 0.1),
    }


def deletion_accuracies(make, trained, data, s, shortcuts):
    """Block -> test accuracy with that block deleted (the blocks a plain net can lose: same shape in/out)."""
    accuracies = {}
    for block in resnet.block_names(s.depth):
        if not shortcuts and block in ("res2_1", "res3_1"):
            continue
        param = make(drop_blocks=[block], input_shape=(1, 28, 28), batch_size=s.test_batch)
        accuracies[block] = accuracy(test_net(param, trained), data, s)
    return accuracies


@experiment("7.6", "network structures: DSN vs plain, ResNet's unrolled view (block deletion), FractalNet, "
                   "DenseNet",
            book="the structures described, no accuracy printed; Veit et al.: deleting one block of a ResNet "
                 "barely changes its error, deleting a layer of a plain net (VGG) drops it to chance")
def structures(ctx):
    s = Settings(ctx.quick)
    data = load(ctx, s)
    table, curves, deletions, columns, numbers = {}, {}, {}, {}, {}
    for name, (make, lr) in generators(s).items():
        solver, losses, seconds = train(ctx, name, make(input_shape=(1, 28, 28), batch_size=s.batch), data, s, lr)
        trained = solver.net
        acc = accuracy(test_net(make(input_shape=(1, 28, 28), batch_size=s.test_batch), trained), data, s)
        table[name] = {"parameters": parameter_count(trained), "ms_per_iteration": 1000 * seconds,
                       "accuracy": acc, "final_loss": float(np.mean(losses[-max(1, len(losses) // 10):]))}
        curves[name] = losses
        ctx.say(f"  {name}: {table[name]['parameters']} parameters, {1000 * seconds:.0f} CPU ms/iteration, "
                f"accuracy {acc:.4f}")
        if name.startswith("FractalNet"):
            columns[name] = {c: accuracy(test_net(make(test_column=c, input_shape=(1, 28, 28),
                                                       batch_size=s.test_batch), trained), data, s)
                             for c in range(3)}
            ctx.say(f"    one column alone: {', '.join(f'column {c} {a:.3f}' for c, a in columns[name].items())}")
        if name.startswith(("ResNet", "Plain")):
            deletions[name] = deletion_accuracies(make, trained, data, s, name.startswith("ResNet"))
            ctx.say(f"    delete one block: {', '.join(f'{b} {a:.3f}' for b, a in deletions[name].items())}")
    numbers.update(table=table, deletions=deletions, curves=curves, columns=columns)
    figures(ctx, s, curves, deletions, table)
    where = "bundled digits" if ctx.data is None else ctx.data
    return Result(ours=summary(s, table, deletions, columns), numbers=numbers,
                  data=f"{where} ({len(data[0])} training images, the first {len(data[2])} test images)")


def figures(ctx, s, curves, deletions, table):
    blocks = resnet.block_names(s.depth)
    viz.bar_plot(ctx.figure("block_deletion.png"), blocks,
                 {name: [acc.get(b, np.nan) for b in blocks] for name, acc in deletions.items()},
                 ylabel="test accuracy with the block deleted",
                 title="7.6 unrolled view: one block deleted at test time (plain: shape-changing blocks cannot)")
    smooth = max(1, s.iterations // 30)
    viz.line_plot(ctx.figure("dsn_loss.png"),
                  {k: np.convolve(v, np.ones(smooth) / smooth, mode="valid").tolist()
                   for k, v in curves.items() if k.startswith("DSN")},
                  xlabel="iteration", ylabel="training loss of the top classifier", title="7.6 DSN vs plain")
    names = list(table)
    viz.bar_plot(ctx.figure("accuracy.png"), names, {"test accuracy": [table[n]["accuracy"] for n in names]},
                 ylabel="test accuracy", title=f"7.6 after {s.iterations} iterations of {s.batch}")


def summary(s, table, deletions, columns):
    rows = "; ".join(f"{n} {t['parameters']} params, {t['ms_per_iteration']:.0f} CPU ms/iter, acc "
                     f"{t['accuracy']:.4f}" for n, t in table.items())
    parts = [f"{s.iterations} iterations of {s.batch} on one CPU thread, lr poly to 0 (small widths and "
             f"iterations for the CPU: ResNet/plain width {s.width}, DSN/FractalNet widths {s.widths}, "
             f"DenseNet growth {s.growth}): {rows}"]
    for name, acc in deletions.items():
        full = table[name]["accuracy"]
        worst = min(acc, key=acc.get)
        parts.append(f"{name} with one block deleted: mean {np.mean(list(acc.values())):.4f} (intact {full:.4f}), "
                     f"worst {worst} {acc[worst]:.4f}, per block "
                     + ", ".join(f"{b} {a:.3f}" for b, a in acc.items()))
    for name, acc in columns.items():
        parts.append(f"{name}, one column alone at test time (column c is 2^c convolutions deep per block): "
                     + ", ".join(f"column {c} {a:.4f}" for c, a in acc.items()))
    return ". ".join(parts) + ". " + NOTES


NOTES = (
    "Differences: Veit et al. delete blocks of a 110-layer ResNet trained to convergence, where a block is one of "
    "54 and barely matters; here ResNet-20 after about one epoch, where each of 9 blocks carries more, so "
    "a deletion costs more, but the residual net keeps most of its accuracy where the plain net of the same layers "
    "falls to about chance (its chain is cut; Veit et al.'s VGG result). The exception is the first block, "
    "res1_1, whose deletion is as bad as in the plain net: right after the narrow conv1, its branch likely "
    "carries most of the signal. FractalNet after about one epoch with drop-path: the whole beats each column "
    "alone, the shallowest column best (Larsson et al.'s deep columns match the whole only after long "
    "training). Times are CPU time of one thread "
    "(the machine is shared). DSN's companions are softmax losses of constant weight 0.3, without BatchNorm in "
    "both DSN nets (the setting of Lee et al.); the other nets use BatchNorm, with running statistics that "
    "forget at 0.95 per iteration (Caffe's 0.999 suits long runs)")
