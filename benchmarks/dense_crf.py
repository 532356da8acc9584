"""Dense CRF mean field on the permutohedral lattice: seconds for one image.

    python -m benchmarks.dense_crf [--size 256] [--labels 21] [--iterations 5] [--rounds 5] [--threads N]
                                   [--device cpu|cuda] [--dtype float32|float64] [--compare-threads 1 2]

A random image and unary of crfasrnn's setting (theta_alpha 80, theta_beta 13, theta_gamma 3, weights 5 and
3, colours 0-255).  The time covers all of `dense_crf`: building both lattices (features fixed per image) and
the mean-field iterations; the lattice build alone and the vertex counts are reported too.  Median of rounds
after one warm-up call.

When pydensecrf (PyPI `pydensecrf2`, Krähenbühl's own C++ densecrf; `pip install brewnet[bench]`) imports, the
same unary and image also go through it, set up as brewnet's definition (NORMALIZE_AFTER kernels, Potts compat
= the weights, see `densecrf_reference`), both timed interleaved round by round (median of the per-round
ratios) at each of `--compare-threads` torch thread counts, with the agreement of their marginals.  densecrf is
single threaded whatever the count (it is the same program in every row), so the one-thread row is the fair
comparison; the others show what torch's threads add.
"""
import argparse
import time

import numpy as np
import torch

from brewnet.layers import permutohedral
from brewnet.layers.dense_crf import bilateral_features, dense_crf

from .timing import interleaved, machine_description, median, paired_ratio, setup_process


def _timed(fn, rounds, device):
    fn()
    times = []
    for _ in range(rounds):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return median(times)


def densecrf_reference(unary, image, theta_alpha, theta_beta, theta_gamma, w_bilateral, w_spatial, iterations):
    """pydensecrf's marginals (L, H, W) for a float32 (L, H, W) unary of energies and a uint8 (3, H, W) image.

    brewnet's row-normalised messages are densecrf's NORMALIZE_AFTER (out = K(Q) / K(1); the default,
    NORMALIZE_SYMMETRIC, is D^-1/2 K D^-1/2 Q instead); densecrf's Potts compat w adds +w K(Q)_l to label l's
    logit, brewnet's Potts subtracts w (1 - K(Q)_l): the same after the softmax."""
    import pydensecrf.densecrf as dcrf
    labels, height, width = unary.shape
    crf = dcrf.DenseCRF2D(width, height, labels)
    crf.setUnaryEnergy(np.ascontiguousarray(unary.reshape(labels, -1), dtype=np.float32))
    crf.addPairwiseGaussian(sxy=theta_gamma, compat=w_spatial, normalization=dcrf.NORMALIZE_AFTER)
    crf.addPairwiseBilateral(sxy=theta_alpha, srgb=theta_beta, rgbim=np.ascontiguousarray(image.transpose(1, 2, 0)),
                             compat=w_bilateral, normalization=dcrf.NORMALIZE_AFTER)
    return np.asarray(crf.inference(iterations), dtype=np.float32).reshape(labels, height, width)


def _against_densecrf(unary, image, thetas, weights, iterations, rounds, torch_threads=1):
    """Times and agreement of brewnet (at `torch_threads`) and pydensecrf on the same (CPU, float32) problem."""
    u, img = unary.cpu().float(), image.cpu().round().clamp(0, 255)
    u_np, img_np = u.numpy(), img.to(torch.uint8).numpy()
    threads = torch.get_num_threads()
    torch.set_num_threads(torch_threads)
    try:
        times = interleaved({"brewnet": lambda: dense_crf(u, img, *thetas, *weights, iterations),
                             "densecrf": lambda: densecrf_reference(u_np, img_np, *thetas, *weights, iterations)},
                            rounds)
    finally:
        torch.set_num_threads(threads)
    q_brewnet = dense_crf(u, img, *thetas, *weights, iterations).numpy()
    q_densecrf = densecrf_reference(u_np, img_np, *thetas, *weights, iterations)
    diff = np.abs(q_brewnet - q_densecrf)
    agree = (q_brewnet.argmax(0) == q_densecrf.argmax(0)).mean()
    print(f"  against pydensecrf2 (float32 CPU, {torch_threads} torch thread(s), interleaved, median of {rounds}): "
          f"brewnet {median(times['brewnet']):.3f} s, pydensecrf {median(times['densecrf']):.3f} s, "
          f"ratio brewnet / pydensecrf2 {paired_ratio(times, 'brewnet', 'densecrf'):.2f}")
    print(f"  agreement: argmax {agree:.4f} of pixels, |Q_brewnet - Q_densecrf| mean {diff.mean():.2e}, "
          f"max {diff.max():.2e}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--labels", type=int, default=21)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--compare-threads", type=int, nargs="+", default=[1, 2],
                        help="torch thread counts of the side-by-side runs against pydensecrf")
    args = parser.parse_args(argv)
    setup_process(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    g = torch.Generator().manual_seed(0)
    image = (torch.rand(3, args.size, args.size, generator=g) * 255).to(device, dtype)
    unary = torch.randn(args.labels, args.size, args.size, generator=g).to(device, dtype)
    thetas, weights = (80.0, 13.0, 3.0), (5.0, 3.0)

    total = _timed(lambda: dense_crf(unary, image, *thetas, *weights, args.iterations), args.rounds, device)
    features = bilateral_features(image, thetas[0], thetas[1])
    build = _timed(lambda: permutohedral.build(features), args.rounds, device)
    lattice = permutohedral.build(features)
    info = machine_description()
    print(f"dense CRF, {args.size}x{args.size} image, {args.labels} labels, {args.iterations} iterations, "
          f"{args.dtype} on {device} ({info['cpu']}, torch {info['torch']}, {info['torch_threads']} threads, "
          f"load {info['load_average']})")
    print(f"  bilateral lattice: {lattice.num_vertices} vertices for {lattice.num_points} pixels, "
          f"build {build:.3f} s")
    print(f"  dense_crf (both lattices + mean field): {total:.3f} s (median of {args.rounds})")
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        print("  pydensecrf not importable (pip install brewnet[bench]): no side-by-side run")
        return
    for threads in args.compare_threads:
        _against_densecrf(unary, image, thetas, weights, args.iterations, args.rounds, threads)


if __name__ == "__main__":
    main()
