"""Adversarial training on two Caffe nets: a generator G and a discriminator (critic) D, each with its own solver.

The book (10.2.3) leaves Caffe for GANs; here they are what a pycaffe user would write by hand, packed into a
small loop: set blobs, forward, backward, move `data` / `diff` between the nets, `apply_update()`,
`clear_param_diffs()`.  All tensors stay where the nets live (GPU mode: on the device; no NumPy per step).

    g = caffe.get_solver("g_solver.prototxt")      # G: Input "z" -> ... -> "gen" (no loss layer)
    d = caffe.get_solver("d_solver.prototxt")      # D: Input "data" -> ... -> "score" (a logit, no loss layer)
    gan = AdversarialTrainer(g, d, real=DeviceBatches(images, batch=64))
    for it in range(1000):
        gan.step()                                  # k D steps, then one G step
    d_losses, g_losses = gan.losses()               # NumPy, read once at the end

Both nets need `force_backward: true`: neither has a loss layer, so without it Caffe's backward analysis
skips every layer.  D ends in its score (a logit); the sigmoid of the book's "fc 1 sigmoid" is part of the
loss, as in Caffe's SigmoidCrossEntropyLoss, because log(sigmoid) computed from a probability loses its
precision where D is confident.

One D step (`discriminator_step`): D's diffs cleared, D on a real batch (backward accumulates into D's param
diffs, as Caffe's diffs do), D on G's samples of fresh noise, then the loss's extra gradient terms (a WGAN-GP
penalty), D's solver applies the update, then `after_discriminator_update` (WGAN's weight clipping).
One G step (`generator_step`): G forward, D forward on its samples, the loss's diff at D's score, D backward
down to its input with D's parameter gradients switched off (param_propagate_down: D's parameters, diffs and
solver history stay exactly as they were), D's input diff becomes G's output diff, G backward, G's update.

A loss decides the diffs at D's outputs (`GANLoss`): `NonSaturatingLoss` (default; the book's
-log D(G(z)) for G), `MinimaxLoss` (G minimises log(1 - D(G(z))), which saturates) and `WassersteinLoss` (a
critic's mean scores, optional weight clipping).  A custom loss subclasses GANLoss; its hooks get the trainer.

A caveat: D runs in its TRAIN phase in both steps, so layers keeping running statistics (BatchNorm) in D
update them in a G step's forward too.  The book's D has none.
"""
import numpy as np
import torch

from .errors import BrewnetError


class AdversarialError(BrewnetError):
    """Two nets that cannot be trained against each other (a missing blob, shapes that do not fit)."""


# ---------------------------------------------------------------------------------------------------- losses
class GANLoss:
    """What a loss decides in the loop.  `discriminator` and `generator` get D's output blobs (name -> core
    Blob, torch `.data` / `.diff`; the first is the score) with zeroed diffs, write the diffs the loss wants
    and return the loss as a 0-d tensor (left on the device)."""

    score = None        # the name of D's score blob; None: D's first output

    def _score(self, outputs):
        return outputs[self.score] if self.score is not None else next(iter(outputs.values()))

    # A loss subclasses GANLoss and defines both (NonSaturatingLoss, MinimaxLoss, WassersteinLoss do).
    def discriminator(self, outputs, real):
        raise NotImplementedError(f"{type(self).__name__} must define discriminator(outputs, real): the diffs of "
                                  f"D's outputs for a batch of real (True) or generated (False) images")

    def generator(self, outputs):
        raise NotImplementedError(f"{type(self).__name__} must define generator(outputs): the diffs of D's "
                                  f"outputs that push G's images towards 'real'")

    def after_discriminator_backward(self, trainer, real, fake):
        """Add further gradient terms to D's param diffs (they accumulate) before D's update; `real` and
        `fake` are the tensors of the last D step.  Return their loss (0-d tensor) or None."""
        return None

    def after_discriminator_update(self, trainer):
        """Called after every D update (WGAN clips D's weights here)."""


def _mean_grad(score, values):
    """values / N: the derivative of a batch mean, in the score's shape."""
    return (values / score.shape[0]).view(score.shape)


class NonSaturatingLoss(GANLoss):
    """D: -log D(x) - log(1 - D(G(z))); G: -log D(G(z)) (10.2.3); D(x) = sigmoid(score), batch means.
    From the logit s: -log sigmoid(s) = softplus(-s), -log(1 - sigmoid(s)) = softplus(s)."""

    def discriminator(self, outputs, real):
        blob = self._score(outputs)
        s = blob.data.reshape(-1)
        if real:
            blob.store_diff(_mean_grad(blob.data, torch.sigmoid(s) - 1))
            return torch.nn.functional.softplus(-s).mean()
        blob.store_diff(_mean_grad(blob.data, torch.sigmoid(s)))
        return torch.nn.functional.softplus(s).mean()

    def generator(self, outputs):
        blob = self._score(outputs)
        s = blob.data.reshape(-1)
        blob.store_diff(_mean_grad(blob.data, torch.sigmoid(s) - 1))
        return torch.nn.functional.softplus(-s).mean()


