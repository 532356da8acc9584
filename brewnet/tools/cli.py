"""The `caffe` / `brewnet` program: Caffe's tools/caffe.cpp, its commands and flags verbatim (book 5.1.3-5.1.6).

    caffe train -solver S [-snapshot X.solverstate | -weights a.caffemodel[,b.caffemodel]] [-gpu 0|0,1|all]
                [-level L] [-stage s1,s2] [-sigint_effect stop|snapshot|none] [-sighup_effect ...] [-procs N]
                [-sigterm_effect snapshot|stop|none]                brewnet only: what a scheduler's SIGTERM does
    caffe test  -model M -weights W [-iterations 50] [-gpu 0] [-level L] [-stage s]
    caffe time  -model M [-iterations 50] [-phase TRAIN|TEST] [-gpu 0]
    (train, test, time) [-precision fp32|bf16|fp16]     brewnet only: mixed-precision compute
    train [-compile]                                    brewnet only: replay forward+backward from a CUDA graph
    train [-dashboard [PORT]] [-dashboard_host H]       brewnet only: live curves in a browser (tools/dashboard)
    caffe device_query [-gpu 0|all]

`brewnet <tool> args...` (or `caffe <tool> ...`) runs any other tool of brewnet.tools (TOOLS below:
convert_imageset, compute_image_mean, parse_log, ...) with the arguments that follow.

Exit status 0 on success (also after a stop asked for by a signal), 1 on a user error (a flag value out of
range: gflags' "ERROR: failed validation ..." line; anything else: a glog 'F' line naming the file, layer or
value), 130 when SIGINT interrupts a command that has no handler for it (test, time, start-up).
"""
import importlib
import importlib.util
import os
import sys
import time as _time

import numpy as np
import torch

from ..core import common
from ..core.net import Net
from ..runtime.precision import ENV_VARIABLE, Precision, check_mode, get_precision
from ..errors import BrewnetError
from ..log import get_logger, init_log, logger as brewnet_logger
from ..proto import caffe_pb2
from ..solvers import get_solver, load_solver_param
from ..solvers import snapshot as snap
from ..solvers.base import COMPILE_VARIABLE, SolverAction
from .dashboard import start_dashboard
from .progress import TrainingProgress
from .tool_flags import parse_command_line
from .signal_handler import SignalHandler, action_from_flag

log = get_logger("caffe")

# The other tools `caffe <tool>` / `brewnet <tool>` runs (brewnet.tools.<tool>.main); tests/tools/test_cli_errors.py
# checks that this list and the modules with a main() agree.
TOOLS = {
    "classify": "classify images with a trained net (python/classify.py)",
    "compute_image_mean": "compute the mean image of a database of Datum records",
    "conformance": "replay the real Caffe's layer cases and compare every number",
    "convert_cifar_data": "convert CIFAR-10's binary batches into train and test LMDB/LevelDB",
    "convert_imageset": "convert a list of image files into an LMDB/LevelDB of Datum records",
    "convert_mnist_data": "convert MNIST IDX files into an LMDB/LevelDB",
    "draw_net": "draw a net prototxt as an image (python/draw_net.py)",
    "extract_features": "extract the blobs a trained net computes into databases",
    "make_voc_digits": "write a VOC2012-layout segmentation set of MNIST digits",
    "parse_log": "parse a training log into .train and .test CSV tables",
    "plot_training_log": "plot curves from training logs into a PNG",
    "report": "one self-contained HTML page of the curves of training logs, overlaid",
    "sample_quality": "score generated digits with a LeNet: class histogram, inception-style score",
    "upgrade_net_proto_binary": "upgrade a V0/V1 binary net (old caffemodel)",
    "upgrade_net_proto_text": "upgrade a V0/V1 net prototxt",
    "upgrade_solver_proto_text": "upgrade a solver prototxt that uses solver_type",
}

USAGE = ("command line brew\n"
         "usage: caffe <command> <args>\n\n"
         "commands:\n"
         "  train           train or finetune a model\n"
         "  test            score a model\n"
         "  device_query    show GPU diagnostic information\n"
         "  time            benchmark model execution time\n\n"
         "other tools (caffe <tool> -help for their flags):\n"
         + "".join(f"  {name:<26}{text}\n" for name, text in TOOLS.items()))

