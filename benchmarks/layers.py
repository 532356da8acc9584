"""Heavy layers, forward + backward: brewnet's layer against the same computation in torch.nn.functional with
autograd, in one process.

    python -m benchmarks.layers [--quick] [--threads N]

For each case the brewnet side is `layer.Forward(bottom, top)` then `layer.Backward(top, [True...], bottom)`,
the layer told what a Net tells it when nothing rewrites its top (`Layer.top_data_kept`),
with a fixed random top diff (Caffe's contract: parameter diffs accumulate, bottom diffs are overwritten);
the PyTorch side is the functional op on leaf tensors that require grad, then `y.backward(dy)` (gradients set
to None between calls, as optimizers do).  Shapes are those of the benchmarked nets' large layers, at a batch
small enough for a 2-core machine.  Ratio = brewnet / PyTorch time, median of interleaved rounds.
"""
import argparse
import sys

import torch
import torch.nn.functional as F

from brewnet.core.blob import Blob
from brewnet.core.registry import create_layer
from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text

from .timing import fmt_ms, interleaved, median, paired_ratio, setup_process


def _layer(text, bottoms, phase=caffe_pb2.TRAIN):
    param = parse_text(f'name: "L" {text}', caffe_pb2.LayerParameter())
    param.phase = phase
    layer = create_layer(param)
    bottom = [Blob(b.shape, name=f"b{i}") for i, b in enumerate(bottoms)]
    for blob, value in zip(bottom, bottoms):
        blob.data.copy_(value)
    top = [Blob(name=f"t{i}") for i in range(max(1, len(param.top) or 1))]
    return layer, bottom, top


class Case:
    """One benchmark: a brewnet layer and a torch function computing the same thing."""

    def __init__(self, name, text, bottoms, torch_fn, grad_bottoms=(0,), n_tops=1, params_from_layer=True):
        self.name = name
        self.layer, self.bottom, self.top = _layer(text, bottoms)
        if n_tops > 1:
            self.top = [Blob(name=f"t{i}") for i in range(n_tops)]
        self.layer.setup(self.bottom, self.top)
        # What the Net tells a layer whose tops no later layer rewrites in place (a layer on its own must
        # assume they may be): BatchNorm then keeps its normalized output as the top instead of a copy.
        self.layer.top_data_kept = True
        self.propagate = [i in grad_bottoms for i in range(len(bottoms))]
        self.layer.Forward(self.bottom, self.top)
        g = torch.Generator().manual_seed(1)
        self.top_diff = torch.randn(self.top[0].shape, generator=g)
        # torch side: leaf copies of the bottoms (and of the layer's parameters)
        self.inputs = [b.data.clone().requires_grad_(i in grad_bottoms) for i, b in enumerate(self.bottom)]
        self.params = [b.data.clone().requires_grad_(True) for b in self.layer.blobs] if params_from_layer else []
        self.torch_fn = torch_fn
        self.check()

    def brewnet(self):
        self.layer.Forward(self.bottom, self.top)
        self.top[0].diff.copy_(self.top_diff)
        self.layer.Backward(self.top, self.propagate, self.bottom)

    def pytorch(self):
        for t in self.inputs + self.params:
            t.grad = None
        y = self.torch_fn(*self.inputs, *self.params)
        y.backward(self.top_diff)

    def check(self):
        """Both sides compute the same top (cases with randomness excepted)."""
        with torch.no_grad():
            y = self.torch_fn(*[t.detach() for t in self.inputs], *[p.detach() for p in self.params])
        self.max_abs_diff = float((y.reshape(self.top[0].shape) - self.top[0].data).abs().max())


def _lstm_reference(x, cont, w_x, b, w_h):
    """Caffe's LSTM (gates i, f, o, g; h_{t-1} scaled by cont) written with autograd, time loop in Python."""
    T, N, _ = x.shape
    H = w_h.shape[1]
    gates_x = F.linear(x, w_x, b)                   # the input transform of all steps at once
    h = x.new_zeros(N, H)
    c = x.new_zeros(N, H)
    out = []
    for t in range(T):
        keep = cont[t].unsqueeze(1)
        gates = gates_x[t] + F.linear(h * keep, w_h)
        i, f, o = torch.sigmoid(gates[:, :3 * H]).split(H, dim=1)
        g = torch.tanh(gates[:, 3 * H:])
        c = f * keep * c + i * g
        h = o * torch.tanh(c)
        out.append(h)
    return torch.stack(out)


