"""Book 5.9: Center Loss, the book's own Caffe extension (brewnet/layers/center_loss.py).

LeNet++ (caffe-face's mnist_example: three pairs of 5x5 convolutions with PReLU, max pooling after each pair,
a 2-D feature layer `ip1` with PReLU, `ip2` to the 10 classes) trained with softmax alone and with softmax plus
center loss (loss weight 0.01, centers' lr_mult 1, caffe-face's settings), on MNIST-format digits (the bundled
8 000 / 2 000 by default).  Reported: test accuracy of both, the 2-D test features of both coloured by class
(the book's figures 5-15 / 5-16), and their compactness: the mean distance of a feature to its class's mean
over the mean distance between class means (lower: tighter classes, further apart).

    python -m examples.book 5.9            # or alone: python -m examples.book.ch5_9 [--quick]
    python -m examples.book.ch5_9 --settings caffe-face-shift2-w0.1 --gpu 0    # what the laboratory runs on a GPU

`run(quick, data_dir, out_dir)` is the whole experiment and returns its numbers.
"""
import itertools
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BOOK_ACCURACY = 0.9888          # the book's test accuracy with center loss (full MNIST)
DIGITS = os.path.join(ROOT, "data", "mnist10k")

# (channel widths of the three convolution pairs, training iterations, lr step values, train batch)
# FULL, the CPU's run, halves caffe-face's widths (32, 64, 128) and trains 6 000 iterations of 64 (48 epochs of
# the bundled 8 000 digits) instead of 10 000 of 128, with the GPU setting's shifted digits and center weight
# 0.1 (see GPU_SETTING below); the layers and the solver are caffe-face's.
FULL = dict(widths=(16, 32, 64), iters=6000, steps=(3000, 4800, 5400), batch=64, shift=2, center_weight=0.1)
QUICK = dict(widths=(8, 8, 16), iters=60, steps=(40,), batch=32)
# caffe-face's mnist_example unchanged (widths, 10 000 iterations of 128, its step values): a GPU's run.
CAFFE_FACE = dict(widths=(32, 64, 128), iters=10000, steps=(5000, 8000, 10000), batch=128)
SETTINGS = {"full": FULL, "quick": QUICK, "caffe-face": CAFFE_FACE}
# Optional keys of a setting: center_weight (caffe-face's 0.01) and shift: the training digits padded by that
# many pixels and cropped back to 28 x 28 at random by the Data layer (crop_size), Caffe's own augmentation.
SETTINGS.update({
    "caffe-face-shift2": dict(CAFFE_FACE, shift=2),
    "caffe-face-w0.1": dict(CAFFE_FACE, center_weight=0.1),
    "caffe-face-shift2-w0.1": dict(CAFFE_FACE, shift=2, center_weight=0.1),
})
# The laboratory's run on a GPU.  On the bundled 8 000 digits caffe-face's own settings overfit (train loss
# 0.001, test 0.96): shifted digits and a 10x center weight give the book's figures and 0.98.
GPU_SETTING = "caffe-face-shift2-w0.1"


def conv_pair(name, bottom, width, pool_kernel):
    layers = []
    for suffix, source in (("", bottom), ("+", f"conv{name}")):
        top = f"conv{name}{suffix}"
        layers.append(f"""
layer {{ name: "{top}" type: "Convolution" bottom: "{source}" top: "{top}"
  param {{ lr_mult: 1 decay_mult: 1 }} param {{ lr_mult: 2 decay_mult: 0 }}
  convolution_param {{ num_output: {width} kernel_size: 5 stride: 1 pad: 2
    weight_filler {{ type: "xavier" }} bias_filler {{ type: "constant" value: 0 }} }} }}
layer {{ name: "prelu{name}{suffix}" type: "PReLU" bottom: "{top}" top: "{top}" }}""")
    layers.append(f"""
layer {{ name: "pool{name}" type: "Pooling" bottom: "conv{name}+" top: "pool{name}"
  pooling_param {{ pool: MAX kernel_size: {pool_kernel} stride: 2 }} }}""")
    return "".join(layers)


