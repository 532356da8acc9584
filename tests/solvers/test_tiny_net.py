"""The book's toy nets (DummyData -> InnerProduct -> SoftmaxWithLoss, trained for thousands of SGD steps) run a
step whose Python has fast paths (kept transposed views, a kept label buffer, cached scalars, plain Net loops).
Training one here must give exactly the parameters of the same arithmetic written as plain torch ops, without
Blob, Layer, Net or Solver: Caffe's forward and hand-written backward, and Caffe's SGD rule
(g += decay * w;  h = momentum * h + lr * g;  w -= h)."""
import math

import torch

from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text
from brewnet.solvers import get_solver

TINY = """
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 10 dim: 4 } shape { dim: 10 }
                     data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 2 weight_filler { type: "xavier" } bias_filler { type: "uniform" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""
LR, GAMMA, STEPSIZE, MOMENTUM, DECAY = 0.1, 0.5, 7, 0.9, 5e-4
LOG_FLT_MIN = math.log(1.1754943508222875e-38)


def tiny_solver():
    sp = caffe_pb2.SolverParameter(base_lr=LR, lr_policy="step", gamma=GAMMA, stepsize=STEPSIZE, momentum=MOMENTUM,
                                   weight_decay=DECAY, display=0, max_iter=1000, random_seed=3)
    sp.net_param.CopyFrom(parse_text(TINY, caffe_pb2.NetParameter()))
    return get_solver(sp)


def labels_for(stage):
    return torch.tensor([(i * 7 + stage) % 3 % 2 for i in range(10)], dtype=torch.float32)


class Reference:
    """The same training in plain float32 torch ops."""

    def __init__(self, weight, bias):
        self.w, self.b = weight.clone(), bias.clone()
        self.hw, self.hb = torch.zeros_like(self.w), torch.zeros_like(self.b)
        self.x = torch.empty(10, 4)

    def step(self, it, labels):
        self.x.normal_(0.0, 1.0)                                   # DummyData's draw, same generator
        index = labels.to(torch.int64).view(10, 1)
        y = torch.addmm(self.b, self.x, self.w.t())
        log_p = torch.log_softmax(y, dim=1)
        loss = log_p.gather(1, index).clamp(min=LOG_FLT_MIN).sum() / -10.0
        g = torch.zeros(10, 2).scatter_(1, index, -1.0 / 10.0)      # d loss / d log_p
        dy = torch._log_softmax_backward_data(g, log_p, 1, torch.float32)
        rate = float(torch.tensor(LR) * torch.tensor(GAMMA) ** (it // STEPSIZE))
        for w, h, grad in ((self.w, self.hw, dy.t().mm(self.x)), (self.b, self.hb, dy.sum(0))):
            grad.add_(w, alpha=float(torch.tensor(DECAY)))
            h.mul_(float(torch.tensor(MOMENTUM))).add_(grad, alpha=rate)
            w.sub_(h)
        return float(loss)


def test_tiny_net_trains_to_the_plain_torch_parameters_bit_for_bit():
    solver = tiny_solver()
    net = solver.net
    layer = net.layers[net.layer_names.index("ip")]
    reference = Reference(layer.blobs[0].data, layer.blobs[1].data)
    torch.manual_seed(11)
    state = torch.get_rng_state()
    for it in range(24):
        labels = labels_for(it // 5)            # the labels change every 5 steps (the kept label buffer)
        net.blobs["label"].data.copy_(labels)
        if it == 12:                            # a weight rebound to new memory (the kept transposed view)
            layer.blobs[0].data = layer.blobs[0].data.clone()
        torch.set_rng_state(state)
        solver.step(1)
        torch.set_rng_state(state)
        expected_loss = reference.step(it, labels)
        state = torch.get_rng_state()
        assert float(net.blobs["loss"].data) == expected_loss, f"loss at iteration {it}"
        assert torch.equal(layer.blobs[0].data, reference.w), f"weight after iteration {it + 1}"
        assert torch.equal(layer.blobs[1].data, reference.b), f"bias after iteration {it + 1}"
    assert solver.iter == 24
    # Caffe's diff after the update holds the update itself (the momentum history)
    assert torch.equal(layer.blobs[0].diff, reference.hw) and torch.equal(layer.blobs[1].diff, reference.hb)


def test_step_n_equals_n_single_steps():
    """step(24) and 24 x step(1) from the same start: the same parameters and smoothed loss."""
    results = []
    for chunks in ((24,), (1,) * 24):
        solver = tiny_solver()
        torch.manual_seed(5)
        for n in chunks:
            solver.step(n)
        results.append([p.data.clone() for p in solver.net.learnable_params])
    assert all(torch.equal(a, b) for a, b in zip(*results))
