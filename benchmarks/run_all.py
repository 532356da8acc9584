"""Run every benchmark and rewrite benchmarks/RESULTS.md:  python -m benchmarks.run_all  (or `make bench`).

    python -m benchmarks.run_all [--quick] [--threads N] [--skip-data] [--output PATH]

Sections: the machine and versions, then benchmarks/models.py (whole nets: train iteration, forward, peak
memory), benchmarks/layers.py (heavy layers, forward + backward) and benchmarks/data.py (the Data layer's
LMDB throughput, in a subprocess), each with the command that reproduces it.  A full run takes about 10 minutes
on a quiet 2-core machine.
"""
import argparse
import datetime
import os
import subprocess
import sys
import time


from . import layers, models
from .timing import machine_description, setup_process

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

TARGETS = {"lenet": (1.05, 1.05), "caffenet": (1.10, None), "googlenet": (1.10, None), "resnet50": (1.10, None)}


NOTES = """## Where brewnet is still slower, and why

- Results land in the blobs' own memory, as in Caffe (Convolution, Pooling, LRN, Im2col, SPP and the bottom
  diffs of Convolution, Pooling, LRN, BatchNorm, SoftmaxWithLoss, Crop): a LeNet forward now takes 0 minor
  page faults (538 when Convolution handed the top a fresh tensor each forward), and NumPy arrays held on
  blobs see each new forward/backward.  What it costs: torch's `aten.convolution.out` (like
  `convolution_backward.out` and `native_batch_norm_backward.out`) is a generated wrapper that computes into a
  temporary and copies into `out`, so each conv output and each stored bottom diff takes one extra pass
  (LeNet forward: 10 `aten::copy_` per forward, about 0.3 ms of 8).  On ResNet-50, whose activations are
  large, that costs about 5 % of a training iteration: 1644 ms against 1569 ms with the old adopt-a-fresh-
  tensor code, A/B in one session (Convolution forward +22 ms, Convolution backward +20 ms, BatchNorm
  backward +22 ms, whose in-place dx must land in the diff it reads).  A kernel that writes its output
  directly (none is exposed for CPU convolution) would remove it.  The pooling kernels
  (`max_pool2d_with_indices.out`, `avg_pool2d.out`, their `grad_input` backwards), InnerProduct, ReLU and
  Eltwise write in place natively.
- LeNet forward, the rest of the gap: SoftmaxWithLoss checks the label range (one reduction and a host sync)
  and takes Caffe's clamped log of the softmax (86 us against 14 us for `F.cross_entropy`), and every layer
  runs its reshape checks in Python (20-50 us a layer).
- MAX pooling skips its argmax when the Net says the layer's backward never runs (`Layer.need_backward`,
  set from the Net's backward analysis: deploy/TEST nets without force_backward) and then takes the window
  maxima as separable column/row maxima, 3-4x faster than torch's CPU kernel, which always computes the
  argmax (64x20x24x24, 2x2/2: 0.9 ms vs 2.5 ms; 16x96x55x55, 3x3/2: 5.4 ms vs 22 ms).  The nets timed here
  are TRAIN nets (`net.forward()` may be followed by backward), so their pooling still keeps the argmax, as
  does PyTorch's `max_pool2d` even under no_grad.  ReLU likewise keeps no sign mask in forward-only nets.
- ResNet-50: BatchNorm and Scale are two layers (Caffe's design) where PyTorch runs one fused affine batch
  norm; an in-place Scale must keep a copy of its input for the scale gradient.  The solver's update runs
  Caffe's per-parameter loop on the CPU (161 parameter blobs, 53 x 3 BatchNorm statistics included): its
  `torch._foreach_*` form (`SGDSolver.batched_update`, the default on accelerators, same numbers) measured
  slower here (33 ms vs 28 ms per update), since the loop finishes each parameter while it is in cache.
- Peak memory of GoogLeNet and ResNet-50: brewnet keeps, as Caffe does, every blob's data and diff for the
  whole iteration (PyTorch frees activations and gradients during backward), plus per-layer state: BatchNorm's
  normalized copy, in-place Scale's input copy, ReLU's sign mask.  A diff shared with the top for in-place and
  Split/Eltwise-SUM bottoms, and dropping x_norm for in-place BatchNorm, are the next steps; both need care
  where pycaffe users read diffs.
- BatchNorm alone (layer table): the normalized values are computed once and then copied into the top, so
  that backward keeps its own copy whatever later in-place layers do (one extra pass over the blob).
- Timings on this shared machine move by +-5-10 % between runs, more for sub-10 ms figures with 2 threads
  while other jobs run (a 2-thread op waits for a descheduled worker); `--threads 1` gives steadier ratios.
"""


