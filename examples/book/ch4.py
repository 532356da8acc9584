"""Chapter 4: convolution. Filters on a real image (4.1.2), the convolution theorem (4.1.4) and the
convolution layer's backward by the book's two derivations (4.2), each computed with brewnet's Convolution
layer and compared with the mathematics written out in NumPy.

Caffe's "convolution" is a cross-correlation: y[i, j] = sum_uv w[u, v] x[i + u, j + v]. The mathematicians'
convolution flips the kernel; both appear below, named.
"""
import os

import numpy as np
import torch

from brewnet import viz
from brewnet.data.idx_sets import load_idx_set

from .nets import get, net_from_text, put, set_diff, set_param
from .registry import Result, experiment

FILTERS = {
    "edges x (Sobel)": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],
    "edges y (Sobel)": [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],
    "edges (Laplacian)": [[0, 1, 0], [1, -4, 1], [0, 1, 0]],
    "blur (box)": [[1 / 9] * 3] * 3,
    "sharpen": [[0, -1, 0], [-1, 5, -1], [0, -1, 0]],
}


def conv_net(shape, num_output, kernel, pad=0, stride=1, bias=False):
    dims = " ".join(f"dim: {d}" for d in shape)
    return f"""
name: "conv" force_backward: true
layer {{ name: "x" type: "Input" top: "x" input_param {{ shape {{ {dims} }} }} }}
layer {{ name: "conv" type: "Convolution" bottom: "x" top: "y"
        convolution_param {{ num_output: {num_output} kernel_size: {kernel} pad: {pad} stride: {stride}
                             bias_term: {"true" if bias else "false"} weight_filler {{ type: "gaussian" std: 1 }} }} }}
"""


def brewnet_conv(x, w, pad=0, dtype=torch.float64):
    """y = Convolution(x) with weights w (out x in x k x k), by a brewnet net."""
    net = net_from_text(conv_net(x.shape, w.shape[0], w.shape[-1], pad=pad), dtype=dtype)
    put(net, "x", x)
    set_param(net, "conv", 0, w)
    net.forward()
    return net


def correlate_numpy(image, kernel):
    """The valid cross-correlation written out (the reference the layer is compared with)."""
    k = kernel.shape[0]
    h, w = image.shape[0] - k + 1, image.shape[1] - k + 1
    out = np.zeros((h, w))
    for u in range(k):
        for v in range(k):
            out += kernel[u, v] * image[u:u + h, v:v + w]
    return out


def real_image(quick):
    """Grace Hopper's portrait from matplotlib's sample data, grey, 0..1; a bundled digit upscaled otherwise."""
    import matplotlib
    path = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data", "grace_hopper.jpg")
    if os.path.exists(path):
        from PIL import Image
        img = Image.open(path).convert("L")
        img = img.resize((64, 80) if quick else (256, 320))
        return np.asarray(img, dtype=np.float64) / 255.0, "grace_hopper.jpg (matplotlib sample data)"
    digit = load_idx_set().test_images[0].astype(np.float64) / 255.0
    return np.kron(digit, np.ones((4, 4))), "bundled digit, upscaled x4"


@experiment("4.1.2", "convolution filters on a real image", book="figures: edges, blur, sharpen")
def filters(ctx):
    image, source = real_image(ctx.quick)
    kernels = np.array(list(FILTERS.values()), dtype=np.float64)[:, None]
    net = brewnet_conv(image[None, None], kernels, pad=1)
    outputs = get(net.blobs["y"])[0]
    padded = np.pad(image, 1)
    errors = [np.abs(outputs[i] - correlate_numpy(padded, kernels[i, 0])).max() for i in range(len(kernels))]
    path = ctx.figure("filters.png")
    viz.image_grid(path, np.concatenate([image[None], np.abs(outputs[:3]), outputs[3:]]), ncols=3,
                   titles=["original"] + list(FILTERS), title="4.1.2: brewnet Convolution, 3x3 filters")
    ours = (f"figure filters.png ({len(FILTERS)} filters on a {image.shape[1]}x{image.shape[0]} image); "
            f"Convolution vs the written-out correlation: max |diff| {max(errors):.1e}")
    return Result(ours=ours, numbers={"max_error": max(errors), "outputs": outputs}, data=source)


