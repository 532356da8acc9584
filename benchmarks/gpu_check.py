"""The prepared GPU check of issue 7, for a session that is lent a CUDA machine (one run, then give it back).

    bash benchmarks/gpu_prepare.sh                      # here: wheels and golden models into .gpu/ (ignored)
    run(command="bash benchmarks/gpu_session.sh", carry=[".gpu"], timeout_s=300)     # the device tool
    python -m benchmarks.gpu_check --device cpu --quick --models lenet:64,resnet50_thin:2   # a CPU dry run

Sections, in this order; each one's failure is reported in the results instead of stopping the others, and
the results are rewritten to --out after every section (a run cut off by its time limit keeps what it did):

1. environment: device, torch / CUDA / cuDNN versions, the TF32 flags GPU mode leaves, `caffe device_query`;
2. golden layers: every case of tests/golden/layers on the device, eagerly and replayed from a CUDA graph
   (benchmarks/gpu_golden.py), against BVLC Caffe's numbers;
   then DEVICE_TESTS, tests that compare two runs on one device, under pytest in GPU mode;
3. CPU vs device: LeNet and ResNet-50 with the same initial weights and inputs, a few SGD iterations on the
   CPU and on the device: per blob, the device may differ from the CPU (normwise) 10x as much as the CPU
   differs from itself at another thread count (check_against_cpu says why elementwise tolerances fail);
4. the compiled path (`-compile`, runtime/capture.py): the same iterations replayed from a CUDA graph must give
   the eager device path's parameters (cuDNN deterministic for both: identical);
5. speed: train iteration and forward of brewnet against a PyTorch eager program of the same model on the
   device (same process, same float32 / TF32 flags), fp32, fp32 with -compile, and bf16 (brewnet
   `-precision bf16` vs torch.autocast), images/s; ResNet-50 at batch 8 (launch-bound) and 32, and the
   thin ResNet-50 (benchmarks/models.py: the host's per-layer work alone); ResNet-50 also with the solver
   reading the loss before its update ("read-first", Caffe's order; the default reads it after);
6. the demo on the GPU: `python -m examples.mnist.demo --gpu 0 --iterations 2000`, eager and -compile
   (LMDB data, prefetch threads, test net, on CUDA): test accuracy and time;
7. data parallel: `caffe train -gpu 0` as one rank of a torchrun job (NCCL, all-reduce, rank 0 tests);
8. torch.profiler tables of three ResNet-50 training steps at batch 8 and 32, brewnet's and PyTorch's
   (profile_resnet50_<batch>.txt): where host and device time go.

Writes gpu_results.json and gpu_results.md (the text to paste into benchmarks/RESULTS.md) to --out.
"""
import argparse
import contextlib
import json
import os
import subprocess
import sys
import time

import torch

from brewnet.core import common
from brewnet.runtime.precision import Precision

from . import gpu_golden
from .models import GOLDEN, MODELS, build, torch_forward, torch_train_step
from .timing import median, paired_ratio, setup_process

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHECK_ITERATIONS = 3

# The timed variants of every model, and for ResNet-50 the same with the loss read before the update (Caffe's
# order), which shows what reading it after the update (the default on a GPU) gains.
VARIANTS = ("fp32", "fp32+compile", "bf16")
READ_FIRST_VARIANTS = ("fp32+readfirst", "fp32+compile+readfirst")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _use(device):
    if device.type == "cuda":
        common.set_device(device.index or 0)
        common.set_mode_gpu()
    else:
        common.set_mode_cpu()


def parameters_after(name, device, iterations=CHECK_ITERATIONS, compile_=False, threads=None):
    """brewnet's learnable parameters after a few SGD steps of `name` on `device` (dropout off); on the CPU
    with `threads` torch threads if given (another summation order)."""
    _use(device)
    saved_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        common.set_random_seed(1701)
        solver, _, _, _ = build(name, seed=0, dropout=False)
        solver.compile = compile_
        for _ in range(iterations):
            solver.step(1)
        _sync(device)
        params = [b.data.detach().to("cpu").clone() for b in solver.net.learnable_params]
        solver.close()
    finally:
        torch.set_num_threads(saved_threads)
        common.set_mode_cpu()
    return params


