"""Section 10.3: InfoGAN on brewnet, with pycaffe's API through brewnet.adversarial.

G's input is noise z (32 values, U(-1, 1)), a 10-way categorical code c1 (one-hot) and two continuous codes
c2, c3 (U(-1, 1)).  Q, a head on D's trunk (examples/book/ch10_gan_nets.py: fc 10 logits and fc 2 means
beside D's score), estimates the codes from a sample.  The mutual-information term of 10.3.2 is its lower bound

    I(c; G(z, c)) >= E[log Q(c | G(z, c))] + H(c) = L_I,

with Q(c1 | x) the softmax of the logits and Q(c2, c3 | x) Gaussians of unit variance around the means.  D
and Q minimise the GAN loss - lambda L_I, G minimises its non-saturating loss - lambda L_I (lambda 1): the
loss below writes -dL_I at Q's outputs for G's samples, in the D step (Q's and D's trunk weights) and in the G
step (through D, whose parameters stay untouched, into G).  L_I's categorical part, ln 10 - cross-entropy,
is at most ln 10 = 2.303 nats.

Figures: c1 swept over its ten values (rows: noise), the book's 10-14; each continuous code swept over
[-2, 2] (rows: c1), 10-15.  The quality row classifies 10 000 samples with the demo's LeNet and finds the best
one-to-one map from c1 to the predicted digit (its accuracy: how well c1 alone chose the digit), and measures
how each continuous code moves two properties of the sample: slant (the ink's x-y covariance over its y
variance) and thickness (the share of inked pixels).

    python -m examples.book 10.3            # on the CPU (--gpu 0 on a GPU)
"""
import math

import numpy as np
import torch

from brewnet import set_random_seed, viz
from brewnet.adversarial import AdversarialTrainer, DeviceBatches, NonSaturatingLoss
from brewnet.tools.eta import EtaProgress

from . import ch10_gan_nets as nets
from .nets import solver_from_text
from . import ch10_common as common
from .registry import Result, experiment

NOISE, CLASSES, CONTINUOUS = 32, 10, 2
NZ = NOISE + CLASSES + CONTINUOUS

FULL = dict(batch=64, iterations=2000, samples=common.QUALITY_SAMPLES, g_lr=1e-3, d_lr=2e-4)
QUICK = dict(batch=16, iterations=4, samples=common.QUICK_SAMPLES, g_lr=1e-3, d_lr=2e-4)


def g_input(noise, codes, continuous):
    """G's input rows: [noise | one-hot(codes) | continuous]."""
    return np.concatenate([noise, np.eye(CLASSES)[codes], continuous], axis=1)


class InfoGANLoss(NonSaturatingLoss):
    """The non-saturating GAN loss at D's score plus -lambda L_I at Q's outputs for G's samples.  It is also
    the trainer's noise: it draws the codes, so it knows them when D and G see the samples."""

    score = "score"

    def __init__(self, weight=1.0):
        self.weight = weight
        self.codes = self.continuous = None
        self.cross_entropy, self.squared = [], []      # per G step, 0-d device tensors

    def __call__(self, z):
        """Fill G's input tensor: noise and continuous codes U(-1, 1), a uniform categorical code."""
        n = z.shape[0]
        z.uniform_(-1.0, 1.0)
        self.codes = torch.randint(CLASSES, (n,), device=z.device)
        self.continuous = z[:, NOISE + CLASSES:].clone()
        z[:, NOISE:NOISE + CLASSES] = torch.nn.functional.one_hot(self.codes, CLASSES).to(z.dtype)

    def _information(self, outputs):
        """-lambda L_I (up to the constants H(c) and the Gaussians' normaliser): the diffs at q_cat and q_cont,
        and (cross-entropy, half squared error) as 0-d tensors."""
        logits, means = outputs["q_cat"], outputs["q_cont"]
        n = logits.data.shape[0]
        p = torch.softmax(logits.data.reshape(n, CLASSES), dim=1)
        target = torch.nn.functional.one_hot(self.codes, CLASSES).to(p.dtype)
        logits.store_diff((self.weight * (p - target) / n).view(logits.data.shape))
        error = means.data.reshape(n, CONTINUOUS) - self.continuous
        means.store_diff((self.weight * error / n).view(means.data.shape))
        cross_entropy = -(target * torch.log_softmax(logits.data.reshape(n, CLASSES), dim=1)).sum(1).mean()
        return cross_entropy, 0.5 * (error * error).sum(1).mean()

    def discriminator(self, outputs, real):
        loss = super().discriminator(outputs, real)
        if real:                                 # Q learns the codes of G's samples only
            return loss
        cross_entropy, squared = self._information(outputs)
        return loss + self.weight * (cross_entropy + squared)

    def generator(self, outputs):
        loss = super().generator(outputs)
        cross_entropy, squared = self._information(outputs)
        self.cross_entropy.append(cross_entropy)
        self.squared.append(squared)
        return loss + self.weight * (cross_entropy + squared)


