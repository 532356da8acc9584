"""Whole-net benchmarks: brewnet against a plain PyTorch eager program of the same model, in one process.

    python -m benchmarks.models [--models lenet,cifar10_quick,...] [--quick] [--no-memory] [--check]

Per model, on random inputs of the model's batch (the data layers replaced by Input layers, so that data
loading is not timed), denormals flushed to zero for both (timing.setup_process):
  train iteration  brewnet: `solver.step(1)` of an SGDSolver (clear diffs, forward, backward, Caffe's momentum
                   and weight-decay update);  PyTorch: zero_grad, forward, loss.backward(), SGD.step(), loss.item()
  forward          brewnet: `net.forward()` of the TRAIN net;  PyTorch: the model's forward and loss under
                   torch.no_grad() in train mode (what `caffe time` times)
  peak memory      the growth of the peak resident set size (VmHWM) of a fresh subprocess per model and
                   framework, from after the imports to after three training iterations
Both sides use momentum 0.9, weight decay 5e-4, a fixed learning rate.  Ratios are brewnet / PyTorch (lower is
better for brewnet), medians over interleaved rounds (see timing.py).
"""
import argparse
import json
import os
import resource
import subprocess
import sys

import torch

from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text, read_net_param

from .timing import fmt_ms, interleaved, median, paired_ratio, setup_process
from .torch_nets import CaffeSGD, TinyNet, TorchNet

GOLDEN = os.environ.get("BREWNET_GOLDEN") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "golden")
MODELS_DIR = os.path.join(GOLDEN, "models")
DATA_LAYERS = ("Data", "ImageData", "HDF5Data", "MemoryData", "DummyData", "WindowData")

# name: (prototxt under tests/golden/models or a generator, batch, input shape (C, H, W), classes,
#        rounds and warm-up iterations for the timing)
MODELS = {
    "lenet": dict(path="examples_mnist/lenet_train_test.prototxt", batch=64, shape=(1, 28, 28), classes=10,
                  rounds=60, repeat=5),
    "cifar10_quick": dict(path="examples_cifar10/cifar10_quick_train_test.prototxt", batch=100,
                          shape=(3, 32, 32), classes=10, rounds=15, repeat=2),
    "caffenet": dict(path="bvlc_reference_caffenet/train_val.prototxt", batch=16, shape=(3, 227, 227),
                     classes=1000, rounds=6, repeat=1),
    "googlenet": dict(path="bvlc_googlenet/train_val.prototxt", batch=8, shape=(3, 224, 224), classes=1000,
                      rounds=6, repeat=1),
    "resnet50": dict(path=None, batch=8, shape=(3, 224, 224), classes=1000, rounds=5, repeat=1),
    # The same 245 layers on 2 images of 32x32: every kernel is tiny, so the time is the frameworks' own
    # per-layer work -- the regime of a fast GPU at a small batch, where kernels launch faster than Python
    # issues them (what `-compile` removes).
    "resnet50_overhead": dict(path=None, batch=2, shape=(3, 32, 32), classes=10, rounds=30, repeat=1),
    # ... and with 16x fewer channels (width 4): the kernels nearly vanish, what is left is per-layer work.
    "resnet50_thin": dict(path=None, batch=2, shape=(3, 32, 32), classes=10, width=4, rounds=30, repeat=3),
    # The book's toy experiments (AND gate, optimizer races): DummyData 10x4 -> InnerProduct(2) ->
    # SoftmaxWithLoss, trained for 10 000+ steps.  Kernels of a few nanoseconds: the time is the per-step
    # Python of the solver loop, the Net and the update.  Against a hand-written eager loop (torch_nets.TinyNet).
    "tiny": dict(path=None, batch=10, shape=(4,), classes=2, rounds=30, repeat=100),
}