def _normwise(a, b):
    """||a - b|| / ||a|| per parameter blob (0 for two zero blobs)."""
    return [float((x - y).norm() / x.norm().clamp(min=1e-30)) for x, y in zip(a, b)]


def check_against_cpu(name, device):
    """The device's parameters after a few SGD steps against the CPU's, judged by how far the CPU moves from
    itself when only the summation order changes (1 thread against all).  Elementwise tolerances cannot
    judge these nets: a Scale bias starts at 0 and its gradient is a sum that cancels, and BatchNorm over a
    few values per channel (ResNet-50's last stages at batch 8, the thin net's 1x1 maps at batch 2) turns
    rounding into O(1) differences within 3 steps; ResNet-50 on the CPU alone, 1 thread against 2, already
    differs by 49% normwise in such a blob.  The device passes when no blob differs from the CPU more than
    10x the CPU's own spread (or 1e-4, where the CPU does not move)."""
    cpu = parameters_after(name, torch.device("cpu"))
    cpu_1 = parameters_after(name, torch.device("cpu"), threads=1)
    dev = parameters_after(name, device)
    spread, diff = _normwise(cpu, cpu_1), _normwise(cpu, dev)
    ratios = [d / max(s, 1e-5) for s, d in zip(spread, diff)]
    worst = max(range(len(ratios)), key=ratios.__getitem__)
    ok = all(d <= max(10 * s, 1e-4) for s, d in zip(spread, diff))
    return {"model": name, "iterations": CHECK_ITERATIONS, "params_close": ok,
            "worst_rel_diff": max(diff), "cpu_spread": max(spread), "worst_blob": worst,
            "worst_blob_diff": diff[worst], "worst_blob_spread": spread[worst],
            "threads": torch.get_num_threads()}


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


@contextlib.contextmanager
def batch_of(name, batch):
    """MODELS[name] at another batch size for a while (models.build reads it)."""
    saved = MODELS[name]["batch"]
    MODELS[name]["batch"] = batch
    try:
        yield
    finally:
        MODELS[name]["batch"] = saved


def time_on_device(name, device, precision, rounds, batch=None):
    """`precision`: fp32 / bf16, with "+compile" for the compiled path and "+readfirst" for the solver reading
    the loss before it issues the update (Caffe's order; runtime/late_read.py: what reading late saves)."""
    compile_, read_first = "+compile" in precision, "+readfirst" in precision
    precision = precision.replace("+compile", "").replace("+readfirst", "")
    _use(device)
    with batch_of(name, batch or MODELS[name]["batch"]):
        solver, model, opt, inputs = build(name)
        batch = MODELS[name]["batch"]
    solver.compile = compile_
    solver.read_after_update = not read_first
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

    # Training rounds first, then forward rounds, each pair interleaved: an eager forward between two
    # compiled steps moves the tops to fresh memory, so the next step would record its graph again (what a
    # pycaffe loop mixing net.forward() and solver.step() gets; a training loop never does it).
    times = {"brewnet_train": [], "pytorch_train": [], "brewnet_forward": [], "pytorch_forward": []}
    for pair in ((("brewnet_train", brewnet_train), ("pytorch_train", torch_train)),
                 (("brewnet_forward", brewnet_forward), ("pytorch_forward", torch_fwd))):
        for _, fn in pair:                  # warm-up (cuDNN autotuning, the recording)
            fn()
            fn()
        for _ in range(rounds):
            for key, fn in pair:
                start = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - start)
    solver.close()
    common.set_mode_cpu()
    train = {"brewnet": times["brewnet_train"], "pytorch": times["pytorch_train"]}
    forward = {"brewnet": times["brewnet_forward"], "pytorch": times["pytorch_forward"]}
    return {
        "model": name, "batch": batch,
        "precision": precision + (" -compile" if compile_ else "") + (" read-first" if read_first else ""),
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


def environment(device):
    info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu dry run",
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None}
    _use(device)                        # GPU mode sets the TF32 flags (core/common.set_tf32)
    info["tf32_conv"], info["tf32_matmul"] = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    common.set_mode_cpu()
    if device.type == "cuda":
        out = subprocess.run([sys.executable, "-m", "brewnet.tools.cli", "device_query", "-gpu",
                              str(device.index or 0)], capture_output=True, text=True, timeout=120)
        info["device_query"] = (out.stdout + out.stderr).strip().splitlines()[-12:]
    return info


