"""What chapter 10's generative experiments share: the device (--gpu), the sample-quality measure and its row
in RESULTS.md's quality table, and digit mosaics for the sample figures."""
import contextlib
import os

import numpy as np

from brewnet.tools import sample_quality

from . import results

QUALITY_SAMPLES = 10000         # the 10 000 generated digits per model
QUICK_SAMPLES = 200
QUICK_CLASSIFIER_ITERATIONS = 50


@contextlib.contextmanager
def device(ctx):
    """GPU mode on ctx.gpu for the block (nets and tensors made inside live there); the CPU otherwise."""
    if ctx.gpu is None:
        yield "CPU"
        return
    from brewnet import set_device, set_mode_cpu, set_mode_gpu
    set_device(ctx.gpu)
    set_mode_gpu()
    try:
        yield f"GPU {ctx.gpu}"
    finally:
        set_mode_cpu()


def classifier(ctx):
    """The demo's LeNet (or one trained and cached when its weights are absent; quick: a short training under
    the run's output folder, so tests never share a cache with full runs)."""
    if ctx.quick:
        return sample_quality.DigitClassifier(train_iterations=QUICK_CLASSIFIER_ITERATIONS,
                                              cache_dir=os.path.join(ctx.out_root, "sample_quality"))
    return sample_quality.DigitClassifier()


def classifier_note(clf):
    """Which LeNet classified, and how well it reads the bundled test digits."""
    accuracy = clf.trained_accuracy if clf.trained_accuracy is not None else clf.accuracy()
    return f"classifier {os.path.basename(clf.weights)} (test accuracy {accuracy:.3f})"


def quality(ctx, clf, model, ref, images, value_range=(-1, 1), codes=None, note=""):
    """Measure `images` and return (report, {model: quality-table row})."""
    report = sample_quality.measure(images, clf, value_range=value_range, codes=codes)
    return report, {model: results.quality_row(model, ref, report, note)}


def mosaic(images, ncols=10, pad=1):
    """N x 28 x 28 (or N x 1 x 28 x 28) digits tiled into one image, rows of `ncols`, a dark gap between."""
    images = np.asarray(images, dtype=np.float64).reshape(len(images), 28, 28)
    nrows = -(-len(images) // ncols)
    out = np.full((nrows * (28 + pad) + pad, ncols * (28 + pad) + pad), images.min())
    for i, img in enumerate(images):
        r, c = divmod(i, ncols)
        out[pad + r * (28 + pad):pad + r * (28 + pad) + 28, pad + c * (28 + pad):pad + c * (28 + pad) + 28] = img
    return out


def sample_figure(ctx, name, images, ncols=10, zoom=2):
    """A mosaic of `images` written pixel for pixel (each pixel `zoom` x `zoom`) as results/book/<ref>/<name>."""
    import matplotlib.image
    path = ctx.figure(name)
    tiled = np.kron(mosaic(images, ncols), np.ones((zoom, zoom)))
    matplotlib.image.imsave(path, tiled, cmap="gray")
    return path
