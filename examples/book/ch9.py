"""Chapter 9: semantic segmentation.  An FCN (ch9_fcn.py) trained on a VOC-format folder, then the fully
connected CRF as post-processing (mean field on permutohedral lattices, layers/dense_crf.py), then CRF-as-RNN:
the FCN with crfasrnn's MultiStageMeanfield on top, fine-tuned end to end.  Scored as fcn.berkeleyvision.org's
score.py scores VOC: a confusion matrix over the valid pixels (label 255 ignored), pixel accuracy and mean IU.

PASCAL VOC cannot be fetched here: the folder is brewnet's VOC digits (brewnet.data.voc_digits), written once
under results/book/9/.  The dense CRF's five parameters are chosen on training images the FCN never saw
(`TUNE` of them), never on val.
"""
import itertools
import os
import tempfile
import time

import numpy as np
import torch

from brewnet import viz
from brewnet.data import voc_digits
from brewnet.layers.dense_crf import dense_crf
from brewnet.tools.eta import EtaProgress
from examples.book import ch9_fcn
from examples.book.nets import quiet
from examples.book.registry import Result, experiment

FULL = dict(train=600, tune=40, val=150, fcn_iters=3000, crfrnn_iters=300)
GPU = dict(train=1200, tune=60, val=300, fcn_iters=8000, crfrnn_iters=1000)     # with --gpu N
QUICK = dict(train=10, tune=3, val=4, fcn_iters=30, crfrnn_iters=3)
CRF_ITERATIONS = 5
# The grid the dense CRF's parameters are chosen from: bilateral weight, its position and colour widths (colour
# in 0-255 units), the spatial weight and width.  Krähenbühl's VOC values (w 10, 80 / 13, w 3, 3) are at a
# scale of 500-pixel images; the digits are 64-128 pixels.
GRID = dict(w_bilateral=(3, 5, 10), theta_alpha=(5, 10, 20), theta_beta=(10, 30), w_spatial=(3,), theta_gamma=(1, 3))
GPU_GRID = dict(w_bilateral=(5, 10, 20), theta_alpha=(10, 20, 40), theta_beta=(5, 10, 20), w_spatial=(3,),
                theta_gamma=(1, 3))
QUICK_GRID = dict(w_bilateral=(5,), theta_alpha=(10,), theta_beta=(20, 40), w_spatial=(3,), theta_gamma=(3,))


def confusion(truth, prediction, classes=voc_digits.NUM_CLASSES):
    """score.py's fast_hist: counts[t, p] over the pixels whose truth is a class (255 left out)."""
    valid = truth < classes
    return np.bincount(classes * truth[valid].astype(int) + prediction[valid], minlength=classes ** 2
                       ).reshape(classes, classes)


def measures(hist):
    """Pixel accuracy and mean IU (over the classes present in truth or prediction) of a confusion matrix."""
    union = hist.sum(0) + hist.sum(1) - np.diag(hist)
    present = union > 0
    return {"pixel_accuracy": float(np.diag(hist).sum() / hist.sum()),
            "mean_iu": float(np.mean(np.diag(hist)[present] / union[present]))}


def score_split(predict, pairs):
    hist = sum(confusion(label, predict(image)) for image, label in pairs)
    return measures(hist)


def crf_labels(fcn_scores, image, params, device="cpu"):
    """Dense CRF post-processing of one image: the FCN's scores as the unary (crfasrnn's convention)."""
    q = dense_crf(torch.from_numpy(fcn_scores).to(device),
                  torch.from_numpy(image.transpose(2, 0, 1).astype(np.float32)).to(device),
                  params["theta_alpha"], params["theta_beta"], params["theta_gamma"], params["w_bilateral"],
                  params["w_spatial"], CRF_ITERATIONS, unary_kind="scores")
    return q.argmax(0).cpu().numpy()


def choose_crf(scores_and_pairs, grid, say, device="cpu"):
    """The grid point with the highest mean IU on the tuning images (their FCN scores computed once)."""
    best, best_iu = None, -1.0
    for values in itertools.product(*grid.values()):
        params = dict(zip(grid, values))
        hist = sum(confusion(label, crf_labels(s, image, params, device)) for s, (image, label) in scores_and_pairs)
        iu = measures(hist)["mean_iu"]
        if iu > best_iu:
            best, best_iu = params, iu
    say(f"   dense CRF chosen on the tuning images: {best} (mean IU {best_iu:.4f})")
    return best, best_iu