def _verdict(rows):
    lines = []
    for r in rows:
        train_target, forward_target = TARGETS.get(r["model"], (None, None))
        for what, ratio, target in (("train", r["train_ratio"], train_target),
                                    ("forward", r["forward_ratio"], forward_target)):
            if target is not None:
                lines.append(f"- {r['model']} {what} ratio {ratio:.3f} (target <= {target:.2f}): "
                             f"{'met' if ratio <= target else 'NOT met'}")
    return "\n".join(lines)


def data_section(threads):
    command = [sys.executable, os.path.join("benchmarks", "data.py"), "--mnist-records", "20000",
               "--jpeg-records", "300", "--batches", "200", "--jpeg-batches", "8"]
    out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    shown = "python benchmarks/data.py --mnist-records 20000 --jpeg-records 300 --batches 200 --jpeg-batches 8"
    if out.returncode:
        return f"`{shown}` failed:\n\n```\n{out.stderr[-2000:]}\n```\n"
    return f"Command: `{shown}`\n\n{out.stdout.strip()}\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run, not for the record)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--skip-data", action="store_true")
    parser.add_argument("--output", default=os.path.join(HERE, "RESULTS.md"))
    args = parser.parse_args(argv)
    setup_process(args.threads)
    progress = lambda message: print(message, file=sys.stderr, flush=True)   # noqa: E731
    started = time.perf_counter()
    machine = machine_description()
    flags = (" --quick" if args.quick else "") + (f" --threads {args.threads}" if args.threads else "")

    model_rows = models.run(list(models.MODELS), quick=args.quick, memory=True, progress=progress)
    layer_rows = layers.run(quick=args.quick, progress=progress)
    data = "(skipped)\n" if args.skip_data else data_section(args.threads)
    elapsed = time.perf_counter() - started
    machine["load_average_after"] = "%.2f %.2f %.2f" % os.getloadavg()

    text = f"""# Benchmark results

Written by `python -m benchmarks.run_all{flags}` (`make bench`) on {datetime.datetime.now():%Y-%m-%d %H:%M},
in {elapsed / 60:.1f} minutes.  Every figure compares brewnet with a plain PyTorch eager program of the same
computation, run in the same process, rounds interleaved; ratio = brewnet / PyTorch (below 1: brewnet is faster).

## Machine

| | |
| --- | --- |
| CPU | {machine['cpu']} ({machine['cores']} cores visible, shared with other jobs) |
| torch intra-op threads | {machine['torch_threads']} |
| load average before / after | {machine['load_average']} / {machine['load_average_after']} |
| Python / torch / NumPy | {machine['python']} / {machine['torch']} / {machine['numpy']} |
| oneDNN (mkldnn) available | {machine['mkldnn']} |
| platform | {machine['platform']} |

Denormal floats are flushed to zero in both contenders (`torch.set_flush_denormal(True)`, see
`benchmarks/timing.py`): without it, single iterations of either side swing 10x as random-data training pushes
values into the denormal range.  The machine is shared, so absolute times drift between runs; the ratios are
medians of per-round ratios, which cancels most of that drift, but expect +-5 % between runs.

## Whole nets (`python -m benchmarks.models{flags}`)

Input layers with random data replace the data layers (data loading is timed separately below).  brewnet:
an SGDSolver's `step(1)` (momentum 0.9, weight decay 5e-4: clear diffs, forward, backward, Caffe's update) and
`net.forward()`.  PyTorch: the same layers as `torch.nn` modules (`benchmarks/torch_nets.py`, built from the same
prototxt; BatchNorm + Scale as one affine `nn.BatchNorm2d`), `zero_grad`, forward, `loss.backward()`,
`torch.optim.SGD(momentum=0.9, weight_decay=5e-4).step()`, `loss.item()`; forward under `torch.no_grad()`.
`python -m benchmarks.models --check` copies brewnet's initial weights into the PyTorch model and shows both
compute the same loss (dropout off) for all five nets.  Peak memory: growth of the peak RSS of a fresh process
per model and framework over building the model and three training iterations.  ResNet-50 is generated with
NetSpec (`benchmarks/models.py:resnet50`); the others are the BVLC prototxts (`../shared/golden/models`).

{models.table(model_rows)}

Targets (issue 7):

{_verdict(model_rows)}

{NOTES}
## Layers (`python -m benchmarks.layers{flags}`)

Forward + backward of one layer; PyTorch: the torch.nn.functional op with autograd (LSTM: Caffe's LSTM
written with F.linear / sigmoid / tanh in a Python time loop).  Target (issue 3): every ratio <= 1.2.

{layers.table(layer_rows)}

## Data path (`benchmarks/data.py`)

LMDB -> Data layer (reader thread + prefetch thread, TRAIN phase) -> transformed float32 batches, records per
second taken by the consumer.

{data}"""
    with open(args.output, "w") as f:
        f.write(text)
    progress(f"wrote {args.output} ({elapsed / 60:.1f} min)")


if __name__ == "__main__":
    main()
