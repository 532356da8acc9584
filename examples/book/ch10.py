"""Chapter 10.1: the variational autoencoder, as the book trains it: cdoersch/vae_tutorial's mnist_vae.prototxt
with its Adam solver (examples/book/vae_tutorial/, vendored unchanged under its MIT license), driven with
pycaffe's API the way the tutorial's mnist_vae.py drives it.  Only the Data layer's LMDB path is replaced.

- Figure 10-2: 100 digits decoded from z ~ N(0, I) by the prototxt's own TEST phase (DummyData mu = 0, sd = 1,
  Gaussian noise), the 30-D latent model.
- Figure 10-4: the same net with a 2-D latent space (the six "30 # num z's" sizes set to 2), decoding an even
  grid of the latent plane: z = Phi^-1(q) for q evenly spaced in (0, 1) on both axes, so the grid covers the
  prior N(0, I) by equal probability steps.
- The book's KL term per element (10.1.5), KL(N(mu, sd^2) || N(0, 1)) = -1/2 (1 + log sd^2 - mu^2 - sd^2),
  computed in float64 from the net's mu and logsd blobs against the net's own kldiv and klloss blobs.
- The quality table: 10 000 decoded samples (and the bundled real test digits, for reference) classified by
  the demo's LeNet (examples/book/ch10_common.py).

The tutorial trains 60 000 iterations of 100 on full MNIST; the CPU run here trains VAE_ITERATIONS on the
8 000 bundled digits (and says so in its row).
"""
import os

import numpy as np
import torch

import caffe
from brewnet import set_random_seed, viz
from brewnet.data.idx_sets import load_idx_set
from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text
from brewnet.tools.eta import EtaProgress

from . import ch10_common as common
from .nets import quiet
from .registry import Result, experiment

VAE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vae_tutorial")
LMDB_SOURCE = "$CAFFE_PATH/examples/mnist/mnist_train_lmdb"
LATENT_SIZE = "30 # num z's"
VAE_ITERATIONS = {"30-D": 1500, "2-D": 1500}
QUICK_ITERATIONS = 20
GRID = 20                       # figure 10-4: GRID x GRID decoded points of the 2-D latent plane
QUICK_GRID = 6


def vae_net_text(lmdb, latent=30):
    """mnist_vae.prototxt with the Data layer reading `lmdb` (and `latent` z's instead of 30)."""
    with open(os.path.join(VAE_DIR, "mnist_vae.prototxt"), encoding="utf-8") as handle:
        text = handle.read()
    if text.count(LMDB_SOURCE) != 1 or text.count(LATENT_SIZE) != 6:
        raise ValueError(f"{VAE_DIR}/mnist_vae.prototxt is not cdoersch's file: its source or z sizes moved")
    text = text.replace(LMDB_SOURCE, lmdb)
    return text.replace(LATENT_SIZE, f"{latent} # num z's") if latent != 30 else text


def vae_solver(net_text, iterations):
    """mnist_vae_solver_adam.prototxt, the net given inline, `iterations` long, no snapshots or display."""
    with open(os.path.join(VAE_DIR, "mnist_vae_solver_adam.prototxt"), encoding="utf-8") as handle:
        param = parse_text(handle.read(), caffe_pb2.SolverParameter())
    param.ClearField("net")
    param.net_param.CopyFrom(parse_text(net_text, caffe_pb2.NetParameter()))
    param.max_iter, param.snapshot, param.display = iterations, 0, 0
    with quiet():
        return caffe.get_solver(param)


def train_lmdb(ctx):
    """The training digits as an LMDB of Datum records (create_mnist), kept under the run's output folder."""
    from examples.mnist import create_mnist
    name = os.path.basename(os.path.normpath(ctx.data)) if ctx.data else "mnist10k"
    folder = os.path.join(ctx.out_root, "10.1", f"{name}_lmdb")
    args = ["--out", folder] + (["--data", ctx.data] if ctx.data else [])
    with quiet():
        if create_mnist.main(args):
            raise RuntimeError(f"create_mnist {' '.join(args)} failed")
    return os.path.join(folder, "mnist_train_lmdb")


def train_vae(ctx, lmdb, latent, iterations, label):
    """Train; returns the solver and the per-iteration cross-entropy and KL losses."""
    set_random_seed(1701)
    solver = vae_solver(vae_net_text(lmdb, latent), iterations)
    blobs = solver.net.blobs
    ce, kl = [], []
    progress = EtaProgress(iterations, label=f"10.1 VAE {label}", stream=ctx.stream)
    for it in range(iterations):
        with quiet():
            solver.step(1)
        ce.append(float(blobs["cross_entropy_loss"].data))
        kl.append(float(blobs["klloss"].data))
        progress.update(it + 1)
    progress.close()
    return solver, np.array(ce), np.array(kl)


def decoder(solver, lmdb, latent, folder):
    """The prototxt's TEST phase with the trained weights, loaded from a caffemodel as mnist_vae.py does."""
    weights = os.path.join(folder, f"mnist_vae_{latent}d.caffemodel")
    solver.net.save(weights)
    with quiet():
        return caffe.Net(parse_text(vae_net_text(lmdb, latent), caffe_pb2.NetParameter()), weights, caffe.TEST)


def decode_prior(net, count):
    """`count` digits decoded from z ~ N(0, I) (the TEST phase's DummyData draws new noise every forward)."""
    out = []
    while sum(len(o) for o in out) < count:
        out.append(net.forward()["decode1neuron"].copy())
    return np.concatenate(out)[:count].reshape(-1, 28, 28)


