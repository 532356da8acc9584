"""Dense CRF mean field on the permutohedral lattice: seconds for one image.

    python -m benchmarks.dense_crf [--size 256] [--labels 21] [--iterations 5] [--rounds 5] [--threads N]
                                   [--device cpu|cuda] [--dtype float32|float64]

A random image and unary of crfasrnn's setting (theta_alpha 80, theta_beta 13, theta_gamma 3, weights 5 and
3, colours 0-255).  The time covers all of `dense_crf`: building both lattices (features fixed per image) and
the mean-field iterations; the lattice build alone and the vertex counts are reported too.  Median of rounds
after one warm-up call.
"""
import argparse
import time

import torch

from brewnet.layers import permutohedral
from brewnet.layers.dense_crf import bilateral_features, dense_crf

from .timing import machine_description, median, setup_process


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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--labels", type=int, default=21)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
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


if __name__ == "__main__":
    main()