def train(ctx, images, settings):
    set_random_seed(1701)
    batch = settings["batch"]
    g = solver_from_text(nets.generator(batch, NZ), nets.solver_text("Adam", settings["g_lr"]))
    d = solver_from_text(nets.discriminator(batch, q_head=True), nets.solver_text("Adam", settings["d_lr"]))
    loss = InfoGANLoss()
    gan = AdversarialTrainer(g, d, real=DeviceBatches(images, batch, seed=1), k=1, loss=loss, noise=loss)
    progress = EtaProgress(settings["iterations"], label="10.3 InfoGAN", stream=ctx.stream)
    for it in range(settings["iterations"]):
        gan.step()
        progress.update(it + 1)
    progress.close()
    return gan, loss, nets.Sampler(gan, NZ)


def categorical_sweep(sampler, rows=10, seed=3):
    """Figure 10-14's grid: row r is one noise vector, column j has c1 = j; continuous codes 0."""
    noise = sampler.noise(rows, seed)[:, :NOISE]
    codes = np.tile(np.arange(CLASSES), rows)
    z = g_input(np.repeat(noise, CLASSES, axis=0), codes, np.zeros((rows * CLASSES, CONTINUOUS)))
    return sampler(z)


def continuous_sweep(sampler, which, values, seed=5):
    """Figure 10-15's grid: row r has c1 = r and one noise vector, column j sets continuous code `which` to
    values[j] (the other 0)."""
    noise = np.repeat(sampler.noise(1, seed)[:, :NOISE], CLASSES * len(values), axis=0)
    codes = np.repeat(np.arange(CLASSES), len(values))
    continuous = np.zeros((len(codes), CONTINUOUS))
    continuous[:, which] = np.tile(values, CLASSES)
    return sampler(g_input(noise, codes, continuous))


def slant_and_thickness(images):
    """Per image in [-1, 1]: slant = cov(x, y) / var(y) of the ink (positive: the top leans right) and
    thickness = the share of pixels above 0."""
    ink = np.clip((images + 1) / 2, 0, None)
    ys, xs = np.mgrid[0:images.shape[1], 0:images.shape[2]]
    ys = ys[::-1]                                   # y up
    total = ink.sum(axis=(1, 2)) + 1e-9
    mx = (ink * xs).sum(axis=(1, 2)) / total
    my = (ink * ys).sum(axis=(1, 2)) / total
    cov = (ink * (xs - mx[:, None, None]) * (ys - my[:, None, None])).sum(axis=(1, 2)) / total
    var = (ink * (ys - my[:, None, None]) ** 2).sum(axis=(1, 2)) / total
    return cov / (var + 1e-9), (images > 0).mean(axis=(1, 2))


def code_effects(sampler, count, seed=9):
    """Correlation of each continuous code with slant and thickness over `count` random samples."""
    rng = np.random.RandomState(seed)
    continuous = rng.uniform(-1, 1, size=(count, CONTINUOUS))
    z = g_input(rng.uniform(-1, 1, size=(count, NOISE)), rng.randint(CLASSES, size=count), continuous)
    slant, thickness = slant_and_thickness(sampler(z))
    return {f"c{2 + j}": {"slant": float(np.corrcoef(continuous[:, j], slant)[0, 1]),
                          "thickness": float(np.corrcoef(continuous[:, j], thickness)[0, 1])}
            for j in range(CONTINUOUS)}


def quality(ctx, sampler, clf, count, note, seed=11):
    """The quality row of `count` samples, each code as often (c1 = i mod 10), noise and c2, c3 at random."""
    rng = np.random.RandomState(seed)
    codes = np.arange(count) % CLASSES
    z = g_input(rng.uniform(-1, 1, size=(count, NOISE)), codes, rng.uniform(-1, 1, size=(count, CONTINUOUS)))
    return common.quality(ctx, clf, "InfoGAN", "10.3", sampler(z), codes=codes, note=note)


