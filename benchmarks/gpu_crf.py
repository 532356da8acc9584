"""On a lent GPU (benchmarks/gpu_session.sh, CRF=1): the dense CRF and MultiStageMeanfield on CUDA against the
same computation on the CPU, and their times on both.

    python -m benchmarks.gpu_crf [--out DIR]

Writes gpu_crf.json: per case the largest difference of CUDA from CPU and the seconds per call on each.
"""
import argparse
import json
import os
import time

import torch

from brewnet.core.blob import Blob
from brewnet.core.registry import create_layer
from brewnet.layers.dense_crf import dense_crf
from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text

MSMF = ('name: "crf" type: "MultiStageMeanfield" multi_stage_meanfield_param { num_iterations: 5 theta_alpha: 80 '
        'theta_beta: 13 theta_gamma: 3 spatial_filter_weight: 3 bilateral_filter_weight: 5 }')


def _timed(fn, device, rounds=3):
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(rounds):
        out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, (time.perf_counter() - start) / rounds


def dense_crf_case(device, size=256, labels=21):
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(labels, size, size, generator=g) * 2
    image = torch.rand(3, size, size, generator=g) * 255
    run = lambda: dense_crf(scores.to(device), image.to(device), 80, 13, 3, 10, 3, 5, unary_kind="scores")
    return _timed(run, device)


def msmf_case(device, size=128, labels=21):
    g = torch.Generator().manual_seed(1)
    tensors = [torch.randn(1, labels, size, size, generator=g) * 2, None, torch.rand(1, 3, size, size, generator=g) * 255]
    tensors[1] = tensors[0].clone()
    top_diff = torch.randn(1, labels, size, size, generator=g)
    layer = create_layer(parse_text(MSMF, caffe_pb2.LayerParameter()))
    bottom = []
    for t in tensors:
        blob = Blob(t.shape, device=device)
        blob.data.copy_(t)
        bottom.append(blob)
    top = [Blob((1,), device=device)]
    layer.setup(bottom, top)

    def step():
        layer.forward(bottom, top)
        top[0].diff.copy_(top_diff)
        for b in layer.blobs:
            b.diff.zero_()
        layer.backward(top, [True, True, False], bottom)
        return [top[0].data.cpu(), bottom[0].diff.cpu(), bottom[1].diff.cpu()] + [b.diff.cpu() for b in layer.blobs]
    return _timed(step, device)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    args = parser.parse_args(argv)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    results = {}
    for name, case in (("dense_crf 256x256, 21 labels, 5 iterations", dense_crf_case),
                       ("MultiStageMeanfield 128x128, 21 labels, 5 stages, forward + backward", msmf_case)):
        ref, cpu_s = case(cpu)
        got, cuda_s = case(cuda)
        ref, got = (ref, got) if isinstance(ref, list) else ([ref], [got])
        diff = max(float((a - b.cpu()).abs().max() / (a.abs().max() + 1e-12)) for a, b in zip(ref, got))
        results[name] = {"max_relative_difference": diff, "cpu_seconds": cpu_s, "cuda_seconds": cuda_s}
        print(f"{name}: CUDA vs CPU max relative difference {diff:.2e}; CPU {cpu_s:.3f} s, CUDA {cuda_s:.4f} s",
              flush=True)
    with open(os.path.join(args.out, "gpu_crf.json"), "w") as f:
        json.dump(results, f, indent=1)
    return 0 if all(r["max_relative_difference"] < 1e-3 for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
