"""The prepared GPU check of issue 7, for a session that is lent a CUDA machine (one run, then give it back).

    python -m benchmarks.gpu_check --out $OUT            # on the GPU machine
    python -m benchmarks.gpu_check --device cpu --quick  # a dry run of the same code paths on the CPU

1. correctness: LeNet and ResNet-50 with the same initial weights and inputs, a few SGD iterations on the CPU
   and on the device: the parameters must agree (cuDNN sums in another order: rtol 1e-3, atol 1e-5);
2. the compiled path (`-compile`, core/capture.py): the same iterations with forward + backward replayed from a
   CUDA graph must give the eager device path's parameters (cuDNN deterministic for both: identical);
3. speed: train iteration and forward of brewnet against a PyTorch eager program of the same model on the
   device, fp32, fp32 with -compile, and bf16 (brewnet `-precision bf16` vs torch.autocast), images/s;
4. writes gpu_results.json and gpu_results.md (a table to paste into benchmarks/RESULTS.md) to --out.
"""
import argparse
import json
import os
import time

import torch

from brewnet.core import common
from brewnet.core.precision import Precision

from .models import MODELS, build, torch_forward, torch_train_step
from .timing import median, paired_ratio, setup_process

CHECK_ITERATIONS = 3


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _use(device):
    if device.type == "cuda":
        common.set_device(device.index or 0)
        common.set_mode_gpu()
    else:
        common.set_mode_cpu()


def parameters_after(name, device, iterations=CHECK_ITERATIONS, compile_=False):
    """brewnet's learnable parameters after a few SGD steps of `name` on `device` (dropout off)."""
    _use(device)
    common.set_random_seed(1701)
    solver, _, _, _ = build(name, seed=0, dropout=False)
    solver.compile = compile_
    for _ in range(iterations):
        solver.step(1)
    _sync(device)
    params = [b.data.detach().to("cpu").clone() for b in solver.net.learnable_params]
    solver.close()
    common.set_mode_cpu()
    return params


def check_against_cpu(name, device):
    cpu = parameters_after(name, torch.device("cpu"))
    dev = parameters_after(name, device)
    worst = 0.0
    for a, b in zip(cpu, dev):
        scale = torch.clamp(a.abs(), min=1e-2)
        worst = max(worst, float(((a - b).abs() / scale).max()))
    ok = all(torch.allclose(a, b, rtol=1e-3, atol=1e-5) for a, b in zip(cpu, dev))
    return {"model": name, "iterations": CHECK_ITERATIONS, "params_close": ok, "worst_rel_diff": worst}


def check_compiled(name, device):
    """Eager vs compiled on the device, cuDNN deterministic for both: the replay runs the same kernels."""
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        eager = parameters_after(name, device)
        compiled = parameters_after(name, device, compile_=True)
    finally:
        torch.backends.cudnn.deterministic = False
    worst = max(float((a - b).abs().max()) for a, b in zip(eager, compiled))
    return {"model": name, "iterations": CHECK_ITERATIONS, "identical": worst == 0.0, "max_abs_diff": worst}


def time_on_device(name, device, precision, rounds):
    compile_ = precision.endswith("+compile")
    precision = precision.replace("+compile", "")
    _use(device)
    solver, model, opt, inputs = build(name)
    solver.compile = compile_
    model.to(device)
    inputs = {k: v.to(device) for k, v in inputs.items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=5e-4)
    solver.set_precision(precision)
    low = Precision(precision)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if precision == "bf16" else None

    def brewnet_train():
        solver.step(1)
        _sync(device)

    def torch_train():
        if autocast:
            with autocast():
                torch_train_step(model, opt, inputs)
        else:
            torch_train_step(model, opt, inputs)
        _sync(device)

    def brewnet_forward():
        with low.compute(device):
            solver.net.forward()
        _sync(device)

    def torch_fwd():
        if autocast:
            with autocast():
                torch_forward(model, inputs)
        else:
            torch_forward(model, inputs)
        _sync(device)

    times = {"brewnet_train": [], "pytorch_train": [], "brewnet_forward": [], "pytorch_forward": []}
    for fn in (brewnet_train, torch_train, brewnet_forward, torch_fwd):   # warm-up (cuDNN autotuning)
        fn()
        fn()
    for _ in range(rounds):
        for key, fn in (("brewnet_train", brewnet_train), ("pytorch_train", torch_train),
                        ("brewnet_forward", brewnet_forward), ("pytorch_forward", torch_fwd)):
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    solver.close()
    common.set_mode_cpu()
    batch = MODELS[name]["batch"]
    train = {"brewnet": times["brewnet_train"], "pytorch": times["pytorch_train"]}
    forward = {"brewnet": times["brewnet_forward"], "pytorch": times["pytorch_forward"]}
    return {
        "model": name, "precision": precision + (" -compile" if compile_ else ""), "batch": batch,
        "train_brewnet_ms": 1000 * median(times["brewnet_train"]),
        "train_pytorch_ms": 1000 * median(times["pytorch_train"]),
        "train_ratio": paired_ratio(train, "brewnet", "pytorch"),
        "forward_ratio": paired_ratio(forward, "brewnet", "pytorch"),
        "train_images_per_s_brewnet": batch / median(times["brewnet_train"]),
        "train_images_per_s_pytorch": batch / median(times["pytorch_train"]),
    }