FLAGS = {
    "gpu": ("", "Optional; run in GPU mode on given device IDs separated by ','.Use '-gpu all' to run on all "
                "available GPUs. The effective training batch size is multiplied by the number of devices."),
    "solver": ("", "The solver definition protocol buffer text file."),
    "model": ("", "The model definition protocol buffer text file."),
    "phase": ("", "Optional; network phase (TRAIN or TEST). Only used for 'time'."),
    "level": (0, "Optional; network level."),
    "stage": ("", "Optional; network stages (not to be confused with phase), separated by ','."),
    "snapshot": ("", "Optional; the snapshot solver state to resume training."),
    "weights": ("", "Optional; the pretrained weights to initialize finetuning, separated by ','. Cannot be "
                    "set simultaneously with snapshot."),
    "iterations": (50, "The number of iterations to run."),
    "sigint_effect": ("stop", "Optional; action to take when a SIGINT signal is received: snapshot, stop or "
                              "none."),
    "sighup_effect": ("snapshot", "Optional; action to take when a SIGHUP signal is received: snapshot, stop "
                                  "or none."),
    "sigterm_effect": ("snapshot", "Optional (brewnet only); action to take when a SIGTERM signal (a scheduler's "
                                   "stop) is received: snapshot (then stop), stop or none."),
    "precision": ("", "Optional (brewnet only); compute precision for train, test and time: fp32, bf16 "
                      "(autocast) or fp16 (autocast with dynamic loss scaling); default $BREWNET_PRECISION, "
                      "else fp32. Weights, diffs and snapshots stay fp32."),
    "compile": (False, "Optional (brewnet only); train: record the net's forward and backward into a CUDA graph "
                       "once and replay it every iteration (same kernels, same numbers, no per-layer launch "
                       "cost). GPU only; the CPU runs the eager path."),
    "procs": (1, "Optional; train data-parallel in this many CPU processes (gloo). The effective training batch "
                 "size is multiplied by the number of processes."),
    "dashboard": ("", "Optional (brewnet only); train: serve a live page of the training curves on this port "
                      "(given without a value, or 0: a free port); the address is logged."),
    "dashboard_host": ("127.0.0.1", "Optional (brewnet only); the address the dashboard listens on; the default "
                                    "is this machine only (0.0.0.0: every machine that reaches this one)."),
}

# Modules of brewnet.tools that are not commands of their own.
_NOT_TOOLS = {"cli", "flags", "tool_flags", "signal_handler"}


# --- flag values out of range: gflags' validators --------------------------------------------------------------
def _gpu_problem(value):
    if value == "all":
        return None
    try:
        ids = [int(x) for x in value.split(",")]
    except ValueError:
        return "Expect: device ids separated by ',' (0 or 0,1) or 'all'"
    if min(ids) < 0:
        return "Expect: device ids >= 0"
    if len(set(ids)) != len(ids):
        return "Expect: each device once"
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count and max(ids) >= count:
        return f"Expect: device ids below {count} (this machine has {count} CUDA devices)"
    return None


def _at_least_one(what):
    return lambda n: None if n >= 1 else f"Expect: a number of {what} >= 1"


def _port_problem(value):
    if value == "" or (value.isdigit() and int(value) <= 65535):
        return None
    return "Expect: a port number from 0 (a free port) to 65535"


def _bare_dashboard(argv):
    """`-dashboard` without a port (followed by another flag, the command, or nothing) means a free port."""
    out = []
    for i, arg in enumerate(argv):
        out.append(arg)
        if arg in ("-dashboard", "--dashboard") and (i + 1 == len(argv) or not argv[i + 1].isdigit()):
            out[-1] = arg + "=0"
    return out


def _effect_problem(value):
    return None if value in SolverAction.ALL else f"Expect: one of {', '.join(SolverAction.ALL)}"


VALIDATORS = {
    "gpu": _gpu_problem,
    "iterations": _at_least_one("iterations"),
    "procs": _at_least_one("processes"),
    "phase": lambda v: None if v in ("TRAIN", "TEST") else "Expect: TRAIN or TEST",
    # Caffe splits -stage on ',' as given; an empty name in a list is a typo ('a,,b', 'a,').
    "stage": lambda v: "Expect: stage names separated by ',', none empty" if "" in v.split(",") else None,
    "sigint_effect": _effect_problem,
    "sighup_effect": _effect_problem,
    "sigterm_effect": _effect_problem,
    "dashboard": _port_problem,
}