def decode_grid(net, n=GRID):
    """Figure 10-4's points: z = Phi^-1(q) for q evenly spaced in (0, 1), decoded batch by batch from 'sample'."""
    q = torch.linspace(0.5 / n, 1 - 0.5 / n, n, dtype=torch.float64)
    axis = torch.special.ndtri(q).numpy()
    z = np.array([[x, y] for y in axis[::-1] for x in axis], dtype=np.float32)
    batch, out = net.blobs["sample"].data.shape[0], []
    for start in range(0, len(z), batch):
        chunk = z[start:start + batch]
        net.blobs["sample"].data[...] = 0
        net.blobs["sample"].data[:len(chunk)] = chunk
        out.append(net.forward(start="decode4")["decode1neuron"][:len(chunk)].copy())
    return np.concatenate(out).reshape(-1, 28, 28), axis


def book_kl(net):
    """10.1.5's KL per element from the net's mu and logsd (float64), against the net's kldiv and klloss."""
    net.forward()
    mu = net.blobs["mu"].data.astype(np.float64)
    logsd = net.blobs["logsd"].data.astype(np.float64)
    per_element = -0.5 * (1 + 2 * logsd - mu ** 2 - np.exp(2 * logsd))
    kldiv = net.blobs["kldiv"].data.astype(np.float64)
    klloss = float(net.blobs["klloss"].data)
    return {"book_sum": float(per_element.sum()), "klloss": klloss,
            "max_abs_per_element": float(np.abs(per_element - kldiv).max()),
            "rel_sum": abs(per_element.sum() - klloss) / abs(klloss)}


def run_model(ctx, label, latent, lmdb, clf, device):
    """Train one VAE, draw its figure, measure its samples: (numbers, curves, row text, quality rows)."""
    iterations = QUICK_ITERATIONS if ctx.quick else VAE_ITERATIONS[label]
    solver, ce, kl = train_vae(ctx, lmdb, latent, iterations, label)
    kl_check = book_kl(solver.net)
    net = decoder(solver, lmdb, latent, os.path.dirname(ctx.figure("loss.png")))
    ctx.figures.pop()                       # only the folder: loss.png is drawn at the end
    samples = decode_prior(net, common.QUICK_SAMPLES if ctx.quick else common.QUALITY_SAMPLES)
    report, quality = common.quality(ctx, clf, f"VAE ({label} latent)", "10.1", samples, value_range=(0, 1),
                                     note=f"{iterations} iterations of 100 on {device}, "
                                          f"{common.classifier_note(clf)}")
    tail = 50 if len(ce) >= 100 else max(len(ce) // 4, 1)
    numbers = {"iterations": iterations, "loss_start": float(ce[0] + 0.01 * kl[0]),
               "loss_end": float(np.mean(ce[-tail:] + 0.01 * kl[-tail:])), "kl": kl_check,
               "score": report.score, "histogram": report.histogram.tolist(),
               "sample_range": (float(samples.min()), float(samples.max()))}
    if latent == 30:
        common.sample_figure(ctx, "fig10-2_samples.png", samples[:100])
    else:
        n = QUICK_GRID if ctx.quick else GRID
        grid, numbers["grid_axis"] = decode_grid(net, n)
        common.sample_figure(ctx, "fig10-4_latent_grid.png", grid, ncols=n)
    solver.net.close()
    text = (f"{label}: loss (cross-entropy + KL/100) {numbers['loss_start']:.1f} -> {numbers['loss_end']:.1f} in "
            f"{iterations} iterations; KL per element by the book's formula = kldiv to "
            f"{kl_check['max_abs_per_element']:.1e}, its sum = klloss {kl_check['klloss']:.2f} to "
            f"{kl_check['rel_sum']:.1e} (relative); samples score {report.score:.2f}")
    curves = {f"{label} cross-entropy": ce, f"{label} KL x 0.01": kl * 0.01}
    return numbers, curves, text, quality


@experiment("10.1", "VAE: cdoersch/vae_tutorial's mnist_vae.prototxt, samples and the 2-D latent grid",
            book="figures 10-2 (100 generated digits) and 10-4 (2-D latent grid); KL per element (10.1.5); "
                 "60 000 iterations on full MNIST")
def vae(ctx):
    data = load_idx_set(ctx.data)
    lmdb = train_lmdb(ctx)
    clf = common.classifier(ctx)
    numbers, curves, parts, quality = {}, {}, [], {}
    with common.device(ctx) as device:
        for label, latent in (("30-D", 30), ("2-D", 2)):
            numbers[label], model_curves, text, rows = run_model(ctx, label, latent, lmdb, clf, device)
            curves.update(model_curves)
            parts.append(text)
            quality.update(rows)
    count = common.QUICK_SAMPLES if ctx.quick else common.QUALITY_SAMPLES
    real, rows = common.quality(ctx, clf, "real digits", "10.1", data.test_images[:count] / 255.0,
                                value_range=(0, 1), note=f"bundled test digits, {common.classifier_note(clf)}")
    quality.update(rows)
    numbers["real_score"] = real.score
    viz.line_plot(ctx.figure("loss.png"), curves, xlabel="iteration", ylabel="loss per digit",
                  title="VAE training losses", logy=True)
    ours = ("; ".join(parts) + f". Figures fig10-2_samples.png, fig10-4_latent_grid.png ({GRID}x{GRID} grid, "
            f"z = Phi^-1 of evenly spaced quantiles), loss.png. Differences: the tutorial trains 60 000 iterations "
            f"on 60 000 digits, this row {VAE_ITERATIONS['30-D']} on {len(data.train_images)} (CPU time)")
    return Result(ours=ours, numbers=numbers, quality=quality,
                  data=f"{'bundled digits' if not ctx.data else ctx.data} ({len(data.train_images)} train)")