def voc_folder(ctx, sizes):
    kind = "quick" if ctx.quick else f"{sizes['train']}+{sizes['tune']}+{sizes['val']}"
    folder = os.path.join(ctx.out_root, "9", kind, "voc_digits")
    listing = os.path.join(folder, "ImageSets", "Segmentation", "val.txt")
    if not os.path.exists(listing):
        voc_digits.make_voc_digits(folder, train=sizes["train"] + sizes["tune"], val=sizes["val"], seed=0,
                                   idx_folder=ctx.data)
    ids = {split: open(os.path.join(folder, "ImageSets", "Segmentation", f"{split}.txt")).read().split()
           for split in ("train", "val")}
    pairs = {split: [voc_digits.load_voc_pair(folder, i) for i in ids[split]] for split in ids}
    return folder, pairs["train"][:sizes["train"]], pairs["train"][sizes["train"]:], pairs["val"]


@experiment("9", "FCN, + dense CRF, + CRF-as-RNN: mean IU on VOC-format digits",
            book="FCN, then the fully connected CRF sharpening its blobs along image edges (figure: image, "
                 "ground truth, FCN, +CRF); the papers, VOC 2012 test: FCN-8s 62.2, CRF-as-RNN 72.0 mean IU")
def segmentation(ctx):
    import caffe

    if ctx.gpu is None:
        caffe.set_mode_cpu()
        device = "cpu"
    else:
        caffe.set_device(ctx.gpu)
        caffe.set_mode_gpu()
        device = f"cuda:{ctx.gpu}"
    sizes, grid = ((QUICK, QUICK_GRID) if ctx.quick else (FULL, GRID) if ctx.gpu is None else (GPU, GPU_GRID))
    folder, train, tune, val = voc_folder(ctx, sizes)
    work = tempfile.mkdtemp(prefix="brewnet_ch9_")
    torch.manual_seed(0)
    with quiet():
        solver = caffe.get_solver(ch9_fcn.write_solver(work, ch9_fcn.fcn_spec(), 1e-3, "fcn"))
    test_net, weights, fcn_losses, fcn_seconds = _trained(solver, train, sizes["fcn_iters"], work, "fcn", "FCN")
    fcn_scores = {id(image): ch9_fcn.scores(test_net, image) for image, _ in tune + val}

    fcn = score_split(lambda image: fcn_scores[id(image)].argmax(0), val)
    ctx.say(f"   FCN on val: pixel accuracy {fcn['pixel_accuracy']:.4f}, mean IU {fcn['mean_iu']:.4f}")
    params, tune_iu = choose_crf([(fcn_scores[id(image)], (image, label)) for image, label in tune], grid, ctx.say,
                                  device)
    tune_fcn = score_split(lambda image: fcn_scores[id(image)].argmax(0), tune)["mean_iu"]
    crf = score_split(lambda image: crf_labels(fcn_scores[id(image)], image, params, device), val)
    ctx.say(f"   FCN + dense CRF on val: pixel accuracy {crf['pixel_accuracy']:.4f}, mean IU {crf['mean_iu']:.4f}")

    crf_message = dict(num_iterations=CRF_ITERATIONS, theta_alpha=params["theta_alpha"],
                       theta_beta=params["theta_beta"], theta_gamma=params["theta_gamma"],
                       spatial_filter_weight=params["w_spatial"], bilateral_filter_weight=params["w_bilateral"])
    with quiet():
        rnn_solver = caffe.get_solver(ch9_fcn.write_solver(
            work, ch9_fcn.fcn_spec(crf=dict(crf_message, lr_mult=100)), 1e-4, "crfrnn"))
        rnn_solver.net.copy_from(weights)
    rnn_net, _, rnn_losses, rnn_seconds = _trained(rnn_solver, train, sizes["crfrnn_iters"], work, "crfrnn",
                                                   "CRF-as-RNN", seed=1)
    rnn_scores = {id(image): ch9_fcn.scores(rnn_net, image, blob="crf") for image, _ in val}
    rnn = score_split(lambda image: rnn_scores[id(image)].argmax(0), val)
    ctx.say(f"   CRF-as-RNN on val: pixel accuracy {rnn['pixel_accuracy']:.4f}, mean IU {rnn['mean_iu']:.4f}")
    learned = [b.data[0, 0].diagonal().mean() for b in rnn_net.params["crf"]]

    _figures(ctx, val[:4], fcn_scores, rnn_scores, params, fcn_losses, rnn_losses, device)
    numbers = {"fcn": fcn, "crf": crf, "crfrnn": rnn, "crf_params": params, "tune_fcn_iu": tune_fcn,
               "tune_crf_iu": tune_iu, "fcn_loss_first": float(np.mean(fcn_losses[:20])),
               "fcn_loss_last": float(np.mean(fcn_losses[-100:])), "learned_diagonals": [float(v) for v in learned]}
    ours = (f"val mean IU: FCN {fcn['mean_iu']:.4f} (pixel accuracy {fcn['pixel_accuracy']:.4f}); + dense CRF "
            f"{crf['mean_iu']:.4f} ({crf['pixel_accuracy']:.4f}); CRF-as-RNN fine-tuned {rnn['mean_iu']:.4f} "
            f"({rnn['pixel_accuracy']:.4f}). FCN: FCN-8s's skips one level down (scores at 1/16 fused with pool3 "
            f"and pool2), 16-96 channels, {sizes['fcn_iters']} Adam steps of one image ({fcn_seconds:.0f} s); "
            f"dense CRF: {CRF_ITERATIONS} mean-field iterations, parameters chosen on {sizes['tune']} held-out "
            f"training images ({params}; there mean IU {tune_fcn:.4f} -> {tune_iu:.4f}); CRF-as-RNN: the FCN + "
            f"MultiStageMeanfield with those parameters, {sizes['crfrnn_iters']} steps end to end "
            f"({rnn_seconds:.0f} s; learned diagonals spatial {learned[0]:.2f}, bilateral {learned[1]:.2f}, "
            f"compatibility {learned[2]:.2f}). Figure segmentations.png: image / truth / FCN / +CRF / CRF-as-RNN")
    data = (f"VOC-format digits (brewnet.data.voc_digits, seed 0, from the bundled MNIST digits): "
            f"{sizes['train']} train, {sizes['tune']} tune, {sizes['val']} val images of 64-128 px, 11 classes")
    return Result(ours=ours, numbers=numbers, data=data)