def data_layer(phase, source, batch, crop=0):
    crop = f" crop_size: {crop}" if crop else ""
    return f"""
layer {{ name: "mnist" type: "Data" top: "data" top: "label" include {{ phase: {phase} }}
  transform_param {{ mean_value: 127.5 scale: 0.0078125{crop} }}
  data_param {{ source: "{source}" batch_size: {batch} backend: LMDB }} }}"""


def lenet_pp(train_db, test_db, widths=(32, 64, 128), batch=64, center_loss=True, center_weight=0.01, crop=0):
    """LeNet++ as a train/test prototxt; the same layers and settings as caffe-face's mnist_example, plus a
    TEST-phase Accuracy layer.  crop: random crops of the (padded) training digits."""
    text = 'name: "LeNet++"' + data_layer("TRAIN", train_db, batch, crop) + data_layer("TEST", test_db, 100)
    text += conv_pair("1", "data", widths[0], 2) + conv_pair("2", "pool1", widths[1], 2)
    text += conv_pair("3", "pool2", widths[2], 3)
    text += """
layer { name: "ip1" type: "InnerProduct" bottom: "pool3" top: "ip1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  inner_product_param { num_output: 2 weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0 } } }
layer { name: "preluip1" type: "PReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" param { lr_mult: 1 decay_mult: 1 }
  inner_product_param { num_output: 10 weight_filler { type: "xavier" } bias_term: false } }
layer { name: "softmax_loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "softmax_loss" }
layer { name: "accuracy" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy"
  include { phase: TEST } }"""
    if center_loss:
        text += f"""
layer {{ name: "center_loss" type: "CenterLoss" bottom: "ip1" bottom: "label" top: "center_loss"
  param {{ lr_mult: 1 decay_mult: 0 }}
  center_loss_param {{ num_output: 10 center_filler {{ type: "xavier" }} }}
  loss_weight: {center_weight} }}"""
    return text + "\n"


def lenet_pp_deploy(widths=(32, 64, 128), batch=100):
    """The deploy net up to the 2-D features ip1 (caffe-face's mnist_deploy.prototxt), for the book's
    feature-dump script (examples/book/center_loss_features.py)."""
    text = f'name: "LeNet++"\ninput: "data"\ninput_dim: {batch}\ninput_dim: 1\ninput_dim: 28\ninput_dim: 28\n'
    text += conv_pair("1", "data", widths[0], 2) + conv_pair("2", "pool1", widths[1], 2)
    text += conv_pair("3", "pool2", widths[2], 3)
    return text + """
layer { name: "ip1" type: "InnerProduct" bottom: "pool3" top: "ip1"
  inner_product_param { num_output: 2 } }
layer { name: "preluip1" type: "PReLU" bottom: "ip1" top: "ip1" }
"""


def solver_text(net_path, iters, steps, prefix, test_iter=20, mode="CPU"):
    """caffe-face's mnist_solver (SGD, lr 0.01, momentum 0.9, decay 0.0005, multistep gamma 0.8), its
    10 000 iterations shortened to `iters` with the steps moved in proportion."""
    stepvalues = " ".join(f"stepvalue: {s}" for s in steps)
    return (f'net: "{net_path}"\ntest_iter: {test_iter}\ntest_interval: {iters}\ntest_initialization: false\n'
            f'base_lr: 0.01\nmomentum: 0.9\nweight_decay: 0.0005\nlr_policy: "multistep"\ngamma: 0.8\n'
            f'{stepvalues}\ndisplay: {max(iters // 10, 1)}\nmax_iter: {iters}\nsnapshot: 0\n'
            f'snapshot_prefix: "{prefix}"\nrandom_seed: 1\nsolver_mode: {mode}\n')


def make_databases(data_dir, folder, shift=0):
    """mnist_train_lmdb / mnist_test_lmdb in `folder` from the IDX files of `data_dir` (kept when present);
    with `shift`, the training digits padded by that many pixels (mnist_train_pad<shift>_lmdb)."""
    from brewnet.tools import convert_mnist_data
    sys.path.insert(0, os.path.join(ROOT, "examples", "mnist"))
    from create_mnist import idx_file
    os.makedirs(folder, exist_ok=True)
    paths = {}
    for split, prefix, pad in (("train", "train", shift), ("test", "t10k", 0)):
        target = paths[split] = os.path.join(folder, f"mnist_{split}_pad{pad}_lmdb" if pad else
                                             f"mnist_{split}_lmdb")
        if not os.path.exists(target):
            convert_mnist_data.convert(idx_file(data_dir, f"{prefix}-images-idx3-ubyte"),
                                       idx_file(data_dir, f"{prefix}-labels-idx1-ubyte"), target, pad=pad)
    return paths["train"], paths["test"]