def demo_on_device(device, iterations):
    """The README's main job on the GPU, eager and compiled, in fresh processes (2000 iterations)."""
    rows = []
    for extra in ([], ["--compile"]):
        command = [sys.executable, "-m", "examples.mnist.demo", "--gpu", str(device.index or 0),
                   "--iterations", str(iterations)] + extra
        start = time.perf_counter()
        out = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=ROOT)
        lines = (out.stdout + out.stderr).strip().splitlines()
        rows.append({"command": " ".join(command[1:]), "rc": out.returncode,
                     "seconds": round(time.perf_counter() - start, 1),
                     "result": next((l for l in reversed(lines) if "test accuracy" in l), None),
                     "tail": lines[-8:]})
    return rows


# Tests that hold on a GPU as on the CPU (net against net, errors): the fused BatchNorm + Scale (cuDNN's
# kernels on a GPU) against the two layers (torch's native ones), the deferred label checks, the late read.
DEVICE_TESTS = ["tests/runtime/test_fusion.py::test_fused_forward_backward_equals_the_two_layers",
                "tests/runtime/test_fusion.py::test_batchnorm_on_the_data_before_a_learned_scale",
                "tests/runtime/test_fusion.py::test_fused_step_on_a_2d_blob_with_legacy_4d_statistics"] + [
    # Labels checked on the device, read where the pass reads its loss (runtime/device_checks.py).
    "tests/runtime/test_device_checks.py::" + name for name in (
        "test_deferred_form_gives_the_same_numbers", "test_forward_raises_the_loss_layers_error_at_its_end",
        "test_forward_loss_leaves_the_check_to_the_caller",
        "test_ignore_label_is_not_an_error_and_accuracy_checks_too",
        "test_the_solver_step_raises_before_the_update", "test_a_layer_run_on_its_own_checks_at_once")] + [
    # The loss read after the update is issued, the default on a GPU (runtime/late_read.py).
    "tests/runtime/test_late_read.py",
    # BatchNorm statistics packed into one tensor; on a GPU the fused step's cuDNN kernel writes into it.
    "tests/runtime/test_running_sums.py"]


def tests_on_device(device):
    """DEVICE_TESTS under pytest in GPU mode (BREWNET_TEST_MODE=gpu, tests/conftest.py)."""
    env = dict(os.environ, BREWNET_TEST_MODE="gpu" if device.type == "cuda" else "cpu")
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"] + DEVICE_TESTS
    out = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=ROOT, env=env)
    lines = (out.stdout + out.stderr).strip().splitlines()
    files = sorted({os.path.basename(test.split("::")[0]) for test in DEVICE_TESTS})
    return [{"command": f"BREWNET_TEST_MODE=gpu pytest (the tests of {', '.join(files)} that DEVICE_TESTS names)",
             "rc": out.returncode, "seconds": 0, "result": lines[-1] if lines else None,
             "tail": lines[-40:]}]


