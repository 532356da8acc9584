"""The small convolutional G and D of sections 10.3 (InfoGAN) and 10.4 (WGAN, WGAN-GP), as prototxt text.

Sized for a CPU run of minutes: the DCGAN layout of 10.2.3 (fc, x2 upsampling, conv; conv, downsampling, fc) with
fewer channels, strided 4x4 convolutions in D instead of conv + pooling, and 4x4 stride-2 Deconvolutions in G
instead of upsampling + 5x5 conv (the layout of the WGAN-GP and InfoGAN papers' MNIST nets):

    G: z -> fc 32*7*7, BatchNorm, ReLU -> deconv 16 (14x14), BatchNorm, ReLU -> deconv 1 (28x28) -> tanh
    D: x -> conv 16 (14x14), LeakyReLU 0.2 -> conv 32 (7x7), LeakyReLU 0.2 -> fc `hidden`, LeakyReLU -> fc 1

D ends in its score without a sigmoid (a WGAN critic; the GAN losses take the logit).  D has no BatchNorm:
WGAN-GP's penalty is per sample, and a batch statistic would tie the samples together.  InfoGAN's Q head
(fc 10 categorical logits, fc 2 continuous means) shares D's trunk up to the hidden layer.
"""

FILLER = 'weight_filler { type: "gaussian" std: 0.02 } bias_filler { type: "constant" }'


def _input(name, shape):
    dims = " ".join(f"dim: {d}" for d in shape)
    return f'layer {{ name: "{name}" type: "Input" top: "{name}" input_param {{ shape {{ {dims} }} }} }}'


def _layer(name, type_, bottom, top, params=""):
    return f'layer {{ name: "{name}" type: "{type_}" bottom: "{bottom}" top: "{top}" {params} }}'


def _ip(name, bottom, n):
    return _layer(name, "InnerProduct", bottom, name, f"inner_product_param {{ num_output: {n} {FILLER} }}")


def _conv(name, type_, bottom, n):
    return _layer(name, type_, bottom, name,
                  f"convolution_param {{ num_output: {n} kernel_size: 4 stride: 2 pad: 1 {FILLER} }}")


def _bn(name, bottom):
    """Caffe's BatchNorm (batch statistics in TRAIN) + Scale with a bias, in place.  The running statistics
    average the last ten or so batches (fraction 0.9, Caffe's default 0.999 remembers a thousand): they
    follow G as it trains, and the TEST-phase Sampler normalises with them."""
    average = "batch_norm_param { moving_average_fraction: 0.9 }"
    return "\n".join([_layer(f"{name}_bn", "BatchNorm", bottom, bottom, average),
                      _layer(f"{name}_scale", "Scale", bottom, bottom, "scale_param { bias_term: true }")])


def _lrelu(name, bottom):
    return _layer(name, "ReLU", bottom, bottom, "relu_param { negative_slope: 0.2 }")


def generator(batch, nz, width=16):
    return "\n".join([
        'name: "G" force_backward: true', _input("z", (batch, nz)),
        _ip("fc", "z", 2 * width * 49), _bn("fc", "fc"), _layer("fc_relu", "ReLU", "fc", "fc"),
        _layer("fc_4d", "Reshape", "fc", "fc_4d", f"reshape_param {{ shape {{ dim: 0 dim: {2 * width} dim: 7 "
                                                  f"dim: 7 }} }}"),
        _conv("up1", "Deconvolution", "fc_4d", width), _bn("up1", "up1"), _layer("up1_relu", "ReLU", "up1", "up1"),
        _conv("up2", "Deconvolution", "up1", 1), _layer("gen", "TanH", "up2", "gen")])


def discriminator(batch, width=16, hidden=64, q_head=False):
    layers = ['name: "D" force_backward: true', _input("data", (batch, 1, 28, 28)),
              _conv("conv1", "Convolution", "data", width), _lrelu("lrelu1", "conv1"),
              _conv("conv2", "Convolution", "conv1", 2 * width), _lrelu("lrelu2", "conv2"),
              _ip("hidden", "conv2", hidden), _lrelu("lrelu3", "hidden"), _ip("score", "hidden", 1)]
    if q_head:
        layers += [_ip("q_cat", "hidden", 10), _ip("q_cont", "hidden", 2)]
    return "\n".join(layers)


def solver_text(kind, lr):
    """RMSProp (WGAN's choice: momentum-free), Adam with DCGAN's betas (0.5, 0.999) or those of WGAN-GP's
    MNIST code (0.5, 0.9)."""
    if kind == "RMSProp":
        return f'type: "RMSProp" base_lr: {lr} rms_decay: 0.9 lr_policy: "fixed" display: 0 max_iter: 1000000'
    beta1, beta2 = {"Adam": (0.5, 0.999), "Adam-GP": (0.5, 0.9)}[kind]
    return (f'type: "Adam" base_lr: {lr} momentum: {beta1} momentum2: {beta2} lr_policy: "fixed" display: 0 '
            f'max_iter: 1000000')


# ---------------------------------------------------------------- what 10.3 and 10.4 share around the nets

def digits_in_tanh_range(ctx):
    """The training digits as N x 1 x 28 x 28 in [-1, 1] (G ends in tanh), and where they come from."""
    from brewnet.data.idx_sets import load_idx_set
    data = load_idx_set(ctx.data)
    images = data.train_images[:, None].astype("float32") / 127.5 - 1.0
    where = "bundled MNIST digits (8 000 train)" if ctx.data is None else ctx.data
    return images, where


class Sampler:
    """G in the TEST phase sharing the trained G's layers (Net.share_trained_layers_with), as a Caffe user
    deploys a net: BatchNorm normalises with its running statistics, so a sample does not depend on the rest
    of its batch (the code sweeps' batches are anything but random)."""

    def __init__(self, trainer, nz, batch=100):
        from .nets import net_from_text
        self.net = net_from_text(generator(batch, nz), phase="TEST")
        self.net.share_trained_layers_with(trainer.g_net)
        self.z, self.gen = self.net.blob_by_name("z"), self.net.blob_by_name("gen")
        self.nz, self.batch = nz, batch

    def __call__(self, z):
        """G's samples for the rows of `z` (any number), as an N x 28 x 28 array in [-1, 1]."""
        import numpy as np
        import torch
        out = []
        for start in range(0, len(z), self.batch):
            chunk = np.zeros((self.batch, self.nz), dtype=np.float32)
            rows = z[start:start + self.batch]
            chunk[:len(rows)] = rows
            self.z.store_data(torch.as_tensor(chunk, dtype=self.z.data.dtype, device=self.z.data.device))
            self.net.forward()
            out.append(self.gen.data.detach().cpu().double().numpy()[:len(rows), 0].copy())
        return np.concatenate(out)

    def noise(self, count, seed):
        """`count` rows of z ~ U(-1, 1), as AdversarialTrainer's default noise draws them."""
        import numpy as np
        return np.random.RandomState(seed).uniform(-1, 1, size=(count, self.nz))