class MinimaxLoss(NonSaturatingLoss):
    """The original minimax G loss log(1 - D(G(z))), which G minimises: its gradient vanishes while D rejects
    G's samples confidently (why the book uses -log D(G(z)))."""

    def generator(self, outputs):
        blob = self._score(outputs)
        s = blob.data.reshape(-1)
        blob.store_diff(_mean_grad(blob.data, -torch.sigmoid(s)))
        return -torch.nn.functional.softplus(s).mean()


class WassersteinLoss(GANLoss):
    """WGAN (10.4): the critic minimises mean f(G(z)) - mean f(x), G minimises -mean f(G(z)); with `clip`, every
    parameter of D is clamped to [-clip, clip] after each D update."""

    def __init__(self, clip=None):
        self.clip = clip

    def discriminator(self, outputs, real):
        blob = self._score(outputs)
        sign = -1.0 if real else 1.0
        blob.store_diff(torch.full_like(blob.data, sign / blob.data.shape[0]))
        return sign * blob.data.mean()

    def generator(self, outputs):
        blob = self._score(outputs)
        blob.store_diff(torch.full_like(blob.data, -1.0 / blob.data.shape[0]))
        return -blob.data.mean()

    def after_discriminator_update(self, trainer):
        if self.clip is not None:
            with torch.no_grad():
                for blob in trainer.d_net.learnable_params:
                    blob.data.clamp_(-self.clip, self.clip)


# ------------------------------------------------------------------------------------------------ real data
class DeviceBatches:
    """Real batches drawn from an array held on the nets' device: shuffled once per epoch (torch's generator,
    seeded), each call hands the next `batch` rows as a tensor.  `epoch` counts the passes begun."""

    def __init__(self, images, batch, seed=0, device=None):
        from .core import common
        self.data = torch.as_tensor(np.asarray(images, dtype=np.float32), device=device or common.device())
        if self.data.shape[0] < batch:
            raise AdversarialError(f"DeviceBatches: Expect: at least batch={batch} images, Actual: "
                                   f"{self.data.shape[0]}")
        self.batch = int(batch)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.epoch, self._order, self._next = 0, None, 0

    def __call__(self):
        if self._order is None or self._next + self.batch > len(self._order):
            self._order = torch.randperm(self.data.shape[0], generator=self.generator).to(self.data.device)
            self._next, self.epoch = 0, self.epoch + 1
        rows = self._order[self._next:self._next + self.batch]
        self._next += self.batch
        return self.data.index_select(0, rows)


def uniform_noise(tensor):
    """z ~ U(-1, 1), as keras-dcgan (the book's 10.2.3 code) draws it."""
    tensor.uniform_(-1.0, 1.0)


def normal_noise(tensor):
    tensor.normal_()


# ------------------------------------------------------------------------------------------------ the loop
def _core_solver(solver):
    """A pycaffe Solver (brewnet.pycaffe.solver) or a brewnet solver: (core solver, pycaffe Net or None)."""
    core = getattr(solver, "_solver", solver)
    return core, getattr(solver, "_net", None)


class _Passes:
    """Whole-net forward and backward: through the pycaffe Net when there is one (it syncs host mirrors and
    computes in the solver's precision, caffe.set_precision), else the core Net's own; neither reads NumPy."""

    def __init__(self, core, py):
        last = len(core.layers) - 1
        self.forward = (lambda: py._forward(0, last)) if py is not None else core.forward
        self.backward = (lambda: py._backward(last, 0)) if py is not None else core.backward


