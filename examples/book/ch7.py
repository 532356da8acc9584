"""Chapter 7's shared pieces: Caffe's LeNet with the chapter's switches (BatchNorm + Scale after each core layer,
a Dropout layer, frozen layers, the number of classes) as prototxt text, and the train / test loop the
experiments of 7.3-7.5 run on it (Input blobs fed batch by batch, a TEST-phase net sharing the trained weights).

The experiments themselves are in ch7_3.py (BN), ch7_4.py (dropout and occlusion), ch7_5.py (transfer).
"""
import numpy as np

from brewnet import set_random_seed
from brewnet.errors import SolverError
from brewnet.tools.eta import EtaProgress

from .nets import get, net_from_text, put, quiet, solver_from_text, step

# Caffe's lenet_solver.prototxt (max_iter aside): the solver of every LeNet run of the chapter.
LENET_SOLVER = ('base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005 lr_policy: "inv" gamma: 0.0001 power: 0.75 '
                'display: 0 max_iter: 100000 random_seed: 1701')
LENET_CORE = ("conv1", "conv2", "ip1", "ip2")     # the layers with parameters, in order
PIXEL_SCALE = 0.00390625                            # LeNet's data scale, 1/256
TEST_BATCH = 100


def _params(lr_mult):
    return f"param {{ lr_mult: {lr_mult} }} param {{ lr_mult: {2 * lr_mult} }}"


def _batch_norm(name):
    """BatchNorm then Scale (bias_term) in place on `name`: Caffe's way of writing a learned batch norm."""
    return (f'layer {{ name: "{name}_bn" type: "BatchNorm" bottom: "{name}" top: "{name}" }}\n'
            f'layer {{ name: "{name}_scale" type: "Scale" bottom: "{name}" top: "{name}" '
            f'scale_param {{ bias_term: true }} }}')


def lenet(batch, classes=10, batch_norm=False, dropout=None, frozen=(), fresh=()):
    """Caffe's LeNet (examples/mnist/lenet_train_test.prototxt) on Input blobs `data` and `label`.

    batch_norm: BatchNorm + Scale after conv1, conv2 and ip1 (the core layers before the classifier);
    dropout: the ratio of a Dropout layer after ip1's ReLU (None: no layer); frozen: names of core layers whose
    weights and bias get lr_mult 0 (copied ones stay as they are, as in Yosinski et al.'s frozen transfer);
    fresh: core layers renamed `<name>_new` (their tops keep the name), so that `-weights` / copy_from, which
    copies by layer name, leaves them to their fillers."""
    filler = 'weight_filler { type: "xavier" } bias_filler { type: "constant" }'

    def core(name, kind, bottom, n, extra=""):
        lr = 0 if name in frozen else 1
        field = "convolution_param" if kind == "Convolution" else "inner_product_param"
        layer = f"{name}_new" if name in fresh else name
        text = (f'layer {{ name: "{layer}" type: "{kind}" bottom: "{bottom}" top: "{name}" {_params(lr)} '
                f'{field} {{ num_output: {n} {extra} {filler} }} }}')
        return text + ("\n" + _batch_norm(name) if batch_norm and name != "ip2" else "")

    def pool(name, bottom):
        return (f'layer {{ name: "{name}" type: "Pooling" bottom: "{bottom}" top: "{name}" '
                f'pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}')
    layers = [
        'name: "LeNet"',
        f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: {batch} dim: 1 dim: 28 '
        f'dim: 28 }} }} }}',
        f'layer {{ name: "label" type: "Input" top: "label" input_param {{ shape {{ dim: {batch} }} }} }}',
        core("conv1", "Convolution", "data", 20, "kernel_size: 5 stride: 1"), pool("pool1", "conv1"),
        core("conv2", "Convolution", "pool1", 50, "kernel_size: 5 stride: 1"), pool("pool2", "conv2"),
        core("ip1", "InnerProduct", "pool2", 500),
        'layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }',
    ]
    if dropout is not None:
        layers.append(f'layer {{ name: "drop1" type: "Dropout" bottom: "ip1" top: "ip1" '
                      f'dropout_param {{ dropout_ratio: {dropout} }} }}')
    layers += [core("ip2", "InnerProduct", "ip1", classes),
               'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }']
    return "\n".join(layers)


class Trained:
    """A training run's outcome: the solver (its net holds the weights), the loss per iteration, and the
    iteration at which the loss became NaN/inf (None when it stayed finite)."""

    def __init__(self, solver, losses, diverged):
        self.solver, self.losses, self.diverged = solver, losses, diverged

    @property
    def net(self):
        return self.solver.net


def train(ctx, label, net_text, images, labels, iterations, batch, solver=LENET_SOLVER, weights=None, seed=1701):
    """Train on float32 images (N x C x H x W) and labels with minibatches drawn from one fixed permutation.
    weights: a caffemodel copied into the net first (what `caffe train -weights` does). brewnet stops on a NaN
    loss where Caffe would go on with NaN weights: the iteration is recorded, the net kept as it is."""
    set_random_seed(seed)
    solver_obj = solver_from_text(net_text, solver)
    if weights is not None:
        with quiet():
            solver_obj.net.copy_from(weights)
    order = np.random.RandomState(seed).permutation(len(images))
    labels = labels.astype(np.float32)
    progress = EtaProgress(iterations, label=label, stream=ctx.stream)
    losses, diverged = [], None
    for it in range(iterations):
        rows = order[(it * batch + np.arange(batch)) % len(order)]
        put(solver_obj.net, "data", images[rows])
        put(solver_obj.net, "label", labels[rows])
        try:
            step(solver_obj)
        except SolverError:
            diverged = it
            break
        losses.append(float(get(solver_obj.net.blobs["loss"])))
        progress.update(it + 1)
    progress.close()
    return Trained(solver_obj, losses, diverged)


def predict(test_text, trained_net, images, batch=TEST_BATCH, output="ip2"):
    """Class scores of a TEST-phase net (built from `test_text`, with Input batch `batch`) that shares the
    trained net's weights and batch statistics: Dropout passes through, BatchNorm uses the running averages."""
    net = net_from_text(test_text, phase="TEST")
    with quiet():
        net.share_trained_layers_with(trained_net)
    scores = []
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch]
        padded = np.concatenate([chunk, np.zeros((batch - len(chunk),) + chunk.shape[1:], chunk.dtype)])
        put(net, "data", padded)
        net.forward()
        scores.append(get(net.blobs[output])[:len(chunk)])
    return np.concatenate(scores)


def accuracy(test_text, trained_net, images, labels, batch=TEST_BATCH, output="ip2"):
    """Top-1 accuracy of the scores in blob `output`. A NaN score row counts as class 0, as Caffe's argmax
    over NaN weights answers."""
    scores = np.nan_to_num(predict(test_text, trained_net, images, batch, output), nan=-np.inf)
    guess = np.where(np.isinf(scores).all(axis=1), 0, scores.argmax(axis=1))
    return float((guess == labels).mean())


def as_input(images, scale=PIXEL_SCALE):
    """uint8 N x 28 x 28 -> float32 N x 1 x 28 x 28, times `scale` (1: raw pixels 0-255)."""
    return images[:, None].astype(np.float32) * np.float32(scale)


def occlude(images, half="bottom"):
    """The digits with one half blacked out (rows 14-27 for the bottom half, columns 14-27 for the right)."""
    out = images.copy()
    size = images.shape[-1]
    if half == "bottom":
        out[..., size // 2:, :] = 0
    else:
        out[..., :, size // 2:] = 0
    return out