def draw(ctx, gan, loss, sampler):
    # fig. 10-14: c1 = 0..9 across, one noise vector per row
    common.sample_figure(ctx, "categorical_code.png", categorical_sweep(sampler), ncols=CLASSES)
    values = np.linspace(-2, 2, 9)
    for j in range(CONTINUOUS):
        # fig. 10-15: the code from -2 to 2 across, c1 = 0..9 down
        common.sample_figure(ctx, f"continuous_code_c{2 + j}.png", continuous_sweep(sampler, j, values),
                             ncols=len(values))
    d_losses, g_losses = gan.losses()
    information = math.log(CLASSES) - torch.stack(loss.cross_entropy).double().cpu().numpy()
    viz.line_plot(ctx.figure("losses.png"), {"D loss (GAN + Q)": d_losses, "G loss (GAN + Q)": g_losses,
                                             "L_I categorical: ln 10 - CE (nats)": information},
                  xlabel="iteration", ylabel="value", title="10.3 InfoGAN losses")
    return information


@experiment("10.3", "InfoGAN: categorical and continuous codes, Q head on D's trunk",
            book="figures 10-14 (c1 picks the digit) and 10-15 (continuous codes: thickness, slant); no "
                 "numbers printed")
def infogan(ctx):
    with common.device(ctx):
        return _infogan(ctx)


def _infogan(ctx):
    settings = QUICK if ctx.quick else FULL
    images, where = nets.digits_in_tanh_range(ctx)
    clf = common.classifier(ctx)
    gan, loss, sampler = train(ctx, images, settings)
    information = draw(ctx, gan, loss, sampler)
    note = (f"{settings['iterations']} iterations of {settings['batch']}, c1 uniform; "
            + common.classifier_note(clf))
    report, row = quality(ctx, sampler, clf, settings["samples"], note)
    effects = code_effects(sampler, settings["samples"])
    tail = max(1, len(information) // 10)
    numbers = {"iterations": settings["iterations"], "information_end": float(information[-tail:].mean()),
               "information_start": float(information[0]), "code_accuracy": report.code_accuracy,
               "code_mapping": report.code_mapping, "score": report.score,
               "histogram": report.histogram.tolist(), "samples": report.n, "effects": effects}
    ours = describe(numbers, settings)
    ctx.say("  " + ours)
    return Result(ours=ours + ". " + NOTES, numbers=numbers, data=where, quality=row)


def describe(n, settings):
    shares = " ".join(f"{d}:{100 * c / n['samples']:.0f}%" for d, c in enumerate(n["histogram"]))
    mapping = " ".join(f"{c}->{d}" for c, d in sorted(n["code_mapping"].items()))
    effects = "; ".join(f"{code} vs slant r = {e['slant']:+.2f}, vs thickness r = {e['thickness']:+.2f}"
                        for code, e in n["effects"].items())
    return (f"{n['iterations']} iterations of {settings['batch']}: L_I categorical (ln 10 - CE) "
            f"{n['information_start']:.3f} -> {n['information_end']:.3f} nats (max 2.303); {n['samples']} "
            f"samples, c1 uniform: best code->digit accuracy {n['code_accuracy']:.3f} ({mapping}), "
            f"inception-style score {n['score']:.2f}, classes {shares}; {effects}")


NOTES = ("Sized for the CPU: the nets of 10.4 (examples/book/ch10_gan_nets.py) with Q's fc 10 + fc 2 on D's "
         "hidden layer, z = 32 noise + 10 + 2 codes, Adam (0.5, 0.999), lr 1e-3 for G and 2e-4 for D and Q "
         "(the InfoGAN paper's), lambda 1, one D step per G step; figures drawn by G in TEST phase (BatchNorm's "
         "running statistics). Findings: c1 picks the digit for every noise vector (the columns of 10-14), and G "
         "has come to ignore its noise (the rows of 10-14 are nearly the same digit: the variety comes from the "
         "codes); one code draws no clear digit (6 gets 1 % of the samples). c2 thins the strokes (10-15, "
         "r = -0.22 with thickness), c3 widens and slants them (r = +0.52 with slant, +0.45 with thickness): the "
         "book's thickness and slant, mixed")