# DummyData draws a fresh gaussian batch every forward (the label top is constant; build() puts the
# benchmark's random labels into it, as it does for every model's Input layer).
TINY = """name: "tiny"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 10 dim: 4 } shape { dim: 10 }
                     data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


# --- the nets ------------------------------------------------------------------------------------------------
def with_input_layer(param, batch, shape):
    """The TRAIN-phase layers of `param`, the data layer replaced by an Input layer (data, label)."""
    out = caffe_pb2.NetParameter()
    out.name = param.name
    out.state.phase = caffe_pb2.TRAIN
    replaced = False
    for lp in param.layer:
        phases = {r.phase for r in lp.include if r.HasField("phase")}
        if phases and caffe_pb2.TRAIN not in phases:
            continue
        if lp.type in DATA_LAYERS:
            if replaced:
                continue
            layer = out.layer.add(name="data", type="Input")
            layer.top.extend(["data", "label"])
            layer.input_param.shape.add().dim.extend((batch,) + tuple(shape))
            layer.input_param.shape.add().dim.extend([batch])
            replaced = True
            continue
        if lp.type == "Accuracy":
            continue
        out.layer.add().CopyFrom(lp)
        del out.layer[-1].include[:]
    return out


def resnet50(batch, shape, classes, width=64):
    """ResNet-50 (He et al., the layout of KaimingHe/deep-residual-networks' ResNet-50-deploy.prototxt) for
    training, written with NetSpec: Convolution without bias + BatchNorm + Scale(bias) + ReLU, bottleneck
    blocks 3-4-6-3, global average pooling, fc1000, SoftmaxWithLoss."""
    from brewnet.pycaffe.net_spec import NetSpec, layers as L, params as P
    n = NetSpec()
    n.data, n.label = L.Input(ntop=2, input_param=dict(shape=[dict(dim=[batch] + list(shape)),
                                                                dict(dim=[batch])]))
    filler = dict(type="msra")

    def conv_bn(bottom, name, num_output, kernel, stride=1, pad=0, relu=True):
        n[name] = L.Convolution(bottom, num_output=num_output, kernel_size=kernel, stride=stride, pad=pad,
                                bias_term=False, weight_filler=filler)
        n["bn_" + name] = L.BatchNorm(n[name], in_place=True)
        n["scale_" + name] = L.Scale(n[name], bias_term=True, in_place=True)
        if relu:
            n[name + "_relu"] = L.ReLU(n[name], in_place=True)
        return n[name]

    x = conv_bn(n.data, "conv1", width, 7, 2, 3)
    n.pool1 = L.Pooling(x, kernel_size=3, stride=2, pool=P.Pooling.MAX)
    x = n.pool1
    for stage, (blocks, planes) in enumerate(((3, width), (4, 2 * width), (6, 4 * width), (3, 8 * width)), start=2):
        for b in range(blocks):
            name = f"res{stage}{chr(ord('a') + b)}"
            stride = 2 if b == 0 and stage > 2 else 1
            if b == 0:
                shortcut = conv_bn(x, f"{name}_branch1", 4 * planes, 1, stride, relu=False)
            else:
                shortcut = x
            y = conv_bn(x, f"{name}_branch2a", planes, 1, stride)
            y = conv_bn(y, f"{name}_branch2b", planes, 3, 1, 1)
            y = conv_bn(y, f"{name}_branch2c", 4 * planes, 1, relu=False)
            n[name] = L.Eltwise(shortcut, y)
            n[name + "_relu"] = L.ReLU(n[name], in_place=True)
            x = n[name]
    n.pool5 = L.Pooling(x, kernel_size=shape[-1] // 32, stride=1, pool=P.Pooling.AVE)    # 7 at 224x224
    n.fc1000 = L.InnerProduct(n.pool5, num_output=classes, weight_filler=dict(type="xavier"))
    n.loss = L.SoftmaxWithLoss(n.fc1000, n.label)
    param = n.to_proto()
    param.name = "ResNet-50"
    return param


def net_param(name):
    spec = MODELS[name]
    if name == "tiny":
        return parse_text(TINY, caffe_pb2.NetParameter())
    if spec["path"] is None:        # the NetSpec-generated ResNet-50s
        return resnet50(spec["batch"], spec["shape"], spec["classes"], spec.get("width", 64))
    return with_input_layer(read_net_param(os.path.join(MODELS_DIR, spec["path"])), spec["batch"], spec["shape"])


def make_inputs(name, seed=0):
    spec = MODELS[name]
    g = torch.Generator().manual_seed(seed)
    data = torch.randn((spec["batch"],) + spec["shape"], generator=g)
    label = torch.randint(0, spec["classes"], (spec["batch"],), generator=g)
    return data, label


def brewnet_solver(param):
    from brewnet.solvers import get_solver
    sp = caffe_pb2.SolverParameter(base_lr=0.001, momentum=0.9, weight_decay=5e-4, lr_policy="fixed",
                                   display=0, max_iter=10 ** 9, solver_type=caffe_pb2.SolverParameter.SGD)
    sp.net_param.CopyFrom(param)
    return get_solver(sp)


def build(name, seed=0, dropout=True):
    """(brewnet solver, torch model, torch optimizer, torch inputs) for one model, the same inputs in both.
    dropout=False sets every dropout_ratio to 0 (for comparing the two sides' outputs)."""
    param = net_param(name)
    if not dropout:
        for lp in param.layer:
            if lp.type == "Dropout":
                lp.dropout_param.dropout_ratio = 0.0
    solver = brewnet_solver(param)
    net = solver.net
    data, label = make_inputs(name, seed)
    net.blobs["data"].data.copy_(data)
    net.blobs["label"].data.copy_(label.to(net.blobs["label"].data.dtype))
    model, opt = torch_program(name, param)
    return solver, model, opt, dict(data=data, label=label)


def torch_program(name, param):
    """The PyTorch contender: (model in train mode, optimizer).  `tiny` keeps Caffe's momentum rule written
    as plain torch ops (CaffeSGD): at its size the rule's form is a visible part of the step."""
    spec = MODELS[name]
    if name == "tiny":
        model = TinyNet(spec["shape"][0], spec["classes"])
        return model.train(), CaffeSGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=5e-4)
    model = TorchNet(param, {"data": (spec["batch"],) + spec["shape"], "label": (spec["batch"],)})
    model.train()
    return model, torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=5e-4)