def train(net_text, folder, name, settings, gpu=None):
    """Train one LeNet++; returns the solver (its test net shares the trained weights) and the seconds."""
    from brewnet.solvers import get_solver
    net_path = os.path.join(folder, f"{name}_train_test.prototxt")
    with open(net_path, "w") as handle:
        handle.write(net_text)
    solver_path = os.path.join(folder, f"{name}_solver.prototxt")
    with open(solver_path, "w") as handle:
        handle.write(solver_text(net_path, settings["iters"], settings["steps"], os.path.join(folder, name),
                                 mode="CPU" if gpu is None else "GPU"))
    solver = get_solver(solver_path)
    start = time.perf_counter()
    solver.solve()
    return solver, time.perf_counter() - start


def test_features(net, batches):
    """ip1 features, labels and accuracy over `batches` test batches of the TEST net."""
    feats, labels, correct = [], [], 0.0
    for _ in range(batches):
        net.forward()
        feats.append(net.blobs["ip1"].data.detach().cpu().numpy().copy())
        labels.append(net.blobs["label"].data.detach().cpu().numpy().astype(int))
        correct += float(net.blobs["accuracy"].data.item())
    return np.concatenate(feats), np.concatenate(labels), correct / batches


def compactness(feats, labels):
    """Mean distance of a feature to its class's mean / mean distance between the class means."""
    classes = np.unique(labels)
    means = np.stack([feats[labels == k].mean(axis=0) for k in classes])
    within = np.mean([np.linalg.norm(feats[labels == k] - means[i], axis=1).mean()
                      for i, k in enumerate(classes)])
    between = np.mean([np.linalg.norm(means[a] - means[b]) for a, b in itertools.combinations(range(len(classes)), 2)])
    return float(within / between)


def scatter(path, feats, labels, title):
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 6))
    for k in np.unique(labels):
        points = feats[labels == k]
        ax.scatter(points[:, 0], points[:, 1], s=3, label=str(k), color=plt.cm.tab10(k % 10))
    ax.legend(markerscale=4, fontsize=8)
    ax.set_title(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def train_variant(name, settings, train_db, test_db, out_dir, test_batches, gpu=None):
    """Train one of the two nets ("softmax" or "center") and measure it on the test set."""
    import torch
    torch.set_num_threads(1)
    from brewnet.log import init_log
    init_log()
    if gpu is not None:
        from brewnet import set_device, set_mode_gpu
        set_device(gpu)
        set_mode_gpu()
    center = name == "center"
    text = lenet_pp(train_db, test_db, settings["widths"], settings["batch"], center_loss=center,
                    center_weight=settings.get("center_weight", 0.01), crop=28 if settings.get("shift") else 0)
    solver, seconds = train(text, out_dir, name, settings, gpu)
    feats, labels, accuracy = test_features(solver.test_nets[0], test_batches)
    solver.net.save(os.path.join(out_dir, f"lenet_pp_{name}.caffemodel"))
    with open(os.path.join(out_dir, "mnist_deploy.prototxt"), "w") as handle:
        handle.write(lenet_pp_deploy(settings["widths"]))
    np.savez(os.path.join(out_dir, f"ip1_{name}.npz"), features=feats, labels=labels)
    return {f"accuracy_{name}": accuracy, f"compactness_{name}": compactness(feats, labels),
            f"seconds_{name}": seconds}


def draw(out_dir, numbers):
    """The scatter plots (figures 5-15 / 5-16) of the ip1_<name>.npz features a run left in out_dir."""
    figures = []
    for name, label in (("softmax", "softmax only"), ("center", "softmax + center loss")):
        if f"accuracy_{name}" not in numbers:
            continue
        saved = np.load(os.path.join(out_dir, f"ip1_{name}.npz"))
        figures.append(scatter(os.path.join(out_dir, f"ip1_{name}.png"), saved["features"], saved["labels"],
                               f"LeNet++ ip1 on the test set, {label} (acc {numbers[f'accuracy_{name}']:.4f})"))
    return figures


def run(quick=False, data_dir=None, out_dir=None, settings=None, gpu=None, figures=True):
    """The experiment: trains both nets (in two processes), writes the scatter plots, returns the numbers.
    `settings` names one of SETTINGS (default: "quick" or "full"); `gpu` a CUDA device to train on;
    figures=False leaves the plots to `draw` (a machine without matplotlib)."""
    import concurrent.futures
    import multiprocessing
    data_dir = data_dir or DIGITS
    out_dir = out_dir or os.path.join(ROOT, "results", "book", "5.9")
    settings = SETTINGS[settings or ("quick" if quick else "full")]
    os.makedirs(out_dir, exist_ok=True)
    train_db, test_db = make_databases(data_dir, os.path.join(out_dir, "data"), settings.get("shift", 0))
    test_batches = 2 if quick else 20
    numbers = {}
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=context) as pool:
        jobs = [pool.submit(train_variant, name, settings, train_db, test_db, out_dir, test_batches, gpu)
                for name in ("softmax", "center")]
        for job in jobs:
            numbers.update(job.result())
    numbers["compactness_gain"] = numbers["compactness_softmax"] / numbers["compactness_center"]
    with open(os.path.join(out_dir, "numbers.json"), "w") as handle:
        json.dump(dict(numbers, settings=settings), handle, indent=1)
    numbers["figures"] = draw(out_dir, numbers) if figures else []
    return numbers


