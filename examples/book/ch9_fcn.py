"""Chapter 9's networks: a CPU-sized FCN with FCN-8s's skip structure, and the same FCN with crfasrnn's
MultiStageMeanfield on top (CRF-as-RNN), both written with pycaffe's NetSpec and coord_map.crop as
fcn.berkeleyvision.org's net.py writes VGG's, trained through pycaffe's solver API.

FCN-8s fuses the coarsest score (1/32) with the scores of pool4 (1/16) and pool3 (1/8) and upsamples 8x.  The
digits are 64-128 pixels a side, so this net stops one level earlier: scores at 1/16, fused with pool3 (1/8)
and pool2 (1/4), upsampled 4x; 16-32-64-96 channels instead of VGG's 64-512.  Two differences from FCN's
training, both because this net starts from fillers instead of ILSVRC weights: Adam instead of SGD with a tiny
learning rate on an unnormalised loss, and the image scaled into about [-1, 1] by a Power layer after the
mean is subtracted (the CRF reads the unscaled 'data', colours in 0-255 units as crfasrnn's demo feeds them).
"""
import os

import numpy as np

from brewnet.data import voc_digits

MEAN = np.array([104.0, 117.0, 123.0])      # per channel, subtracted from the RGB image (FCN's VOC mean, rounded)


def fcn_spec(num_classes=voc_digits.NUM_CLASSES, crf=None):
    """NetParameter of the FCN; with `crf` (a dict of multi_stage_meanfield_param fields) the MultiStageMeanfield
    layer reads its score as unary and Q0 (crfasrnn's Split) and the image as third bottom."""
    import caffe
    from caffe import layers as L, params as P
    from caffe.coord_map import crop

    n = caffe.NetSpec()
    n.data, n.label = L.Input(shape=[dict(dim=[1, 3, 96, 96]), dict(dim=[1, 1, 96, 96])], ntop=2)
    n.scaled = L.Power(n.data, power_param=dict(scale=1 / 64.0))
    bottom = n.scaled
    for level, (width, convs) in enumerate([(16, 2), (32, 2), (64, 2), (96, 2)], start=1):
        for k in range(1, convs + 1):
            conv = L.Convolution(bottom, num_output=width, kernel_size=3, pad=1,
                                 weight_filler=dict(type="msra"), bias_filler=dict(type="constant"))
            setattr(n, f"conv{level}_{k}", conv)
            bottom = L.ReLU(conv, in_place=True)
            setattr(n, f"relu{level}_{k}", bottom)
        bottom = L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=2, stride=2)
        setattr(n, f"pool{level}", bottom)
    n.fc5 = L.Convolution(n.pool4, num_output=128, kernel_size=3, pad=1, weight_filler=dict(type="msra"),
                          bias_filler=dict(type="constant"))
    n.relu5 = L.ReLU(n.fc5, in_place=True)
    n.drop5 = L.Dropout(n.relu5, dropout_ratio=0.3, in_place=True)
    n.score_fr = _score(L, n.drop5, num_classes)
    n.upscore2 = _upsample(L, n.score_fr, num_classes, factor=2)
    n.score_pool3 = _score(L, n.pool3, num_classes)
    n.upscore2c = crop(n.upscore2, n.score_pool3)
    n.fuse_pool3 = L.Eltwise(n.upscore2c, n.score_pool3, operation=P.Eltwise.SUM)
    n.upscore_pool3 = _upsample(L, n.fuse_pool3, num_classes, factor=2)
    n.score_pool2 = _score(L, n.pool2, num_classes)
    n.upscore_pool3c = crop(n.upscore_pool3, n.score_pool2)
    n.fuse_pool2 = L.Eltwise(n.upscore_pool3c, n.score_pool2, operation=P.Eltwise.SUM)
    n.upscore4 = _upsample(L, n.fuse_pool2, num_classes, factor=4)
    n.score = crop(n.upscore4, n.data)
    if crf is not None:
        n.unary, n.Q0 = L.Split(n.score, ntop=2)
        crf = dict(crf)
        n.crf = L.MultiStageMeanfield(n.unary, n.Q0, n.data, param=[dict(lr_mult=crf.pop("lr_mult", 1))] * 3,
                                      multi_stage_meanfield_param=crf)
    n.loss = L.SoftmaxWithLoss(n.crf if crf is not None else n.score, n.label,
                               loss_param=dict(ignore_label=voc_digits.IGNORE))
    return n.to_proto()


def _score(L, bottom, num_classes):
    return L.Convolution(bottom, num_output=num_classes, kernel_size=1, weight_filler=dict(type="gaussian", std=0.01),
                         bias_filler=dict(type="constant"))


def _upsample(L, bottom, num_classes, factor):
    """Fixed bilinear upsampling (FCN's surgery.interp; here Caffe's bilinear filler, one filter per class)."""
    return L.Deconvolution(bottom, param=[dict(lr_mult=0)],
                           convolution_param=dict(num_output=num_classes, group=num_classes, bias_term=False,
                                                  kernel_size=2 * factor, stride=factor, pad=factor // 2,
                                                  weight_filler=dict(type="bilinear")))


def write_solver(folder, net_param, base_lr, name, seed=0):
    """The net and its Adam solver prototxt in `folder`; returns the solver's path."""
    net_path = os.path.join(folder, f"{name}.prototxt")
    with open(net_path, "w") as f:
        f.write(str(net_param))
    solver_path = os.path.join(folder, f"{name}_solver.prototxt")
    with open(solver_path, "w") as f:
        f.write(f'net: "{net_path}"\ntype: "Adam"\nbase_lr: {base_lr}\nmomentum: 0.9\nmomentum2: 0.999\n'
                f'lr_policy: "fixed"\nweight_decay: 0.0001\nmax_iter: 1000000\ndisplay: 0\n'
                f'random_seed: {seed}\nsnapshot_prefix: "{os.path.join(folder, name)}"\n')
    return solver_path


def feed(net, image, label=None):
    """Put one H x W x 3 uint8 image (and its H x W label) into the Input blobs, reshaping the net."""
    data = (image.astype(np.float64) - MEAN).transpose(2, 0, 1)[None]
    net.blobs["data"].reshape(*data.shape)
    net.blobs["data"].data[...] = data
    if label is not None:
        net.blobs["label"].reshape(1, 1, *label.shape)
        net.blobs["label"].data[...] = label[None, None]
    else:
        net.blobs["label"].reshape(1, 1, *image.shape[:2])
        net.blobs["label"].data[...] = voc_digits.IGNORE
    net.reshape()


def train(solver, pairs, iterations, seed=0, on_step=None):
    """`iterations` steps of one image each, in a seeded shuffled order; returns the loss of every step."""
    rng = np.random.RandomState(seed)
    order = np.concatenate([rng.permutation(len(pairs)) for _ in range(iterations // len(pairs) + 1)])
    losses = []
    for it in range(iterations):
        image, label = pairs[order[it]]
        if rng.rand() < 0.5:                       # mirror, FCN's only augmentation of VOC
            image, label = image[:, ::-1], label[:, ::-1]
        feed(solver.net, image, label)
        solver.step(1)
        losses.append(float(solver.net.blobs["loss"].data))
        if on_step:
            on_step(it + 1, losses)
    return losses


def scores(net, image, blob="score"):
    """(classes, H, W) scores of one image from the test net."""
    feed(net, image)
    net.forward()
    return net.blobs[blob].data[0].copy()