class AdversarialTrainer:
    """Alternate `k` D steps and one G step.  `g_solver`, `d_solver`: pycaffe solvers (caffe.get_solver,
    caffe.AdamSolver, ...) or brewnet solvers.  `real`: a callable giving a batch of real images as a tensor
    (DeviceBatches).  Blob names default to G's only input, G's first output, D's only input and D's
    outputs; `noise` fills G's input tensor in place (default U(-1, 1))."""

    def __init__(self, g_solver, d_solver, real, k=1, loss=None, noise=uniform_noise,
                 g_input=None, g_output=None, d_input=None):
        self.g_solver, self._g_py = _core_solver(g_solver)
        self.d_solver, self._d_py = _core_solver(d_solver)
        self.g_net, self.d_net = self.g_solver.net, self.d_solver.net
        self._g, self._d = _Passes(self.g_net, self._g_py), _Passes(self.d_net, self._d_py)
        self.real, self.k, self.noise = real, int(k), noise
        self.loss = loss or NonSaturatingLoss()
        if self.k < 1:
            raise AdversarialError(f"AdversarialTrainer: Expect: k >= 1 D steps per G step, Actual: {k}")
        self.z = self._blob(self.g_net, g_input, self.g_net.input_blob_names, "G's input")
        self.gen = self._blob(self.g_net, g_output, self.g_net.output_blob_names, "G's output")
        self.d_in = self._blob(self.d_net, d_input, self.d_net.input_blob_names, "D's input")
        self.d_outputs = {name: self.d_net.blob_by_name(name) for name in self.d_net.output_blob_names}
        self._check_nets()
        self.history = {"d": [], "g": []}       # 0-d device tensors, read once by losses()

    @staticmethod
    def _blob(net, name, candidates, what):
        if name is None:
            if len(candidates) < 1:
                raise AdversarialError(f"net '{net.name}' has no blob to use as {what}: name it")
            name = candidates[0]
        if not net.has_blob(name):
            raise AdversarialError(f"net '{net.name}' has no blob '{name}' ({what})")
        return net.blob_by_name(name)

    def _check_nets(self):
        for net, who in ((self.g_net, "G"), (self.d_net, "D")):
            if not any(net.layer_need_backward):
                raise AdversarialError(f"{who} net '{net.name}': no layer needs backward; a net without a loss "
                                       f"layer needs `force_backward: true` in its prototxt")
        if tuple(self.gen.shape) != tuple(self.d_in.shape):
            raise AdversarialError(f"G's output '{self.gen.name}' has shape {tuple(self.gen.shape)} but D's "
                                   f"input '{self.d_in.name}' has {tuple(self.d_in.shape)}: they must match")
        if not self.d_outputs:
            raise AdversarialError(f"D net '{self.d_net.name}' has no output blob (its score)")

    # --- passes --------------------------------------------------------------------------------------------
    def _sync(self):
        """pycaffe host mirrors (blobs a script read as NumPy in GPU mode) go back to the device first, as
        pycaffe's own calls do, so a stale mirror never overwrites what the loop computed."""
        for net in (self._g_py, self._d_py):
            if net is not None:
                net._sync()

    def generate(self):
        """Fresh noise through G; returns G's output tensor (the blob's own memory)."""
        self.noise(self.z.data)
        self._g.forward()
        return self.gen.data

    def _d_pass(self, images, loss_of):
        """D forward on `images`, the loss's diffs at D's outputs, D backward; returns the loss."""
        self.d_in.store_data(images)
        self._d.forward()
        for blob in self.d_outputs.values():
            blob.diff.zero_()
        loss = loss_of(self.d_outputs)
        self._d.backward()
        return loss

    def discriminator_step(self):
        self._sync()
        self.d_net.clear_param_diffs()
        real = self.real()
        loss = self._d_pass(real, lambda out: self.loss.discriminator(out, True))
        with torch.no_grad():
            fake = self.generate().clone()
        loss = loss + self._d_pass(fake, lambda out: self.loss.discriminator(out, False))
        extra = self.loss.after_discriminator_backward(self, real, fake)
        if extra is not None:
            loss = loss + extra
        self.d_solver.apply_update()
        self.loss.after_discriminator_update(self)
        self.history["d"].append(loss.detach())
        return loss

    def generator_step(self):
        self._sync()
        self.g_net.clear_param_diffs()
        fake = self.generate()
        with frozen_params(self.d_net):
            loss = self._d_pass(fake, self.loss.generator)
        self.gen.store_diff(self.d_in.diff)
        self._g.backward()
        self.g_solver.apply_update()
        self.history["g"].append(loss.detach())
        return loss

    def step(self, iters=1):
        """`iters` rounds of k D steps and one G step."""
        for _ in range(int(iters)):
            for _ in range(self.k):
                self.discriminator_step()
            self.generator_step()

    def losses(self):
        """(D losses, G losses) of every step so far, as NumPy arrays (one read of the device)."""
        return tuple(torch.stack(self.history[k]).double().cpu().numpy() if self.history[k] else np.zeros(0)
                     for k in ("d", "g"))

    def sample(self):
        """A batch of G's samples for fresh noise (NumPy, for figures and measures)."""
        self._sync()
        return self.generate().detach().cpu().numpy().copy()


class frozen_params:
    """Within the block, the net's layers compute no parameter gradients (param_propagate_down off), so
    backward passes through the net to its input and leaves its parameters' diffs alone."""

    def __init__(self, net):
        self.net = net

    def __enter__(self):
        self.saved = [list(layer.param_propagate_down) for layer in self.net.layers]
        for layer in self.net.layers:
            for i in range(len(layer.blobs)):
                layer.set_param_propagate_down(i, False)
        return self.net

    def __exit__(self, *exc):
        for layer, saved in zip(self.net.layers, self.saved):
            layer.param_propagate_down = saved
        return False
