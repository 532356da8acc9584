"""Runs crfasrnn's own deploy net, python-scripts/TVG_CRFRNN_new_deploy.prototxt (FCN-8s + MultiStageMeanfield),
on brewnet through pycaffe, as crfasrnn's demo does: caffe.Net(prototxt, caffe.TEST), an image into 'data',
forward, the scores of 'pred'.

    python scripts/crfasrnn_deploy.py CRFASRNN_CHECKOUT [--size 64] [--seed 0]

CRFASRNN_CHECKOUT is a work tree or bare clone of github.com/torrvision/crfasrnn; nothing of it is copied
into this repository, and the prototxt is used unchanged.  Its trained caffemodel cannot be fetched here, so
every parameter blob gets Gaussian values (std 0.01, as FCN's fresh layers); the input is reshaped from 500 x
500 to SIZE x SIZE (the net is fully convolutional, its 100-pixel padding keeps small inputs valid).

Prints the per-pixel sums of softmax('pred') (1 up to rounding), the MultiStageMeanfield layer's parameters,
how much the CRF moved the scores, and that backward reaches 'data' (the prototxt sets force_backward).
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

PROTOTXT = "python-scripts/TVG_CRFRNN_new_deploy.prototxt"


def read_prototxt(checkout):
    path = os.path.join(checkout, PROTOTXT)
    if os.path.isfile(path):
        with open(path) as f:
            return f.read()
    return subprocess.run(["git", "-C", checkout, "show", f"HEAD:{PROTOTXT}"], check=True,
                          capture_output=True, text=True).stdout


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkout")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import caffe

    caffe.set_mode_cpu()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "TVG_CRFRNN_new_deploy.prototxt")
        with open(path, "w") as f:
            f.write(read_prototxt(args.checkout))
        net = caffe.Net(path, caffe.TEST)
    rng = np.random.RandomState(args.seed)
    for name, blobs in net.params.items():
        if name != "inference1":        # the CRF keeps the weights its parameter message gives
            for b in blobs:
                b.data[...] = rng.normal(0, 0.01, b.data.shape)
    # An image of two flat regions with noise, BGR minus a mean as crfasrnn's demo feeds it.
    size = args.size
    image = np.full((3, size, size), -40.0)
    image[:, :, size // 2:] = 60.0
    image += rng.normal(0, 5, image.shape)
    net.blobs["data"].reshape(1, 3, size, size)
    net.blobs["data"].data[...] = image
    net.reshape()
    out = net.forward()
    pred = net.blobs["pred"].data[0]
    prob = np.exp(pred - pred.max(0)) / np.exp(pred - pred.max(0)).sum(0)
    sums = prob.sum(0)
    crf = net.layers[list(net._layer_names).index("inference1")]
    print(f"pred {tuple(net.blobs['pred'].data.shape)}; outputs {sorted(out)}")
    print(f"softmax(pred) per-pixel sums: min {sums.min():.7f} max {sums.max():.7f} over {sums.size} pixels")
    print(f"inference1: {crf.type}, {len(crf.blobs)} blobs {[tuple(b.data.shape) for b in crf.blobs]}; "
          f"spatial diagonal {crf.blobs[0].data[0, 0, 0, 0]:g}, bilateral {crf.blobs[1].data[0, 0, 0, 0]:g}, "
          f"compatibility {crf.blobs[2].data[0, 0, 0, 0]:g}")
    moved = np.abs(pred - net.blobs["unary"].data[0]).max()
    print(f"max |pred - unary| {moved:.4g}")
    net.blobs["pred"].diff[...] = rng.normal(0, 1, pred.shape)
    net.backward()
    print(f"backward: |d data| max {np.abs(net.blobs['data'].diff).max():.4g}, "
          f"|d inference1 compatibility| max {np.abs(crf.blobs[2].diff).max():.4g}")
    return 0 if np.allclose(sums, 1, atol=1e-5) else 1


if __name__ == "__main__":
    sys.exit(main())