# --- helpers shared by the commands --------------------------------------------------------------------------
def get_gpus(flag):
    """'' -> [], 'all' -> every CUDA device, '0,2' -> [0, 2]."""
    if flag == "all":
        return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    if not flag:
        return []
    try:
        return [int(x) for x in flag.split(",")]
    except ValueError:
        raise BrewnetError(f"-gpu: Expect: device ids separated by ',' or 'all', Actual: '{flag}'") from None


def get_phase(flag, default):
    if flag == "":
        return default
    if flag not in ("TRAIN", "TEST"):
        raise BrewnetError(f"phase must be \"TRAIN\" or \"TEST\", got \"{flag}\"")
    return caffe_pb2.TRAIN if flag == "TRAIN" else caffe_pb2.TEST


def get_stages(flag):
    # Caffe splits the flag as given: an empty -stage is one empty stage name, as in its logs.
    return flag.split(",")


def use_device(gpus, what="Use GPU with device ID"):
    if not gpus:
        log.info("Use CPU.")
        common.set_mode_cpu()
        return
    if not torch.cuda.is_available():
        raise BrewnetError(f"-gpu {','.join(map(str, gpus))}: no CUDA device is available "
                           "(torch.cuda.is_available() is False); leave out -gpu to run on the CPU")
    log.info("%s %d", what, gpus[0])
    log.info("GPU device name: %s", torch.cuda.get_device_name(gpus[0]))
    common.set_device(gpus[0])
    common.set_mode_gpu()


def _precision_mode(flags):
    """-precision if given, else the default ($BREWNET_PRECISION, else fp32)."""
    return check_mode(flags["precision"], "-precision") if flags["precision"] else get_precision()


def _cuda_sync():
    if common.mode() == common.GPU:
        torch.cuda.synchronize()


def _g(x):
    return "%g" % float(x)


def _output_names(net):
    return [net.blob_names[i] for i in net.output_blob_ids]


# --- commands ------------------------------------------------------------------------------------------------
def train(flags):
    if not flags["solver"]:
        raise BrewnetError("Need a solver definition to train (-solver).")
    if flags["snapshot"] and flags["weights"]:
        raise BrewnetError("Give a snapshot to resume training or weights to finetune but not both.")
    solver_param = load_solver_param(flags["solver"])
    solver_param.train_state.level = flags["level"]
    solver_param.train_state.stage.extend(get_stages(flags["stage"]))
    gpu_flag = flags["gpu"]
    if not gpu_flag and solver_param.HasField("solver_mode") and \
            solver_param.solver_mode == caffe_pb2.SolverParameter.GPU:
        if torch.cuda.is_available():
            gpu_flag = str(solver_param.device_id) if solver_param.HasField("device_id") else "0"
        else:
            log.warning("solver_mode is GPU but no CUDA device is available: training on the CPU")
    gpus = get_gpus(gpu_flag)
    if not gpus:
        log.info("Use CPU.")
        common.set_mode_cpu()
    else:
        if not torch.cuda.is_available():
            raise BrewnetError(f"-gpu {gpu_flag}: no CUDA device is available (torch.cuda.is_available() is "
                               "False); leave out -gpu to run on the CPU")
        log.info("Using GPUs %s", ", ".join(str(g) for g in gpus))
        for g in gpus:
            log.info("GPU %d: %s", g, torch.cuda.get_device_name(g))
        solver_param.device_id = gpus[0]
        common.set_device(gpus[0])
        common.set_mode_gpu()
    sigint = action_from_flag(flags["sigint_effect"], "sigint_effect")
    sighup = action_from_flag(flags["sighup_effect"], "sighup_effect")
    sigterm = action_from_flag(flags["sigterm_effect"], "sigterm_effect")
    if flags["snapshot"]:
        del solver_param.weights[:]
    elif flags["weights"]:
        del solver_param.weights[:]
        solver_param.weights.append(flags["weights"])
    precision = _precision_mode(flags)
    if solver_param.snapshot_prefix and os.environ.get("RANK", "0") == "0":     # under torchrun: rank 0 only
        snap.tidy_snapshots(solver_param.snapshot_prefix, log)
    if flags["snapshot"] and not os.path.exists(flags["snapshot"]):
        raise snap.missing_state_error(flags["snapshot"])
    from ..parallel import distributed
    if len(gpus) > 1 or flags["procs"] > 1 or distributed.torchrun_environment() is not None:
        if flags["dashboard"]:
            log.warning("-dashboard: not available when several solvers train; `brewnet report LOG` draws the "
                        "same curves from the log")
        # One solver per rank (per GPU, per -procs process, or per torchrun process), gradients averaged.
        # The ranks' solvers take their precision from the environment, which the spawned processes inherit.
        os.environ[ENV_VARIABLE] = precision
        if flags["compile"]:
            os.environ[COMPILE_VARIABLE] = "1"
        return distributed.train(solver_param, source=flags["solver"], procs=flags["procs"], gpus=gpus,
                                 snapshot=flags["snapshot"] or None, sigint_effect=sigint, sighup_effect=sighup,
                                 sigterm_effect=sigterm)
    # The signal handler comes after the start-up (net assembly, data opening, restoring): a Ctrl-C there ends
    # the program at once (main: status 130) instead of after the start-up and a snapshot of iteration 0.
    solver = get_solver(solver_param, source=flags["solver"], precision=precision)
    dashboard = progress = None
    status = "failed"
    try:
        solver.compile = solver.compile or flags["compile"]
        if flags["snapshot"]:
            log.info("Resuming from %s", flags["snapshot"])
            solver.restore(flags["snapshot"])
        if flags["dashboard"]:
            dashboard = start_dashboard(solver, int(flags["dashboard"]), flags["dashboard_host"])
        progress = TrainingProgress(solver).attach(brewnet_logger)
        with SignalHandler(sigint, sighup, sigterm) as handler:
            solver.set_action_function(handler.check_for_signals)
            log.info("Starting Optimization")
            solver.solve()
            if handler.snapshot_before_exit and not os.path.exists(snap.current_state_file(solver)):
                solver.snapshot()
        status = "stopped" if solver.requested_early_exit else "finished"
    finally:
        if progress is not None:
            progress.close()
        if dashboard is not None:
            dashboard.close(status)
        _close_nets([solver.net] + list(solver.test_nets))
    log.info("Optimization Done.")
    return 0


