"""How good are generated digits? Classify them with the LeNet that `make demo` trains, and summarise:

- the class histogram (the book's mode collapse shows as "more and more 1s");
- an inception-style score exp(E_x KL(p(y|x) || p(y))): 1 when every sample gets the same prediction or every
  prediction is uniform, 10 at most (confident predictions spread evenly over the ten digits);
- for a generator with a categorical code (InfoGAN), the accuracy of the best one-to-one mapping from code to
  predicted digit (Hungarian assignment, scipy.optimize.linear_sum_assignment).

    from brewnet.tools import sample_quality
    clf = sample_quality.DigitClassifier()                # the demo's model, trained here if it is absent
    report = sample_quality.measure(images, clf, value_range=(-1, 1), codes=codes)
    print(report.line())                                  # "score 8.91, classes 0:10.2% 1:9.8% ...

    python -m brewnet.tools.sample_quality samples.npy [--weights W] [--codes codes.npy] [--range -1 1]

The classifier is examples/mnist/lenet.prototxt with the weights `make demo` writes
(examples/mnist/lenet_iter_10000.caffemodel), or any caffemodel of that net (`weights=`).  Without them, a LeNet
is trained on the bundled digits with the demo's solver settings (`TRAIN_ITERATIONS` iterations, seed 1701)
and kept under results/sample_quality/, so the measure works in a fresh checkout.  LeNet reads pixels in
[0, 1) (the demo scales bytes by 1/256); `value_range` says what the samples' black and white are.
"""
import argparse
import dataclasses
import os
import sys

import numpy as np
import torch

from ..core.net import Net
from ..errors import BrewnetError
from ..log import quiet
from ..proto import caffe_pb2
from ..proto.io import parse_text, read_net_param

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(ROOT, "examples", "mnist", "lenet.prototxt")
DEMO_WEIGHTS = os.path.join(ROOT, "examples", "mnist", "lenet_iter_10000.caffemodel")
CACHE_DIR = os.path.join(ROOT, "results", "sample_quality")
TRAIN_ITERATIONS = 2000
LENET_SOLVER = ('base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005 lr_policy: "inv" gamma: 0.0001 power: 0.75 '
                'display: 0 random_seed: 1701')


class SampleQualityError(BrewnetError, ValueError):
    """Samples, codes or a classifier that the measure cannot take."""


# ------------------------------------------------------------------------------------------- the classifier


def _train_param(batch):
    """lenet.prototxt for training: the Softmax output becomes SoftmaxWithLoss against an Input 'label'."""
    param = read_net_param(DEPLOY)
    param.layer[0].input_param.shape[0].dim[0] = batch
    label = caffe_pb2.LayerParameter(name="label", type="Input", top=["label"])
    label.input_param.shape.add().dim.append(batch)
    layers = list(param.layer)
    del param.layer[:]
    param.layer.extend(layers[:1] + [label] + layers[1:])
    prob = next(layer for layer in param.layer if layer.type == "Softmax")
    prob.type, prob.top[:] = "SoftmaxWithLoss", ["loss"]
    prob.bottom.append("label")
    return param


def train_lenet(path, iterations=TRAIN_ITERATIONS, batch=64, data=None):
    """Train lenet.prototxt on the bundled digits (or the IDX folder `data`) with the demo's solver settings
    and save the weights to `path`; returns the test accuracy on the set's test digits."""
    from ..core.common import set_random_seed
    from ..data.idx_sets import load_idx_set
    from ..solvers import get_solver
    digits = load_idx_set(data)
    solver_param = parse_text(LENET_SOLVER, caffe_pb2.SolverParameter())
    solver_param.max_iter = iterations
    solver_param.net_param.CopyFrom(_train_param(batch))
    set_random_seed(1701)
    with quiet():
        solver = get_solver(solver_param)
    net = solver.net
    x = torch.as_tensor(digits.train_images[:, None].astype(np.float32) / 256.0, device=net.device)
    y = torch.as_tensor(digits.train_labels.astype(np.float32), device=net.device)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0)).to(net.device)
    for it in range(iterations):
        rows = order[(it * batch + torch.arange(batch, device=net.device)) % len(order)]
        net.blob_by_name("data").store_data(x[rows])
        net.blob_by_name("label").store_data(y[rows])
        with quiet():
            solver.step(1)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    net.save(path)
    return DigitClassifier(path).accuracy(data)