def _trained(solver, pairs, iterations, folder, name, label, seed=0):
    """Train `iterations` steps with a progress line; (the TEST net of the saved weights, their path, the
    losses, the seconds)."""
    import caffe

    start = time.perf_counter()
    progress = EtaProgress(iterations, label)
    with quiet():
        losses = ch9_fcn.train(solver, pairs, iterations, seed=seed, on_step=lambda i, _: progress.update(i))
    progress.close()
    seconds = time.perf_counter() - start
    weights = os.path.join(folder, f"{name}.caffemodel")
    solver.net.save(weights)
    with quiet():
        return caffe.Net(os.path.join(folder, f"{name}.prototxt"), weights, caffe.TEST), weights, losses, seconds


def _figures(ctx, shown, fcn_scores, rnn_scores, params, fcn_losses, rnn_losses, device):
    """Keep what the figures show in panels.npz beside them, then draw them (a machine without matplotlib, as
    the lent GPU machines are, leaves the drawing to `python -m examples.book.ch9 --draw DIR`)."""
    folder = os.path.join(ctx.out_root, ctx.ref or "9")
    os.makedirs(folder, exist_ok=True)
    palette = np.array(voc_digits.voc_palette(), dtype=np.uint8).reshape(-1, 3)
    panels = []
    for image, label in shown:
        s = fcn_scores[id(image)]
        maps = [label, s.argmax(0), crf_labels(s, image, params, device), rnn_scores[id(image)].argmax(0)]
        panels += [_pad(image)] + [_pad(palette[m]) for m in maps]
    np.savez(os.path.join(folder, "panels.npz"), panels=np.stack(panels),
             fcn_losses=np.asarray(fcn_losses), rnn_losses=np.asarray(rnn_losses))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        ctx.say(f"   no matplotlib here: figures left to python -m examples.book.ch9 --draw {folder}")
        return
    ctx.figures.extend(draw(folder))


def draw(folder):
    """segmentations.png (image / truth / FCN / +CRF / CRF-as-RNN per row, VOC's colours) and loss.png from
    the panels.npz a run left in `folder`; returns the two paths."""
    saved = np.load(os.path.join(folder, "panels.npz"))
    pictures = saved["panels"]
    titles = ["image", "truth", "FCN", "+CRF", "CRF-as-RNN"] * (len(pictures) // 5)
    paths = [os.path.join(folder, "segmentations.png"), os.path.join(folder, "loss.png")]
    viz.image_grid(paths[0], pictures.astype(np.float64) / 255.0, ncols=5, titles=titles,
                   normalize=False)
    viz.line_plot(paths[1], {"FCN": _smooth(saved["fcn_losses"]),
                             "CRF-as-RNN fine-tuning": _smooth(saved["rnn_losses"])},
                  xlabel="iteration", ylabel="loss (smoothed over 50)")
    return paths


def _pad(picture, size=128):
    """An H x W x 3 picture in the top-left corner of a size x size canvas."""
    out = np.zeros((size, size, 3), dtype=np.uint8)
    out[:picture.shape[0], :picture.shape[1]] = picture
    return out


def _smooth(values, window=50):
    values = np.asarray(values, dtype=np.float64)
    return np.convolve(values, np.ones(window) / window, mode="valid") if len(values) > window else values


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="draw chapter 9's figures from a run's panels.npz")
    parser.add_argument("--draw", metavar="DIR", required=True, help="the folder a run left panels.npz in")
    for path in draw(parser.parse_args().draw):
        print(path)