def cases(quick=False):
    g = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(shape, generator=g)

    n = 4 if quick else 8
    yield Case("Convolution 3x3, 64->128, 56x56", 'type: "Convolution" convolution_param { num_output: 128 '
               'kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.01 } bias_filler { type: "constant" '
               'value: 0.1 } }', [randn(n, 64, 56, 56)],
               lambda x, w, b: F.conv2d(x, w, b, 1, 1))
    yield Case("Convolution 11x11/4, 3->96 (CaffeNet conv1)", 'type: "Convolution" convolution_param { '
               'num_output: 96 kernel_size: 11 stride: 4 weight_filler { type: "gaussian" std: 0.01 } }',
               [randn(n, 3, 227, 227)], lambda x, w, b: F.conv2d(x, w, b, 4))
    yield Case("Convolution group 2, 5x5, 96->256, 27x27", 'type: "Convolution" convolution_param { '
               'num_output: 256 kernel_size: 5 pad: 2 group: 2 weight_filler { type: "gaussian" std: 0.01 } }',
               [randn(n, 96, 27, 27)], lambda x, w, b: F.conv2d(x, w, b, 1, 2, 1, 2))
    yield Case("Deconvolution 4x4/2, 64->32, 28x28", 'type: "Deconvolution" convolution_param { num_output: 32 '
               'kernel_size: 4 stride: 2 pad: 1 weight_filler { type: "gaussian" std: 0.01 } }',
               [randn(n, 64, 28, 28)], lambda x, w, b: F.conv_transpose2d(x, w, b, 2, 1))
    yield Case("Pooling MAX 3x3/2, 96x55x55", 'type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 }',
               [randn(n, 96, 55, 55)], lambda x: F.max_pool2d(x, 3, 2, ceil_mode=True))
    yield Case("Pooling AVE 3x3/2, 64x16x16", 'type: "Pooling" pooling_param { pool: AVE kernel_size: 3 stride: 2 }',
               [randn(4 * n, 64, 16, 16)], lambda x: F.avg_pool2d(x, 3, 2, ceil_mode=True))
    yield Case("LRN across 5, 96x55x55", 'type: "LRN" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 }',
               [randn(n, 96, 55, 55)], lambda x: F.local_response_norm(x, 5, 1e-4, 0.75, 1.0))
    yield Case("InnerProduct 9216->4096", 'type: "InnerProduct" inner_product_param { num_output: 4096 '
               'weight_filler { type: "gaussian" std: 0.005 } bias_filler { type: "constant" value: 0.1 } }',
               [randn(2 * n, 256, 6, 6)], lambda x, w, b: F.linear(x.flatten(1), w, b))
    yield Case("BatchNorm (train), 256x28x28", 'type: "BatchNorm"', [randn(n, 256, 28, 28)],
               lambda x: F.batch_norm(x, None, None, None, None, True, 0.001, 1e-5), params_from_layer=False)
    labels = torch.randint(0, 1000, (16 * n,), generator=g).float()
    yield Case("SoftmaxWithLoss, 1000 classes", 'type: "SoftmaxWithLoss"', [randn(16 * n, 1000), labels],
               lambda x, label: F.cross_entropy(x, label.long()), grad_bottoms=(0,))
    T, N, D, H = 16, 4 * n, 64, 128
    cont = torch.ones(T, N)
    cont[0] = 0
    yield Case(f"LSTM T={T} N={N} {D}->{H}", 'type: "LSTM" recurrent_param { num_output: 128 weight_filler { '
               'type: "uniform" min: -0.08 max: 0.08 } bias_filler { type: "constant" value: 0 } }',
               [randn(T, N, D), cont], _lstm_reference, grad_bottoms=(0,))


def run(quick=False, progress=print):
    rows = []
    rounds, repeat = (5, 2) if quick else (12, 3)
    for case in cases(quick):
        with torch.enable_grad():
            times = interleaved({"brewnet": case.brewnet, "pytorch": case.pytorch}, rounds, warmup=2, repeat=repeat)
        row = dict(case=case.name, brewnet_s=median(times["brewnet"]), pytorch_s=median(times["pytorch"]),
                   ratio=paired_ratio(times, "brewnet", "pytorch"), max_abs_diff=case.max_abs_diff)
        progress(f"layers: {case.name}: {row['ratio']:.3f}")
        rows.append(row)
    return rows


def table(rows):
    lines = ["| layer (forward + backward) | brewnet ms | PyTorch ms | ratio | max abs diff of the tops |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['case']} | {fmt_ms(r['brewnet_s'])} | {fmt_ms(r['pytorch_s'])} | **{r['ratio']:.3f}** | "
                     f"{r['max_abs_diff']:.1e} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args(argv)
    setup_process(args.threads)
    print(table(run(args.quick, progress=lambda m: print(m, file=sys.stderr))))


if __name__ == "__main__":
    main()