def test(flags):
    if not flags["model"]:
        raise BrewnetError("Need a model definition to score (-model).")
    if not flags["weights"]:
        raise BrewnetError("Need model weights to score (-weights).")
    precision = Precision(_precision_mode(flags))
    use_device(get_gpus(flags["gpu"]))
    net = Net(flags["model"], phase=caffe_pb2.TEST, level=flags["level"], stages=get_stages(flags["stage"]))
    try:
        for weights in flags["weights"].split(","):
            net.copy_trained_layers_from(weights.strip())
        iterations = flags["iterations"]
        log.info("Running for %d iterations.", iterations)
        names = _output_names(net)
        scores, loss = None, np.float32(0)
        if precision.enabled:
            log.info("Precision: %s compute, fp32 weights", precision.mode)
        for i in range(iterations):
            iter_loss = precision.forward(net)
            loss += np.float32(iter_loss)
            values = [b.data.detach().to("cpu", torch.float32).numpy().ravel().copy() for b in net.output_blobs]
            for name, vec in zip(names, values):
                for score in vec:
                    log.info("Batch %d, %s = %s", i, name, _g(score))
            # float sums, as Caffe: the printed means agree digit for digit
            scores = values if scores is None else [s + v for s, v in zip(scores, values)]
        log.info("Loss: %s", _g(loss / np.float32(iterations)))
        for blob_id, name, total in zip(net.output_blob_ids, names, scores or []):
            weight = np.float32(net.blob_loss_weights[blob_id])
            for score in total:
                mean = score / np.float32(iterations)
                suffix = f" (* {_g(weight)} = {_g(weight * mean)} loss)" if weight else ""
                log.info("%s = %s%s", name, _g(mean), suffix)
    finally:
        net.close()
    return 0


def time(flags):
    if not flags["model"]:
        raise BrewnetError("Need a model definition to time (-model).")
    phase = get_phase(flags["phase"], caffe_pb2.TRAIN)
    precision = Precision(_precision_mode(flags))
    use_device(get_gpus(flags["gpu"]))
    net = Net(flags["model"], phase=phase, level=flags["level"], stages=get_stages(flags["stage"]))
    try:
        if precision.enabled:
            log.info("Precision: %s compute, fp32 weights", precision.mode)
        with precision.compute(net.device):
            _benchmark(net, flags["iterations"])
    finally:
        net.close()
    return 0