def _describe(numbers, data_dir, setting, gpu):
    ours = (f"acc {numbers['accuracy_center']:.4f} with center loss, {numbers['accuracy_softmax']:.4f} without; "
            f"compactness {numbers['compactness_center']:.3f} vs {numbers['compactness_softmax']:.3f} "
            f"({numbers['compactness_gain']:.1f}x tighter); settings {setting}, "
            f"{'GPU' if gpu is not None else 'CPU'}")
    data = "bundled MNIST digits (8 000 train / 2 000 test)" if not data_dir else data_dir
    return ours, data


try:
    from .registry import Result, experiment
except ImportError:         # run as a script: python examples/book/ch5_9.py
    experiment = None

if experiment is not None:
    @experiment("5.9", "Center Loss: LeNet++ 2-D features with and without center loss",
                book=f"acc {BOOK_ACCURACY} with center loss (full MNIST); figs 5-15/5-16")
    def center_loss(ctx):
        import torch
        out_dir = os.path.join(ctx.out_root, ctx.ref)
        gpu = 0 if torch.cuda.is_available() and not ctx.quick else None
        setting = "quick" if ctx.quick else GPU_SETTING if gpu is not None else "full"
        numbers = run(ctx.quick, ctx.data, out_dir, setting, gpu)
        ctx.figures.extend(numbers.pop("figures"))
        ours, data = _describe(numbers, ctx.data, setting, gpu)
        return Result(ours=ours, numbers=numbers, data=data)


if __name__ == "__main__":
    import argparse
    parser = argparse.ArgumentParser(description="book 5.9: LeNet++ with and without center loss")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data", default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--settings", choices=sorted(SETTINGS), default=None,
                        help="widths and schedule (default: full, or quick with --quick)")
    parser.add_argument("--gpu", type=int, default=None, help="train both nets on this CUDA device")
    parser.add_argument("--no-figures", action="store_true", help="leave the plots to --draw")
    parser.add_argument("--draw", metavar="DIR", help="only draw the plots of the run that left DIR")
    args = parser.parse_args()
    if args.draw:
        with open(os.path.join(args.draw, "numbers.json")) as handle:
            print(draw(args.draw, json.load(handle)))
        sys.exit(0)
    import torch
    torch.set_num_threads(int(os.environ.get("BREWNET_BOOK_THREADS", "1")))
    result = run(args.quick, args.data, args.out, args.settings, args.gpu, not args.no_figures)
    print(result)
