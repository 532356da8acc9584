"""Section 10.2: DCGAN with the book's 10.2.3 architecture (keras-dcgan's), trained on brewnet: two prototxt nets,
each with its own solver, alternated by brewnet.adversarial (pycaffe's API: blobs, forward/backward, diffs
moved between the nets, apply_update).

    G: z (100, U(-1, 1)) -> fc 1024, tanh -> fc 128*7*7, BatchNorm, tanh -> x2 upsampling -> 5x5 conv 64, tanh
       -> x2 upsampling -> 5x5 conv 1, tanh                                            (28 x 28 in [-1, 1])
    D: x -> 5x5 conv 64 ("same"), tanh, 2x2 max pool -> 5x5 conv 128 ("valid"), tanh, 2x2 max pool
       -> fc 1024, tanh -> fc 1 -> sigmoid (inside the loss: D's net ends in the logit)

The x2 upsampling (Keras's UpSampling2D, nearest neighbour) is a Deconvolution with fixed weights: kernel 2,
stride 2, one group per channel, every weight 1, lr_mult 0 (each pixel copied into a 2 x 2 block).  Keras's
BatchNormalization is Caffe's BatchNorm + Scale (with bias).  Both nets train with keras-dcgan's optimiser,
SGD with Nesterov momentum 0.9 at lr 0.0005 (Caffe's Nesterov solver), one D step (real and fake batches) per
G step, G's loss the non-saturating -log D(G(z)).

Sizes: on a GPU (`--gpu 0`) the book's widths and batch 128 on every training digit; on the CPU every width is
divided by 4 (G fc 256, 32*7*7, conv 16; D conv 16 and 32, fc 256), batch 64, and an epoch is a pass over the
first 3 200 digits (50 batches), so that the run takes minutes on a shared 2-core machine: the rows say so.
Figures: samples of one fixed noise batch at iteration 0, 400, epoch 10, epoch 20 and the end (10-8 ... 10-12),
the two loss curves (10-7); the quality row classifies 10 000 samples with the demo's LeNet.
"""
import numpy as np
import torch

from brewnet import set_random_seed, viz
from brewnet.adversarial import AdversarialTrainer, DeviceBatches
from brewnet.data.idx_sets import load_idx_set
from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text
from brewnet.tools.eta import EtaProgress

import caffe

from . import ch10_common as common
from .nets import quiet
from .registry import Result, experiment

NZ = 100
SOLVER = 'type: "Nesterov" base_lr: 0.0005 momentum: 0.9 lr_policy: "fixed" display: 0 random_seed: 1701'
SETTINGS = {    # where -> (width factor, batch, epochs, training digits: None for all)
    "cpu": (0.25, 64, 22, 3200),
    "gpu": (1.0, 128, 30, None),
    "quick": (0.125, 16, 2, None),
}
QUICK_ROUNDS_PER_EPOCH = 6      # --quick: a few rounds stand for an epoch
FILLER = 'weight_filler { type: "xavier" } bias_filler { type: "constant" }'


def _layer(name, type_, bottom, top=None, params=""):
    return f'layer {{ name: "{name}" type: "{type_}" bottom: "{bottom}" top: "{top or name}" {params} }}'


def _ip(name, bottom, n):
    return _layer(name, "InnerProduct", bottom, params=f"inner_product_param {{ num_output: {n} {FILLER} }}")


def _conv(name, bottom, n, pad):
    return _layer(name, "Convolution", bottom,
                  params=f"convolution_param {{ num_output: {n} kernel_size: 5 pad: {pad} {FILLER} }}")


def _tanh(name, bottom):
    return _layer(name, "TanH", bottom, bottom)


def upsample(name, bottom, channels):
    """x2 nearest-neighbour upsampling: a Deconvolution whose fixed 2 x 2 kernels of ones copy each pixel."""
    return _layer(name, "Deconvolution", bottom, params=(
        f"param {{ lr_mult: 0 decay_mult: 0 }} convolution_param {{ num_output: {channels} group: {channels} "
        f"kernel_size: 2 stride: 2 bias_term: false weight_filler {{ type: \"constant\" value: 1 }} }}"))