def _guarded(fn, name, *args):
    try:
        return fn(name, *args)
    except Exception as e:      # noqa: BLE001 - reported, with the traceback's last line, in the results
        import traceback
        common.set_mode_cpu()
        return {"model": name, "identical": False, "max_abs_diff": float("nan"),
                "error": f"{type(e).__name__}: {e}", "where": traceback.format_exc().strip().splitlines()[-3:]}


def markdown(device_name, checks, timings, compiled):
    lines = [f"## CUDA ({device_name})", "", "| model | precision | batch | train brewnet ms | train PyTorch ms | "
             "train ratio | forward ratio | images/s brewnet | images/s PyTorch |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in timings:
        lines.append(f"| {r['model']} | {r['precision']} | {r['batch']} | {r['train_brewnet_ms']:.1f} | "
                     f"{r['train_pytorch_ms']:.1f} | {r['train_ratio']:.3f} | {r['forward_ratio']:.3f} | "
                     f"{r['train_images_per_s_brewnet']:.0f} | {r['train_images_per_s_pytorch']:.0f} |")
    lines += ["", "CPU vs device parameters after a few SGD iterations:", ""]
    for c in checks:
        lines.append(f"- {c['model']}: {'agree' if c['params_close'] else 'DIFFER'} "
                     f"(worst relative difference {c['worst_rel_diff']:.2e} after {c['iterations']} iterations)")
    lines += ["", "-compile (CUDA graph replay) vs eager on the device, cuDNN deterministic:", ""]
    for c in compiled:
        if "error" in c:
            lines.append(f"- {c['model']}: FAILED: {c['error']}")
            continue
        lines.append(f"- {c['model']}: {'identical' if c['identical'] else 'DIFFER'} "
                     f"(max abs difference {c['max_abs_diff']:.2e} after {c['iterations']} iterations)")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--quick", action="store_true", help="few rounds (a dry run)")
    parser.add_argument("--models", default="lenet,resnet50")
    args = parser.parse_args(argv)
    setup_process()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device (use --device cpu for a dry run)")
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu dry run"
    names = args.models.split(",")
    checks = [check_against_cpu(n, device) for n in names]
    # The compiled path has never run on a GPU before its first lent session: a failure there is reported in
    # the results (with its message) instead of losing the other figures.
    compiled = [_guarded(check_compiled, n, device) for n in names] if device.type == "cuda" else []
    rounds = 3 if args.quick else 20
    variants = ("fp32", "fp32+compile", "bf16")
    timings, failed = [], []
    for n in names:
        for p in variants:
            row = _guarded(time_on_device, n, device, p, rounds)
            if "error" in row:
                failed.append(f"{n} {p}: {row['error']}")
            else:
                timings.append(row)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "gpu_results.json"), "w") as f:
        json.dump({"device": device_name, "torch": torch.__version__, "checks": checks, "compiled": compiled,
                   "timings": timings, "failed_timings": failed}, f,
                  indent=1)
    text = markdown(device_name, checks, timings, compiled)
    if failed:
        text += "\nTimings that failed:\n\n" + "".join(f"- {line}\n" for line in failed)
    with open(os.path.join(args.out, "gpu_results.md"), "w") as f:
        f.write(text)
    print(text)
    ok = all(c["params_close"] for c in checks) and all(c["identical"] for c in compiled) and not failed
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
