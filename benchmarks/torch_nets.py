"""Plain PyTorch eager versions of prototxt nets: the baselines the benchmarks compare brewnet with.

`TorchNet(net_param)` builds the same layers out of stock torch.nn modules (nn.Conv2d, nn.MaxPool2d,
nn.LocalResponseNorm, nn.Linear, nn.BatchNorm2d, nn.Dropout, F.cross_entropy ...) in the prototxt's order, and
its forward walks them, keeping tops in a dict by name.  It is what a PyTorch user writes for these models:
in-place ReLU where the prototxt is in place, a BatchNorm followed by a Scale with bias fused into
one affine nn.BatchNorm2d, autograd for the backward pass, torch.optim.SGD for the update.  Caffe's semantics
are kept where they change the shapes (ceil rounding of pooling windows); everything else uses the modules'
defaults.  Only the layer types of the benchmarked nets are supported.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from brewnet.proto import caffe_pb2

P = caffe_pb2.PoolingParameter


def _one(values, default):
    values = list(values)
    return values[0] if values else default


def _conv(lp, channels):
    cp = lp.convolution_param
    k = (cp.kernel_h, cp.kernel_w) if cp.HasField("kernel_h") else _one(cp.kernel_size, 1)
    s = (cp.stride_h, cp.stride_w) if cp.HasField("stride_h") else _one(cp.stride, 1)
    p = (cp.pad_h, cp.pad_w) if cp.HasField("pad_h") else _one(cp.pad, 0)
    return nn.Conv2d(channels, cp.num_output, k, s, p, _one(cp.dilation, 1), cp.group, bias=cp.bias_term)


class _Flatten(nn.Module):
    def forward(self, x):
        return x.flatten(1)


class _Concat(nn.Module):
    def forward(self, *xs):
        return torch.cat(xs, 1)


class _Sum(nn.Module):
    def forward(self, a, b):
        return a + b


class TorchNet(nn.Module):
    """The net of a (phase-filtered, TRAIN) NetParameter whose inputs are `input_shapes` {name: shape}."""

    def __init__(self, net_param, input_shapes):
        super().__init__()
        self.steps = []          # (module, bottom names, top name)
        self.losses = []         # (weight, logits name, label name)
        self.inputs = list(input_shapes)
        shapes = dict(input_shapes)
        layers = list(net_param.layer)
        skip = set()
        with torch.no_grad():
            for i, lp in enumerate(layers):
                if i in skip or lp.type == "Input":
                    continue
                x = list(lp.bottom)
                if lp.type == "SoftmaxWithLoss":
                    self.losses.append((_one(lp.loss_weight, 1.0), x[0], x[1]))
                    continue
                module = self._module(lp, shapes[x[0]], layers, i, skip)
                self.add_module(f"m{i}", module)
                self.steps.append((module, x, lp.top[0]))
                # Shapes by running a dummy batch of 1 through the fresh module.
                dummies = [torch.zeros((1,) + tuple(shapes[b][1:])) for b in x]
                was = module.training
                module.eval()
                shapes[lp.top[0]] = (shapes[x[0]][0],) + tuple(module(*dummies).shape[1:])
                module.train(was)

    def _module(self, lp, shape, layers, i, skip):
        t = lp.type
        in_place = len(lp.top) and len(lp.bottom) and lp.top[0] == lp.bottom[0]
        if t == "Convolution":
            return _conv(lp, shape[1])
        if t == "Pooling":
            pp = lp.pooling_param
            k = shape[2:] if pp.global_pooling else (pp.kernel_size or (pp.kernel_h, pp.kernel_w))
            if pp.pool == P.MAX:
                return nn.MaxPool2d(k, pp.stride, pp.pad, ceil_mode=True)
            return nn.AvgPool2d(k, pp.stride, pp.pad, ceil_mode=True)
        if t == "ReLU":
            return nn.ReLU(inplace=bool(in_place))
        if t == "LRN":
            p = lp.lrn_param
            return nn.LocalResponseNorm(p.local_size, p.alpha, p.beta, p.k)
        if t == "InnerProduct":
            fan_in = 1
            for d in shape[1:]:
                fan_in *= d
            linear = nn.Linear(fan_in, lp.inner_product_param.num_output, bias=lp.inner_product_param.bias_term)
            return nn.Sequential(_Flatten(), linear) if len(shape) > 2 else linear
        if t == "Dropout":
            # Not in place: autograd refuses an in-place dropout over an in-place ReLU's output.
            return nn.Dropout(lp.dropout_param.dropout_ratio)
        if t == "Concat":
            return _Concat()
        if t == "Eltwise":
            return _Sum()
        if t == "BatchNorm":
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            affine = (nxt is not None and nxt.type == "Scale" and nxt.scale_param.bias_term
                      and list(nxt.bottom) == list(lp.top))
            if affine:
                skip.add(i + 1)
            p = lp.batch_norm_param
            return nn.BatchNorm2d(shape[1], eps=p.eps, momentum=1 - p.moving_average_fraction, affine=affine)
        raise NotImplementedError(f"TorchNet: layer type {t} ({lp.name})")

    def forward(self, **inputs):
        blobs = dict(inputs)
        for module, bottoms, top in self.steps:
            blobs[top] = module(*[blobs[b] for b in bottoms])
        loss = 0.0
        for weight, logits, label in self.losses:
            loss = loss + weight * F.cross_entropy(blobs[logits], blobs[label])
        return loss


class TinyNet(nn.Module):
    """The `tiny` benchmark's net as a PyTorch user writes it: DummyData's gaussian batch drawn afresh into
    `data` on every call (as the layer refills its top in every Forward), nn.Linear, cross-entropy."""

    def __init__(self, inputs, classes):
        super().__init__()
        self.fc = nn.Linear(inputs, classes)

    def forward(self, data, label):
        return F.cross_entropy(self.fc(data.normal_()), label)


class CaffeSGD:
    """Caffe's SGD with momentum and L2 weight decay as plain eager torch ops, one parameter at a time (what
    torch.optim.SGD does on the CPU):  g = grad + decay * w;  h = momentum * h + lr * g;  w -= h."""

    def __init__(self, params, lr, momentum, weight_decay):
        self.params = list(params)
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.history = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        for p, h in zip(self.params, self.history):
            g = p.grad.add_(p, alpha=self.weight_decay)
            h.mul_(self.momentum).add_(g, alpha=self.lr)
            p.sub_(h)