@experiment("4.1.4", "convolution = product in the Fourier domain", book="the theorem (numbers)")
def fourier(ctx):
    rng = np.random.RandomState(0)
    size, k = (16, 5) if ctx.quick else (64, 9)
    x, w = rng.randn(size, size), rng.randn(k, k)
    # The full linear convolution x * w is the Convolution layer with the flipped kernel and pad k - 1.
    net = brewnet_conv(x[None, None], w[::-1, ::-1].copy()[None, None], pad=k - 1)
    conv = get(net.blobs["y"])[0, 0]
    n = size + k - 1
    fourier = np.real(np.fft.ifft2(np.fft.fft2(x, (n, n)) * np.fft.fft2(w, (n, n))))
    error = np.abs(conv - fourier).max()
    ctx.say(f"  |x * w - IFFT(FFT(x) FFT(w))| max {error:.2e} over {n}x{n} outputs (scale {np.abs(conv).max():.1f})")
    return Result(ours=f"max |Convolution - IFFT(FFT(x)·FFT(w))| = {error:.1e} ({size}x{size} signal, "
                       f"{k}x{k} kernel, float64)", numbers={"max_error": error, "scale": np.abs(conv).max()},
                  data="Gaussian noise, seed 0")


def im2col(x, k):
    """C*k*k x (H'*W') columns of one image C x H x W (stride 1, no pad): the book's expansion."""
    c, h, w = x.shape
    oh, ow = h - k + 1, w - k + 1
    cols = np.zeros((c, k, k, oh, ow))
    for u in range(k):
        for v in range(k):
            cols[:, u, v] = x[:, u:u + oh, v:v + ow]
    return cols.reshape(c * k * k, oh * ow)


def col2im(cols, shape, k):
    c, h, w = shape
    oh, ow = h - k + 1, w - k + 1
    cols = cols.reshape(c, k, k, oh, ow)
    x = np.zeros(shape)
    for u in range(k):
        for v in range(k):
            x[:, u:u + oh, v:v + ow] += cols[:, u, v]
    return x


def backward_im2col(x, w, dy):
    """dW = dY · col(X)^T summed over images; dX = col2im(W^T · dY)."""
    k, out = w.shape[-1], w.shape[0]
    dw, dx = np.zeros_like(w), np.zeros_like(x)
    for n in range(len(x)):
        cols, d = im2col(x[n], k), dy[n].reshape(out, -1)
        dw += (d @ cols.T).reshape(w.shape)
        dx[n] = col2im(w.reshape(out, -1).T @ d, x[n].shape, k)
    return dx, dw


def backward_rotated(x, w, dy):
    """dX = full correlation of dY (padded k - 1) with the 180°-rotated kernel; dW = correlation of X with dY."""
    k = w.shape[-1]
    rot = w[:, :, ::-1, ::-1]
    dx, dw = np.zeros_like(x), np.zeros_like(w)
    for n in range(len(x)):
        padded = np.pad(dy[n], ((0, 0), (k - 1, k - 1), (k - 1, k - 1)))
        for o in range(w.shape[0]):
            for c in range(w.shape[1]):
                dx[n, c] += correlate_numpy(padded[o], rot[o, c])
                dw[o, c] += correlate_numpy(x[n, c], dy[n, o])
    return dx, dw


@experiment("4.2", "convolution backward: im2col and rotated-kernel derivations", book="the derivations (numbers)")
def conv_backward(ctx):
    rng = np.random.RandomState(0)
    shape, out, k = ((2, 3, 7, 7), 4, 3) if ctx.quick else ((4, 8, 16, 16), 16, 5)
    x, w = rng.randn(*shape), rng.randn(out, shape[1], k, k)
    net = brewnet_conv(x, w)
    dy = rng.randn(*net.blobs["y"].shape)
    set_diff(net, "y", dy)
    net.clear_param_diffs()
    net.backward()
    dx_net, dw_net = get(net.blobs["x"], diff=True), get(net.layer_by_name("conv").blobs[0], diff=True)
    errors = {}
    for name, derive in (("im2col", backward_im2col), ("rotated kernel", backward_rotated)):
        dx, dw = derive(x, w, dy)
        errors[name] = (np.abs(dx - dx_net).max(), np.abs(dw - dw_net).max())
        ctx.say(f"  {name}: max |dX - brewnet| {errors[name][0]:.1e}, max |dW - brewnet| {errors[name][1]:.1e}")
    worst = max(max(e) for e in errors.values())
    ours = ("brewnet's Convolution backward = both derivations: " +
            ", ".join(f"{n} max |d| {max(e):.1e}" for n, e in errors.items()) +
            f" (x {'x'.join(map(str, shape))}, {out} filters {k}x{k}, float64)")
    return Result(ours=ours, numbers={"errors": errors, "worst": worst, "scale": np.abs(dx_net).max()},
                  data="Gaussian noise, seed 0")