def torch_train_step(model, opt, inputs):
    opt.zero_grad()
    loss = model(**inputs)
    loss.backward()
    opt.step()
    return loss.item()


def torch_forward(model, inputs):
    with torch.no_grad():
        return model(**inputs).item()


# --- measurements --------------------------------------------------------------------------------------------
def time_model(name, quick=False):
    spec = MODELS[name]
    rounds, repeat = spec["rounds"], spec["repeat"]
    if quick:
        rounds, repeat = max(3, rounds // 3), 1
    solver, model, opt, inputs = build(name)
    net = solver.net
    train = interleaved({"brewnet": lambda: solver.step(1),
                         "pytorch": lambda: torch_train_step(model, opt, inputs)}, rounds, warmup=2, repeat=repeat)
    forward = interleaved({"brewnet": net.forward,
                           "pytorch": lambda: torch_forward(model, inputs)}, rounds, warmup=1, repeat=repeat)
    return {
        "model": name, "batch": spec["batch"],
        "train_brewnet_s": median(train["brewnet"]), "train_pytorch_s": median(train["pytorch"]),
        "train_ratio": paired_ratio(train, "brewnet", "pytorch"),
        "forward_brewnet_s": median(forward["brewnet"]), "forward_pytorch_s": median(forward["pytorch"]),
        "forward_ratio": paired_ratio(forward, "brewnet", "pytorch"),
        "rounds": rounds, "repeat": repeat,
    }


def _maxrss_bytes():
    """This process's peak resident set size.  VmHWM belongs to the address space, which exec starts afresh;
    getrusage's ru_maxrss would carry over the parent's peak into the child (Linux keeps it across exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # KiB on Linux


def memory_child(name, framework, iters=3):
    """Run in a fresh process: peak RSS growth while building `name` and training it `iters` iterations."""
    before = _maxrss_bytes()
    if framework == "brewnet":
        param = net_param(name)
        solver = brewnet_solver(param)
        data, label = make_inputs(name)
        solver.net.blobs["data"].data.copy_(data)
        solver.net.blobs["label"].data.copy_(label.float())
        solver.step(iters)
    else:
        model, opt = torch_program(name, net_param(name))
        data, label = make_inputs(name)
        for _ in range(iters):
            torch_train_step(model, opt, dict(data=data, label=label))
    return _maxrss_bytes() - before


def peak_memory(name):
    result = {}
    for framework in ("brewnet", "pytorch"):
        out = subprocess.run([sys.executable, "-m", "benchmarks.models", "--memory-child", name, framework,
                              "--threads", str(torch.get_num_threads())],
                             capture_output=True, text=True, check=True,
                             cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        result[framework] = int(out.stdout.strip().splitlines()[-1])
    return result


def check_same_model(name, atol=1e-4):
    """Copy brewnet's initial parameters into the torch model and compare the loss of one forward pass
    (dropout off), so that the baseline is known to compute the same function."""
    solver, model, opt, inputs = build(name, dropout=False)
    net = solver.net
    theirs = [p for p in model.parameters()]
    ours = [b for b in net.learnable_params if b.count() and _is_weight(net, b)]
    if len(theirs) != len(ours):
        return f"parameter count differs: brewnet {len(ours)}, torch {len(theirs)}"
    with torch.no_grad():
        for t, b in zip(theirs, ours):
            t.copy_(b.data.reshape(t.shape))
    torch.manual_seed(0)            # the same draws on both sides (tiny's DummyData refills its data)
    loss_b = net.forward()
    torch.manual_seed(0)
    loss_t = torch_forward(model, inputs)
    return abs(loss_b - loss_t) <= atol * max(1.0, abs(loss_t)), loss_b, loss_t


def _is_weight(net, blob):
    """False for BatchNorm statistics (torch keeps them as buffers, not parameters)."""
    for layer in net.layers:
        if layer.type == "BatchNorm" and any(blob is b for b in layer.blobs):
            return False
    return True


def table(rows):
    lines = ["| model | batch | train brewnet ms | train PyTorch ms | train ratio | forward brewnet ms | "
             "forward PyTorch ms | forward ratio | peak MiB brewnet | peak MiB PyTorch | memory ratio |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        mem = r.get("memory")
        mem_cells = (f"{mem['brewnet'] / 2**20:.0f} | {mem['pytorch'] / 2**20:.0f} | "
                     f"{mem['brewnet'] / max(mem['pytorch'], 1):.2f}") if mem else "- | - | -"
        lines.append(f"| {r['model']} | {r['batch']} | {fmt_ms(r['train_brewnet_s'])} | "
                     f"{fmt_ms(r['train_pytorch_s'])} | **{r['train_ratio']:.3f}** | "
                     f"{fmt_ms(r['forward_brewnet_s'])} | {fmt_ms(r['forward_pytorch_s'])} | "
                     f"**{r['forward_ratio']:.3f}** | {mem_cells} |")
    return "\n".join(lines)


def run(names, quick=False, memory=True, progress=print):
    rows = []
    for name in names:
        progress(f"models: {name} ...")
        row = time_model(name, quick)
        if memory:
            row["memory"] = peak_memory(name)
        progress(f"models: {name}: train {row['train_ratio']:.3f}, forward {row['forward_ratio']:.3f}")
        rows.append(row)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--check", action="store_true", help="check that both sides compute the same loss")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--memory-child", nargs=2, metavar=("MODEL", "FRAMEWORK"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    setup_process(args.threads)
    if args.memory_child:
        print(memory_child(*args.memory_child))
        return
    names = [n for n in args.models.split(",") if n]
    if args.check:
        for name in names:
            print(name, check_same_model(name))
        return
    rows = run(names, args.quick, not args.no_memory, progress=lambda m: print(m, file=sys.stderr))
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