def _input(name, dims):
    shape = " ".join(f"dim: {d}" for d in dims)
    return f'layer {{ name: "{name}" type: "Input" top: "{name}" input_param {{ shape {{ {shape} }} }} }}'


def generator(batch, width=1.0):
    fc, ch, conv = int(1024 * width), int(128 * width), int(64 * width)
    return "\n".join([
        'name: "DCGAN_G" force_backward: true', _input("z", (batch, NZ)),
        _ip("fc1", "z", fc), _tanh("tanh1", "fc1"),
        _ip("fc2", "fc1", ch * 49),
        _layer("bn2", "BatchNorm", "fc2", "fc2", "batch_norm_param { eps: 0.001 }"),
        _layer("scale2", "Scale", "fc2", "fc2", "scale_param { bias_term: true }"), _tanh("tanh2", "fc2"),
        _layer("fc2_4d", "Reshape", "fc2", params=f"reshape_param {{ shape {{ dim: 0 dim: {ch} dim: 7 dim: 7 }} }}"),
        upsample("up1", "fc2_4d", ch), _conv("conv1", "up1", conv, 2), _tanh("tanh3", "conv1"),
        upsample("up2", "conv1", conv), _conv("conv2", "up2", 1, 2), _layer("gen", "TanH", "conv2", "gen")])


def discriminator(batch, width=1.0):
    c1, c2, fc = int(64 * width), int(128 * width), int(1024 * width)
    pool = "pooling_param { pool: MAX kernel_size: 2 stride: 2 }"
    return "\n".join([
        'name: "DCGAN_D" force_backward: true', _input("data", (batch, 1, 28, 28)),
        _conv("conv1", "data", c1, 2), _tanh("tanh1", "conv1"), _layer("pool1", "Pooling", "conv1", params=pool),
        _conv("conv2", "pool1", c2, 0), _tanh("tanh2", "conv2"), _layer("pool2", "Pooling", "conv2", params=pool),
        _ip("fc1", "pool2", fc), _tanh("tanh3", "fc1"), _ip("score", "fc1", 1)])


def solver(net_text):
    param = parse_text(f'{SOLVER}\nnet_param {{ {net_text} }}', caffe_pb2.SolverParameter())
    with quiet():
        return caffe.get_solver(param)


def fixed_noise_samples(gan, z):
    """G's samples for the fixed noise `z` (the figures' batch), leaving the training noise stream alone."""
    noise = gan.noise
    gan.noise = lambda tensor: tensor.copy_(z)
    try:
        return gan.sample()[:, 0]
    finally:
        gan.noise = noise


def sample_many(gan, count):
    out = []
    while sum(len(o) for o in out) < count:
        out.append(gan.sample()[:, 0])
    return np.concatenate(out)[:count]


def snapshots_at(rounds_per_epoch, epochs):
    """Round -> figure name: iteration 0 and 400, epoch 10 and 20, the end (10-8 ... 10-12)."""
    total = rounds_per_epoch * epochs
    marks = {0: "fig10-8_iter0.png", 400: "fig10-9_iter400.png", 10 * rounds_per_epoch: "fig10-10_epoch10.png",
             20 * rounds_per_epoch: "fig10-11_epoch20.png"}
    marks = {r: name for r, name in marks.items() if r < total}
    marks[total] = f"fig10-12_end_epoch{epochs}.png"
    return marks