def data_parallel_on_device(device, iterations):
    """`caffe train -gpu N` as one rank of a torchrun job (WORLD_SIZE=1): the NCCL process group, the
    gradient all-reduce and rank 0's testing on a real GPU (the demo section made the LMDBs)."""
    with open(os.path.join(ROOT, "examples", "mnist", "lenet_solver.prototxt")) as f:
        text = f.read()
    for key, value in (("max_iter", iterations), ("test_interval", iterations), ("snapshot", 0)):
        text = "\n".join(f"{key}: {value}" if line.startswith(key + ":") else line for line in text.splitlines())
    solver = os.path.join(ROOT, "gpu_check_solver.prototxt")
    with open(solver, "w") as f:
        f.write(text + '\nsnapshot_after_train: false\n')
    env = dict(os.environ, RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT="29531")
    command = [sys.executable, "-m", "brewnet.tools.cli", "train", "-solver", solver, "-gpu", str(device.index or 0)]
    start = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=ROOT, env=env)
    lines = (out.stdout + out.stderr).strip().splitlines()
    return [{"command": "RANK=0 WORLD_SIZE=1 ... " + " ".join(command[1:]), "rc": out.returncode,
             "seconds": round(time.perf_counter() - start, 1),
             "result": "; ".join(l.split("] ", 1)[-1] for l in lines
                                 if "Data-parallel training" in l or "Test net output #0" in l)[-300:] or None,
             "tail": lines[-8:]}]


def _profile_table(device, run, steps):
    """torch.profiler over `steps` calls of run() after two warm-up calls: tables by host and device time."""
    run()
    run()
    _sync(device)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(steps):
            run()
        _sync(device)
    averages = prof.key_averages()
    keys = ["self_cpu_time_total"] + (["self_device_time_total"] if device.type == "cuda" else [])
    return "\n".join(f"sorted by {key}, {steps} steps\n{averages.table(sort_by=key, row_limit=30)}\n"
                     for key in keys)


def profile_on_device(device, out, name="resnet50", batches=(8, 32), steps=3):
    """torch.profiler tables of a few training steps of `name`, brewnet's and the PyTorch program's, at each
    batch size: where host and device time go (profile_<name>_<batch>.txt under --out)."""
    rows = []
    for batch in batches:
        _use(device)
        with batch_of(name, batch):
            solver, model, _, inputs = build(name)
        model.to(device)
        inputs = {k: v.to(device) for k, v in inputs.items()}
        opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=5e-4)
        text = ["# brewnet solver.step(1)", _profile_table(device, lambda: solver.step(1), steps),
                "# PyTorch eager train step", _profile_table(device, lambda: torch_train_step(model, opt, inputs),
                                                             steps)]
        solver.close()
        common.set_mode_cpu()
        path = os.path.join(out, f"profile_{name}_{batch}.txt")
        with open(path, "w") as f:
            f.write("\n".join(text))
        rows.append({"model": name, "batch": batch, "steps": steps, "file": os.path.basename(path)})
    return rows