def _benchmark(net, iterations):
    # One clean pass first, so that memory is allocated and later passes are stable.
    log.info("Performing Forward")
    initial_loss = net.forward()
    log.info("Initial loss: %s", _g(initial_loss))
    log.info("Performing Backward")
    net.backward()
    layers = net.layers
    log.info("*** Benchmark begins ***")
    log.info("Testing for %d iterations.", iterations)
    forward_per_layer, backward_per_layer = [0.0] * len(layers), [0.0] * len(layers)
    forward_total = backward_total = 0.0
    clock = _time.perf_counter
    total_start = clock()
    with torch.no_grad():
        for j in range(iterations):
            iter_start = clock()
            for i, layer in enumerate(layers):
                start = clock()
                layer.Forward(net.bottom_vecs[i], net.top_vecs[i])
                _cuda_sync()
                forward_per_layer[i] += clock() - start
            forward_total += clock() - iter_start
            backward_start = clock()
            for i in range(len(layers) - 1, -1, -1):
                start = clock()
                layers[i].Backward(net.top_vecs[i], net.bottom_need_backward[i], net.bottom_vecs[i])
                _cuda_sync()
                backward_per_layer[i] += clock() - start
            backward_total += clock() - backward_start
            log.info("Iteration: %d forward-backward time: %s ms.", j + 1, _g((clock() - iter_start) * 1e3))
    total = clock() - total_start
    n = max(iterations, 1)
    log.info("Average time per layer: ")
    for i, layer in enumerate(layers):
        log.info("%10s\tforward: %s ms.", layer.name, _g(forward_per_layer[i] * 1e3 / n))
        log.info("%10s\tbackward: %s ms.", layer.name, _g(backward_per_layer[i] * 1e3 / n))
    log.info("Average Forward pass: %s ms.", _g(forward_total * 1e3 / n))
    log.info("Average Backward pass: %s ms.", _g(backward_total * 1e3 / n))
    log.info("Average Forward-Backward: %s ms.", _g(total * 1e3 / n))
    log.info("Total Time: %s ms.", _g(total * 1e3))
    log.info("*** Benchmark ends ***")


def device_query(flags):
    log.info("Querying GPUs %s", flags["gpu"])
    if not torch.cuda.is_available():
        log.info("No CUDA device is available (torch %s, CPU only; %d threads)", torch.__version__,
                 torch.get_num_threads())
        return 1 if flags["gpu"] else 0
    for g in get_gpus(flags["gpu"] or "all"):
        p = torch.cuda.get_device_properties(g)
        log.info("Device id:                     %d", g)
        log.info("Major revision number:         %d", p.major)
        log.info("Minor revision number:         %d", p.minor)
        log.info("Name:                          %s", p.name)
        log.info("Total global mem:              %d", p.total_memory)
        log.info("Number of multiprocessors:     %d", p.multi_processor_count)
    return 0


COMMANDS = {"train": train, "test": test, "time": time, "device_query": device_query}


def _close_nets(nets):
    for net in nets:
        net.close()


def find_tool(name):
    """The module brewnet.tools.<name> when it is a tool with a main(argv), else None."""
    name = name[:-3] if name.endswith(".py") else name
    if name in _NOT_TOOLS or not name.isidentifier():
        return None
    if importlib.util.find_spec(f"{__package__}.{name}") is None:
        return None
    module = importlib.import_module(f"{__package__}.{name}")
    return module if callable(getattr(module, "main", None)) else None


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    init_log()
    try:
        return _run(argv)
    except KeyboardInterrupt:
        # Ctrl-C where no signal handler turns it into a solver action (test, time, start-up, other tools).
        log.error("Interrupted by SIGINT")
        return 130


def _run(argv):
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        tool = find_tool(argv[0])
        if tool is not None:
            return tool.main(argv[1:]) or 0
    parsed = parse_command_line(_bare_dashboard(argv), FLAGS, USAGE, VALIDATORS)
    if isinstance(parsed, int):
        return parsed
    flags, positional = parsed
    if len(positional) != 1:
        print(USAGE, file=sys.stderr)
        return 1
    command = COMMANDS.get(positional[0])
    if command is None:
        log.error("Available caffe actions:")
        for name in sorted(COMMANDS):
            log.error("\t%s", name)
        log.error("Other tools (caffe <tool> -help):")
        for name, text in TOOLS.items():
            log.error("\t%-26s%s", name, text)
        log.critical("Unknown action: %s", positional[0])
        return 1
    try:
        return command(flags)
    except BrewnetError as error:
        log.critical("%s", error)
        return 1


if __name__ == "__main__":
    sys.exit(main())