def train(ctx, width, batch, epochs, images):
    set_random_seed(1701)
    g, d = solver(generator(batch, width)), solver(discriminator(batch, width))
    real = DeviceBatches(images, batch, seed=1701)
    gan = AdversarialTrainer(g, d, real=real)
    rounds_per_epoch = QUICK_ROUNDS_PER_EPOCH if ctx.quick else len(images) // batch
    marks = snapshots_at(rounds_per_epoch, epochs)
    z = torch.empty(batch, NZ, device=gan.z.data.device).uniform_(-1, 1)
    progress = EtaProgress(max(marks), label="10.2 DCGAN", stream=ctx.stream)
    shown = {}
    for done in range(max(marks) + 1):
        if done in marks:
            shown[marks[done]] = fixed_noise_samples(gan, z)
            common.sample_figure(ctx, marks[done], shown[marks[done]][:100], ncols=10 if batch >= 100 else 8)
        if done < max(marks):
            gan.step()
            progress.update(done + 1)
    progress.close()
    return gan, rounds_per_epoch, shown


@experiment("10.2", "DCGAN (keras-dcgan's architecture of 10.2.3) on two Caffe nets",
            book="figures 10-7 (D and G losses) and 10-8 ... 10-12 (samples at iteration 0, 400, epoch 10, 20, "
                 "end): noise, then strokes, then digits; more and more 1s (mode collapse)")
def dcgan(ctx):
    data = load_idx_set(ctx.data)
    where = "quick" if ctx.quick else ("gpu" if ctx.gpu is not None else "cpu")
    width, batch, epochs, digits = SETTINGS[where]
    images = data.train_images[:digits, None].astype(np.float32) / 127.5 - 1.0       # keras-dcgan's scaling
    with common.device(ctx) as device:
        gan, rounds_per_epoch, shown = train(ctx, width, batch, epochs, images)
        count = common.QUICK_SAMPLES if ctx.quick else common.QUALITY_SAMPLES
        samples = sample_many(gan, count)
    d_losses, g_losses = gan.losses()
    # keras-dcgan's D loss is the mean binary cross-entropy over the real and fake halves of one batch.
    viz.line_plot(ctx.figure("fig10-7_losses.png"), {"D loss": d_losses / 2, "G loss": g_losses},
                  xlabel="G iteration", ylabel="binary cross-entropy", title="DCGAN losses")
    clf = common.classifier(ctx)
    size = "the book's widths" if width == 1 else f"widths x{width:g} of the book's"
    report, quality = common.quality(ctx, clf, "DCGAN", "10.2", samples, note=(
        f"{size}, batch {batch}, {epochs} epochs on {device}; {common.classifier_note(clf)}"))
    tail = max(len(d_losses) // 10, 1)
    numbers = {"rounds": len(g_losses), "rounds_per_epoch": rounds_per_epoch, "epochs": epochs,
               "d_loss_end": float(d_losses[-tail:].mean() / 2), "g_loss_end": float(g_losses[-tail:].mean()),
               "d_loss_start": float(d_losses[0] / 2), "g_loss_start": float(g_losses[0]),
               "score": report.score, "histogram": report.histogram.tolist(), "figures": list(shown),
               "sample_range": (float(samples.min()), float(samples.max()))}
    ones = report.histogram[1] / report.n
    collapse = "shows" if ones > 0.2 else "does not show"
    shares = " ".join(f"{d}:{100 * c / report.n:.0f}%" for d, c in enumerate(report.histogram))
    ours = (f"{len(g_losses)} G steps ({epochs} epochs of {rounds_per_epoch} batches of {batch}, {size}, "
            f"{device}): D loss {numbers['d_loss_start']:.3f} -> {numbers['d_loss_end']:.3f}, G loss "
            f"{numbers['g_loss_start']:.3f} -> {numbers['g_loss_end']:.3f} (mean of the last tenth); "
            f"{report.n} samples score {report.score:.2f}, predicted digits {shares}. Figures "
            f"{', '.join(shown)}, fig10-7_losses.png. Differences: the book trains keras-dcgan's full widths on "
            f"60 000 digits; the drift towards 1s it describes {collapse} here ({ones:.0%} of the samples read as 1)")
    return Result(ours=ours, numbers=numbers, quality=quality,
                  data=f"{'bundled digits' if not ctx.data else ctx.data} ({len(images)} train)")