def markdown(results):
    env = results.get("environment", {})
    lines = [f"## CUDA ({env.get('device', '?')})", "",
             f"torch {env.get('torch')}, CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')}; "
             f"TF32 in GPU mode: convolutions {env.get('tf32_conv')}, matrix products {env.get('tf32_matmul')}.",
             ""]
    if "golden" in results:
        lines += [gpu_golden.markdown(results["golden"])]
    timings = results.get("timings", [])
    if timings:
        lines += ["| model | precision | batch | train brewnet ms | train PyTorch ms | train ratio | forward ratio "
                  "| images/s brewnet | images/s PyTorch |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in timings:
            lines.append(f"| {r['model']} | {r['precision']} | {r['batch']} | {r['train_brewnet_ms']:.1f} | "
                         f"{r['train_pytorch_ms']:.1f} | {r['train_ratio']:.3f} | {r['forward_ratio']:.3f} | "
                         f"{r['train_images_per_s_brewnet']:.0f} | {r['train_images_per_s_pytorch']:.0f} |")
        lines.append("")
    lines += _verdicts("CPU vs device parameters after a few SGD iterations (normwise per blob, against the "
                       "CPU's own spread between 1 thread and all):", results.get("checks"),
                       lambda c: f"{'agree' if c['params_close'] else 'DIFFER'} (device vs CPU at most "
                                 f"{c['worst_rel_diff']:.1e}, CPU vs itself at most {c['cpu_spread']:.1e}; "
                                 f"blob {c['worst_blob']}: {c['worst_blob_diff']:.1e} vs "
                                 f"{c['worst_blob_spread']:.1e} after {c['iterations']} iterations)")
    lines += _verdicts("-compile (CUDA graph replay) vs eager on the device, cuDNN deterministic:",
                       results.get("compiled"),
                       lambda c: f"{'identical' if c['identical'] else 'DIFFER'} (max abs difference "
                                 f"{c['max_abs_diff']:.2e} after {c['iterations']} iterations)")
    for row in results.get("tests_on_device", []) + results.get("demo", []) + results.get("data_parallel", []):
        lines.append(f"- `{row['command']}`: {row['result'] or 'no result, rc ' + str(row['rc'])} "
                     f"({row['seconds']} s with start-up)")
    if results.get("failed"):
        lines += ["", "Sections or timings that failed:", ""] + [f"- {f}" for f in results["failed"]]
    return "\n".join(lines) + "\n"


def _verdicts(title, rows, verdict):
    """A titled list, one line per model: its verdict, or FAILED with the error a guarded check met."""
    if not rows:
        return []
    return [title, ""] + [f"- {c['model']}: " + (f"FAILED: {c['error']}" if "error" in c else verdict(c))
                          for c in rows] + [""]


def _write(results, out):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "gpu_results.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    with open(os.path.join(out, "gpu_results.md"), "w") as f:
        f.write(markdown(results))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--quick", action="store_true", help="few rounds (a dry run)")
    parser.add_argument("--models", default="lenet:64,resnet50:8,resnet50:32,resnet50_thin:2",
                        help="name:batch pairs for the timings (the checks use each name's benchmark batch)")
    parser.add_argument("--golden", default=os.path.join(GOLDEN, "layers"))
    args = parser.parse_args(argv)
    setup_process()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device (use --device cpu for a dry run)")
    timed = [(n, int(b)) for n, b in (item.split(":") for item in args.models.split(","))]
    names = list(dict.fromkeys(n for n, _ in timed))
    results = {"failed": []}

    def section(key, fn, *fn_args):
        start = time.perf_counter()
        try:
            results[key] = fn(*fn_args)
        except Exception as e:      # noqa: BLE001 - reported in the results; the next section still runs
            results["failed"].append(f"{key}: {type(e).__name__}: {e}")
            common.set_mode_cpu()
        print(f"gpu_check: {key} done in {time.perf_counter() - start:.1f} s", flush=True)
        _write(results, args.out)

    section("environment", environment, device)
    section("golden", gpu_golden.sweep, args.golden, device)
    section("tests_on_device", tests_on_device, device)
    section("checks", lambda: [_guarded(check_against_cpu, n, device) for n in names])
    if device.type == "cuda":
        # Replays must give the eager path's numbers exactly (first checked in session 5, on an H200).
        section("compiled", lambda: [_guarded(check_compiled, n, device) for n in names])
    rounds = 3 if args.quick else 20
    timings = []
    for name, batch in timed:
        for variant in VARIANTS + (READ_FIRST_VARIANTS if name == "resnet50" else ()):
            row = _guarded(time_on_device, name, device, variant, rounds, batch)
            if "error" in row:
                results["failed"].append(f"timing {name} batch {batch} {variant}: {row['error']}")
            else:
                timings.append(row)
        results["timings"] = timings
        _write(results, args.out)
    if device.type == "cuda":
        section("demo", demo_on_device, device, 200 if args.quick else 2000)
        section("data_parallel", data_parallel_on_device, device, 500)
    section("profile", profile_on_device, device, args.out, *(("resnet50", (8, 32)) if device.type == "cuda"
                                                              else ("lenet", (64,))))
    print(markdown(results))
    ok = (not results["failed"] and all(c.get("params_close") for c in results.get("checks", []))
          and all(r["rc"] == 0 for r in results.get("tests_on_device", []))
          and all(c.get("identical") for c in results.get("compiled", [])))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