class DigitClassifier:
    """lenet.prototxt in TEST phase with trained weights; `probabilities(images)` gives p(y|x) for N images
    (N x 28 x 28 or N x 1 x 28 x 28, pixels in [0, 1)) as an N x 10 float64 array."""

    trained_accuracy = None     # the test accuracy of a LeNet trained here (None: given weights)

    def __init__(self, weights=None, batch=100, train_iterations=TRAIN_ITERATIONS, cache_dir=CACHE_DIR):
        """weights: a caffemodel of lenet.prototxt; default the demo's, else one trained here for
        `train_iterations` (0: refuse to train) and kept in `cache_dir` for the next measure."""
        weights = weights or (DEMO_WEIGHTS if os.path.exists(DEMO_WEIGHTS) else None)
        if weights is None:
            weights = os.path.join(cache_dir, f"lenet_iter_{train_iterations}.caffemodel")
            if not os.path.exists(weights):
                if not train_iterations:
                    raise SampleQualityError(f"no classifier weights: {DEMO_WEIGHTS} is missing (run `make "
                                             f"demo`) and training one here was turned off")
                self.trained_accuracy = train_lenet(weights, iterations=train_iterations)
        if not os.path.exists(weights):
            raise SampleQualityError(f"classifier weights {weights}: no such file")
        self.weights = weights
        param = read_net_param(DEPLOY)
        param.layer[0].input_param.shape[0].dim[0] = batch
        self.batch = batch
        with quiet():
            self.net = Net(param, phase=caffe_pb2.TEST, weights=weights)

    def accuracy(self, data=None):
        """The share of the test digits of the bundled set (or IDX folder `data`) classified right."""
        from ..data.idx_sets import load_idx_set
        digits = load_idx_set(data)
        predicted = self.probabilities(digits.test_images[:, None] / 256.0).argmax(axis=1)
        return float((predicted == digits.test_labels).mean())

    def probabilities(self, images):
        x = torch.as_tensor(np.asarray(images, dtype=np.float32) if not torch.is_tensor(images) else images)
        if x.dim() == 3:
            x = x[:, None]
        if tuple(x.shape[1:]) != (1, 28, 28):
            raise SampleQualityError(f"Expect: digits of shape N x 1 x 28 x 28 (or N x 28 x 28), Actual: "
                                     f"{tuple(x.shape)}")
        data, prob = self.net.blob_by_name("data"), self.net.blob_by_name("prob")
        out = []
        for start in range(0, x.shape[0], self.batch):
            chunk = x[start:start + self.batch].to(device=data.data.device, dtype=data.data.dtype)
            if chunk.shape[0] != data.shape[0]:
                data.reshape(list(chunk.shape))
                self.net.reshape()
            data.store_data(chunk)
            self.net.forward()
            out.append(prob.data.to(torch.float64, copy=True))     # the blob is overwritten by the next batch
        return torch.cat(out).cpu().numpy() if out else np.zeros((0, 10))


# ------------------------------------------------------------------------------------------------- measures
def class_histogram(probabilities, classes=10):
    """How many samples each digit gets as the classifier's top prediction."""
    return np.bincount(np.asarray(probabilities).argmax(axis=1), minlength=classes)


def inception_score(probabilities):
    """exp(E_x KL(p(y|x) || p(y))), p(y) the mean prediction over the samples."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or len(p) == 0:
        raise SampleQualityError(f"Expect: an N x classes array of probabilities, Actual: shape {p.shape}")
    marginal = p.mean(axis=0, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(p) - np.log(marginal)), 0.0)
    return float(np.exp(terms.sum(axis=1).mean()))


def best_code_accuracy(codes, predicted, classes=10):
    """The share of samples whose predicted digit is the one assigned to their code, under the best one-to-one
    assignment of codes to digits; returns (accuracy, {code: digit})."""
    from scipy.optimize import linear_sum_assignment
    codes, predicted = np.asarray(codes).astype(int).ravel(), np.asarray(predicted).astype(int).ravel()
    if codes.shape != predicted.shape:
        raise SampleQualityError(f"codes and predictions: Expect: one code per sample, Actual: {codes.size} codes "
                                 f"for {predicted.size} samples")
    counts = np.zeros((codes.max() + 1 if codes.size else 0, classes), dtype=np.int64)
    np.add.at(counts, (codes, predicted), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / max(codes.size, 1)), {int(r): int(c) for r, c in zip(rows, cols)}


@dataclasses.dataclass
class QualityReport:
    n: int
    histogram: np.ndarray
    score: float
    code_accuracy: float = None
    code_mapping: dict = None

    def line(self):
        shares = " ".join(f"{d}:{100 * c / max(self.n, 1):.1f}%" for d, c in enumerate(self.histogram))
        text = f"score {self.score:.2f} (of 10), {self.n} samples, classes {shares}"
        if self.code_accuracy is not None:
            text += f", best code->digit accuracy {self.code_accuracy:.3f}"
        return text


def measure(images, classifier=None, value_range=(0.0, 1.0), codes=None):
    """Classify `images` (pixel values in `value_range`, mapped to LeNet's [0, 1)) and report their quality."""
    classifier = classifier or DigitClassifier()
    low, high = value_range
    x = (np.asarray(images, dtype=np.float32) - low) / (high - low)
    p = classifier.probabilities(np.clip(x, 0.0, 1.0))
    report = QualityReport(n=len(p), histogram=class_histogram(p), score=inception_score(p))
    if codes is not None:
        report.code_accuracy, report.code_mapping = best_code_accuracy(codes, p.argmax(axis=1))
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m brewnet.tools.sample_quality", description=__doc__.split("\n")[0])
    parser.add_argument("samples", help=".npy file of N x 28 x 28 (or N x 1 x 28 x 28) generated digits")
    parser.add_argument("--weights", default=None, help="LeNet caffemodel (default: the demo's, else trained)")
    parser.add_argument("--codes", default=None, help=".npy file of each sample's categorical code")
    parser.add_argument("--range", nargs=2, type=float, default=(0.0, 1.0), metavar=("BLACK", "WHITE"),
                        help="the samples' pixel range (tanh generators: -1 1)")
    args = parser.parse_args(argv)
    codes = np.load(args.codes) if args.codes else None
    report = measure(np.load(args.samples), DigitClassifier(args.weights), tuple(args.range), codes)
    print(report.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
