"""Mixed precision (brewnet/runtime/precision.py): bf16/fp16 compute with fp32 blobs, master weights and snapshots;
fp16 dynamic loss scaling; a short LeNet training in bf16 against fp32."""
import logging
import pathlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import brewnet.layers  # noqa: F401  (registers the layer types)
from brewnet.core import common
from brewnet.runtime import precision as prec
from brewnet.core.blob import Blob
from brewnet.core.net import Net
from brewnet.runtime.precision import LossScaler, LowPrecisionCompute, Precision
from brewnet.core.registry import create_layer
from brewnet.data import mnist
from brewnet.errors import BrewnetError
from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text, read_binary, read_net_param, write_text
from brewnet.solvers import SGDSolver

REPO = pathlib.Path(__file__).resolve().parents[2]
LENET = REPO / "examples" / "mnist" / "lenet.prototxt"
DIGITS = REPO / "data" / "mnist10k"
WEIGHTS = "lenet_iter_10000.caffemodel"      # Caffe's own LeNet, trained on the bundled digits


def digits(count, split="t10k"):
    images = mnist.read_idx_images(DIGITS / f"{split}-images-idx3-ubyte.gz")[:count]
    labels = mnist.read_idx_labels(DIGITS / f"{split}-labels-idx1-ubyte.gz")[:count]
    return (torch.from_numpy(np.asarray(images, dtype=np.float32)).reshape(count, 1, 28, 28) / 256,
            torch.from_numpy(np.asarray(labels, dtype=np.int64)))


def layer(text, *bottom_shapes):
    lp = parse_text(text, caffe_pb2.LayerParameter())
    lay = create_layer(lp)
    bottom = [Blob(s) for s in bottom_shapes]
    for b in bottom:
        b.data.copy_(torch.randn(b.shape))
    top = [Blob() for _ in range(max(len(lp.top), 1))]
    lay.setup(bottom, top)
    return lay, bottom, top


# --- modes ---------------------------------------------------------------------------------------------------
def test_modes_and_default(monkeypatch):
    assert prec.check_mode("BF16") == "bf16" and prec.check_mode("float16") == "fp16"
    with pytest.raises(BrewnetError, match="Expect: one of fp32, bf16, fp16, Actual: 'fp8'"):
        Precision("fp8")
    with pytest.raises(BrewnetError, match="fp16 only"):
        Precision("bf16", init_scale=8)
    monkeypatch.setenv(prec.ENV_VARIABLE, "bf16")
    assert prec.get_precision() == "bf16"
    prec.set_precision("fp16")
    try:
        assert prec.get_precision() == "fp16" and Precision.of(None).scaler is not None
    finally:
        prec.set_precision(None)
    monkeypatch.delenv(prec.ENV_VARIABLE)
    assert prec.get_precision() == "fp32" and not Precision.of(None).enabled


# --- the compute context -------------------------------------------------------------------------------------
def test_convolution_runs_in_bf16_and_stores_fp32():
    conv, bottom, top = layer('name: "c" type: "Convolution" bottom: "x" top: "y" convolution_param { '
                              'num_output: 6 kernel_size: 3 weight_filler { type: "gaussian" std: 1 } '
                              'bias_filler { type: "gaussian" std: 1 } }', (2, 3, 9, 9))
    x, w, b = bottom[0].data, conv.blobs[0].data, conv.blobs[1].data
    with Precision("bf16").compute():
        conv.Forward(bottom, top)
    assert top[0].data.dtype == torch.float32 and w.dtype == torch.float32
    oracle_bf16 = F.conv2d(x.bfloat16(), w.bfloat16(), b.bfloat16()).float()
    oracle_fp32 = F.conv2d(x, w, b)
    torch.testing.assert_close(top[0].data, oracle_bf16, rtol=0, atol=0)
    # bf16 rounding is visible (the op did run in low precision) but small: 8 bits of mantissa
    err = (top[0].data - oracle_fp32).abs().max() / oracle_fp32.abs().max()
    assert 1e-4 < err < 2e-2, err


def test_a_weight_is_cast_once_per_step_unless_written():
    """Forward and backward of a convolution share one bf16 copy of the weight (and of the bias); a weight
    written in between (its version counter moves) is cast afresh, so the backward sees the new values."""
    conv, bottom, top = layer('name: "c" type: "Convolution" bottom: "x" top: "y" convolution_param { '
                              'num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 1 } }',
                              (2, 3, 7, 7))
    x, w = bottom[0].data, conv.blobs[0].data
    top[0].diff.copy_(torch.randn(top[0].shape, generator=torch.Generator().manual_seed(2)))
    dy = top[0].diff.clone()

    def expected_dx(weight):
        return torch.ops.aten.convolution_backward(dy.bfloat16(), x.bfloat16(), weight.bfloat16(), None, [1, 1],
                                                   [0, 0], [1, 1], False, [0, 0], 1, [True, False, False])[0]

    with Precision("bf16").compute():
        conv.Forward(bottom, top)
        conv.Backward(top, [True], bottom)
        casts = prec.compute_mode().weight_casts
    held = [entry[0] for entry in casts.values()]
    assert len(held) == 2 and held[0] is w and held[1] is conv.blobs[1].data
    torch.testing.assert_close(bottom[0].diff, expected_dx(w).float(), rtol=0, atol=0)

    with Precision("bf16").compute():
        conv.Forward(bottom, top)
        w.mul_(-2.0)                                # written between the passes
        conv.Backward(top, [True], bottom)
        casts = prec.compute_mode().weight_casts
    assert len(casts) == 3
    torch.testing.assert_close(bottom[0].diff, expected_dx(w).float(), rtol=0, atol=0)
    assert prec.compute_mode() is None              # the context ended


def test_the_mode_covers_only_lowered_methods():
    """The compute context puts no TorchFunctionMode over the whole pass (each elementwise op would go
    through Python): only `lowered` methods run under it, and lowered_call lowers one op."""
    a, b = torch.randn(6, 5), torch.randn(5, 4)
    low_product = (a.bfloat16() @ b.bfloat16()).float()
    stacks = []

    @prec.lowered
    def method():
        stacks.append(torch.overrides._get_current_function_mode_stack())
        return torch.mm(a, b)

    with Precision("bf16").compute():
        assert torch.overrides._get_current_function_mode_stack() == []
        assert torch.equal(torch.add(a, 1), a + 1)
        inside = method()
        called = prec.lowered_call(torch.mm, a, b)
    assert len(stacks[0]) == 1 and isinstance(stacks[0][0], LowPrecisionCompute)
    for y in (inside, called):
        assert y.dtype == torch.float32
        torch.testing.assert_close(y, low_product, rtol=0, atol=0)
    assert not torch.equal(low_product, a @ b)
    torch.testing.assert_close(method(), a @ b, rtol=0, atol=0)             # outside: plain fp32
    torch.testing.assert_close(prec.lowered_call(torch.mm, a, b), a @ b, rtol=0, atol=0)


PROBE_LAYER = """
import torch
from brewnet.layers.python_layer import PythonLayerBase

modes_seen = []


class Probe(PythonLayerBase):
    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        modes_seen.append(len(torch.overrides._get_current_function_mode_stack()))
        top[0].data[...] = bottom[0].data

    def backward(self, top, propagate_down, bottom):
        modes_seen.append(len(torch.overrides._get_current_function_mode_stack()))
"""


def test_recurrent_and_python_layers_run_under_the_mode(tmp_path, monkeypatch):
    """RNN/LSTM and user Python layers call matmul-class ops among many others: their forward and backward
    run under the mode, and the LSTM's products come out in bf16 rounding, in fp32 blobs."""
    (tmp_path / "precision_probe.py").write_text(PROBE_LAYER)
    monkeypatch.syspath_prepend(str(tmp_path))
    probe, bottom, top = layer('name: "p" type: "Python" bottom: "x" top: "y" python_param { '
                               'module: "precision_probe" layer: "Probe" }', (2, 3))
    import precision_probe
    with Precision("bf16").compute():
        probe.Forward(bottom, top)
        probe.Backward(top, [True], bottom)
    probe.Forward(bottom, top)
    assert precision_probe.modes_seen == [1, 1, 0]

    lstm, bottom, top = layer('name: "L" type: "LSTM" bottom: "x" bottom: "c" top: "h" recurrent_param { '
                              'num_output: 5 weight_filler { type: "uniform" min: -0.5 max: 0.5 } }',
                              (4, 2, 6), (4, 2))
    bottom[1].data.copy_(torch.tensor([[0.0, 0.0]] + [[1.0, 1.0]] * 3))
    lstm.Forward(bottom, top)
    fp32 = top[0].data.clone()
    lowered_ops, call = [], LowPrecisionCompute.call

    def recording_call(mode, func, args, kwargs):
        if func in mode.FUNCTIONAL:
            lowered_ops.append(func)
        return call(mode, func, args, kwargs)

    monkeypatch.setattr(LowPrecisionCompute, "call", recording_call)
    with Precision("bf16").compute():
        lstm.Forward(bottom, top)
    assert torch.addmm in lowered_ops       # the input transform and the recurrent products
    assert top[0].data.dtype == torch.float32
    err = (top[0].data - fp32).abs().max().item()
    assert 1e-5 < err < 2e-2, err           # rounded to bf16's 8-bit mantissa, and no more than that


def test_inner_product_out_and_accumulating_paths():
    """InnerProduct writes with out= and accumulates its weight diff with addmm_: the product runs in bf16,
    the accumulation stays fp32 (a bf16 sum would lose the 1e-3 increments on top of 1.0)."""
    ip, bottom, top = layer('name: "ip" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { '
                            'num_output: 5 weight_filler { type: "gaussian" std: 1 } }', (4, 7))
    x, w = bottom[0].data, ip.blobs[0].data
    with Precision("bf16").compute():
        ip.Forward(bottom, top)
    torch.testing.assert_close(top[0].data, (x.bfloat16() @ w.bfloat16().t()).float(), rtol=0, atol=1e-6)
    top[0].diff.copy_(torch.full((4, 5), 1e-3 / 4))
    ip.blobs[0].diff.fill_(1.0)
    with Precision("bf16").compute():
        ip.Backward(top, [True], bottom)
    expected_dw = (top[0].diff.t().bfloat16() @ x.bfloat16()).float()
    assert ip.blobs[0].diff.dtype == torch.float32
    torch.testing.assert_close(ip.blobs[0].diff - 1.0, expected_dw, rtol=1e-3, atol=1e-7)
    assert (ip.blobs[0].diff != 1.0).any()
    torch.testing.assert_close(bottom[0].diff, (top[0].diff.bfloat16() @ w.bfloat16()).float(), rtol=0,
                               atol=1e-9)


def test_ops_that_must_stay_fp32_are_untouched():
    """Softmax, the loss and BatchNorm statistics see fp32 blobs and no matmul: bit-identical to fp32."""
    loss_layer, bottom, top = layer('name: "loss" type: "SoftmaxWithLoss" bottom: "x" bottom: "l" top: "loss"',
                                    (8, 10), (8,))
    bottom[1].data.copy_(torch.arange(8) % 10)
    fp32_loss = loss_layer.Forward(bottom, top)
    loss_layer.Backward(top, [True, False], bottom)
    fp32_diff = bottom[0].diff.clone()
    with Precision("bf16").compute():
        assert loss_layer.Forward(bottom, top) == fp32_loss
        loss_layer.Backward(top, [True, False], bottom)
    torch.testing.assert_close(bottom[0].diff, fp32_diff, rtol=0, atol=0)

    bn, bottom, top = layer('name: "bn" type: "BatchNorm" bottom: "x" top: "y"', (4, 3, 5, 5))
    bn.Forward(bottom, top)
    fp32 = [top[0].data.clone()] + [b.data.clone() for b in bn.blobs]
    for b in bn.blobs:
        b.data.zero_()
    with Precision("bf16").compute():
        bn.Forward(bottom, top)
    for got, want in zip([top[0].data] + [b.data for b in bn.blobs], fp32):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(2, 3, 6, 6), (2, 3, 4, 5, 5)])
def test_im2col_copies_values_in_any_precision(shape):
    """Im2col rearranges values (3-D through a one-hot convolution): bf16 must not round them."""
    im2col, bottom, top = layer('name: "i" type: "Im2col" bottom: "x" top: "y" convolution_param { '
                                'kernel_size: 2 }', shape)
    im2col.Forward(bottom, top)
    fp32 = top[0].data.clone()
    with Precision("bf16").compute():
        im2col.Forward(bottom, top)
    assert not torch.equal(bottom[0].data.bfloat16().float(), bottom[0].data)
    torch.testing.assert_close(top[0].data, fp32, rtol=0, atol=0)


def test_mode_is_thread_local_and_leaves_other_dtypes():
    a, b = torch.randn(3, 4), torch.randn(4, 2)
    with LowPrecisionCompute(torch.bfloat16):
        assert torch.mm(a.double(), b.double()).dtype == torch.float64
        assert (a @ b).dtype == torch.float32
        assert torch.mm(a.bfloat16(), b.bfloat16()).dtype == torch.bfloat16     # already low: untouched
        ints = torch.mm(torch.ones(2, 2, dtype=torch.int64), torch.ones(2, 2, dtype=torch.int64))
        assert ints.dtype == torch.int64
        w = torch.randn(5, 4)
        torch.testing.assert_close(F.linear(a, w), (a.bfloat16() @ w.bfloat16().t()).float(), rtol=0, atol=1e-6)
        assert F.linear(a, w).dtype == torch.float32
        torch.testing.assert_close(torch.einsum("ij,jk->ik", [a, b]), (a.bfloat16() @ b.bfloat16()).float(),
                                   rtol=0, atol=1e-6)
        from concurrent.futures import ThreadPoolExecutor
        other = ThreadPoolExecutor(1).submit(lambda: torch.mm(a, b)).result()
    torch.testing.assert_close(other, torch.mm(a, b), rtol=0, atol=0)     # another thread: plain fp32


def test_lenet_bf16_forward_close_to_fp32(golden):
    """The trained LeNet on 64 bundled test digits: bf16 logits within 2 % (of the largest logit) of fp32, the
    same predictions on all but at most one digit."""
    net = Net(str(LENET), phase=caffe_pb2.TEST, weights=str(golden / "training" / "lenet_mnist10k" / WEIGHTS))
    images, labels = digits(64)
    net.blobs["data"].data.copy_(images)
    net.forward()
    fp32 = net.blobs["ip2"].data.clone()
    Precision("bf16").forward(net)
    bf16 = net.blobs["ip2"].data.clone()
    assert bf16.dtype == torch.float32 and all(p.dtype == torch.float32 for p in net.learnable_params)
    err = float((bf16 - fp32).abs().max() / fp32.abs().max())
    assert 1e-5 < err < 0.02, err
    assert int((bf16.argmax(1) != fp32.argmax(1)).sum()) <= 1
    assert float((fp32.argmax(1) == labels).float().mean()) > 0.95


# --- fp16 loss scaling ---------------------------------------------------------------------------------------
SMALL_NET = """name: "small" force_backward: true
layer {{ name: "data" type: "Input" top: "data" top: "label"
        input_param {{ shape {{ dim: 8 dim: 6 }} shape {{ dim: 8 }} }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param {{ num_output: 4 weight_filler {{ type: "gaussian" std: 0.5 }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" loss_weight: {weight} }}
"""

SOLVER = """net: "{net}" base_lr: 0.1 momentum: 0.9 weight_decay: 0.0005 lr_policy: "fixed" display: 1
max_iter: 4 snapshot_after_train: false random_seed: 7 snapshot_prefix: "{prefix}"
"""


def make_solver(tmp_path, precision=None, weight=1.0, **scaler):
    net = tmp_path / "net.prototxt"
    net.write_text(SMALL_NET.format(weight=weight))
    param = parse_text(SOLVER.format(net=net, prefix=tmp_path / "snap"), caffe_pb2.SolverParameter())
    solver = SGDSolver(param, precision=None if precision is None else Precision(precision, **scaler))
    rs = np.random.RandomState(0)
    solver.net.blobs["data"].data.copy_(torch.from_numpy(rs.randn(8, 6).astype(np.float32)))
    solver.net.blobs["label"].data.copy_(torch.from_numpy((np.arange(8) % 4).astype(np.float32)))
    return solver


def test_fp16_loss_scaling_keeps_tiny_gradients(tmp_path):
    """With loss weight 1e-8 the top diffs (~1e-9) are below fp16's smallest subnormal (6e-8): unscaled they
    become zero, with the loss scaled by 2^16 they survive and, unscaled again, agree with fp32."""
    grads = {}
    for name, precision, scale in (("fp32", "fp32", None), ("fp16 unscaled", "fp16", 1.0),
                                   ("fp16 scaled", "fp16", 2.0 ** 16)):
        solver = make_solver(tmp_path, **({"precision": precision} if scale is None else
                                          {"precision": precision, "init_scale": scale}), weight=1e-8)
        solver.net.clear_param_diffs()
        solver.precision.forward_backward(solver.net)
        solver.precision.unscale(solver.net.learnable_params)
        grads[name] = solver.net.learnable_params[0].diff.clone()
    assert float(grads["fp32"].abs().max()) > 1e-9
    assert float(grads["fp16 unscaled"].abs().max()) == 0.0
    torch.testing.assert_close(grads["fp16 scaled"], grads["fp32"], rtol=2e-2, atol=1e-12)


def test_fp16_overflow_skips_the_update_and_halves_the_scale(tmp_path, caplog):
    solver = make_solver(tmp_path, "fp16", init_scale=1024.0, growth_interval=2)
    params = solver.net.learnable_params

    def on_gradients_ready():       # an inf in iteration 1's gradient, as an fp16 overflow leaves it
        if solver.iter == 1:
            params[0].diff[0, 0] = float("inf")
    solver.add_callback(lambda: None, on_gradients_ready)
    logging.getLogger("brewnet").propagate = True
    try:
        with caplog.at_level(logging.INFO, logger="brewnet"):
            solver.step(1)
            before = [p.data.clone() for p in params]
            history = [h.data.clone() for h in solver.history]
            solver.step(1)                      # overflow: skipped
            assert solver.iter == 2
            assert solver.precision.scaler.scale == 512.0 and solver.precision.scaler.skipped == 1
            for p, b in zip(params, before):
                torch.testing.assert_close(p.data, b, rtol=0, atol=0)
            for h, b in zip(solver.history, history):
                torch.testing.assert_close(h.data, b, rtol=0, atol=0)
            solver.step(2)                      # two finite iterations: the scale grows back
            assert not torch.equal(params[0].data, before[0])
            assert solver.precision.scaler.scale == 1024.0
    finally:
        logging.getLogger("brewnet").propagate = False
    text = caplog.text
    assert "[fp16] loss scale 1024 -> 512: gradient overflow (inf/NaN) at iteration 1, update skipped" in text
    assert "[fp16] loss scale 512 -> 1024 after 2 iterations without overflow" in text
    assert all(p.dtype == torch.float32 for p in params)


def test_fp16_overflow_in_the_kernels_is_caught(tmp_path):
    """A loss scale of 2^40 pushes the top diffs past fp16's 65504: the backward matmuls give inf, the update is
    skipped, the scale halves."""
    solver = make_solver(tmp_path, "fp16", init_scale=2.0 ** 40)
    before = [p.data.clone() for p in solver.net.learnable_params]
    solver.step(1)
    assert solver.iter == 1 and solver.precision.scaler.skipped == 1
    assert solver.precision.scaler.scale == 2.0 ** 39
    for p, b in zip(solver.net.learnable_params, before):
        torch.testing.assert_close(p.data, b, rtol=0, atol=0)


def test_fp16_update_matches_fp32(tmp_path):
    """Without overflow an fp16 step (scaled, unscaled) moves the weights as fp32 does, to fp16 accuracy."""
    weights = {}
    for precision in ("fp32", "fp16"):
        solver = make_solver(tmp_path, precision)
        solver.step(3)
        weights[precision] = solver.net.learnable_params[0].data.clone()
    torch.testing.assert_close(weights["fp16"], weights["fp32"], rtol=1e-2, atol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_all_finite_finds_inf_and_nan_and_leaves_the_diffs(dtype):
    params = [Blob((3, 4), dtype=dtype), Blob((5,), dtype=dtype), Blob((2, 2), dtype=dtype)]
    for p in params:
        p.diff.copy_(torch.randn(p.shape, dtype=dtype) * 1e30)
    before = [p.diff.clone() for p in params]
    assert LossScaler.all_finite(params) and LossScaler.all_finite([])
    for p, b in zip(params, before):
        assert torch.equal(p.diff, b)                   # checked, not changed
    for bad in (float("inf"), float("-inf"), float("nan")):
        params[1].diff[3] = bad
        assert not LossScaler.all_finite(params)
        params[1].diff[3] = 1.0
    assert LossScaler.all_finite(params)


def test_loss_scaler_checks_its_arguments():
    with pytest.raises(BrewnetError, match="backoff_factor"):
        LossScaler(backoff_factor=2.0)


# --- master weights and snapshots ----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["bf16", "fp16"])
def test_master_weights_and_snapshots_stay_fp32(tmp_path, mode):
    solver = make_solver(tmp_path, mode)
    solver.step(3)
    params = solver.net.learnable_params
    assert all(p.dtype == torch.float32 and p.diff.dtype == torch.float32 for p in params)
    assert all(h.dtype == torch.float32 for h in solver.history)
    state_file = solver.snapshot()
    model = read_binary(str(tmp_path / "snap_iter_3.caffemodel"), caffe_pb2.NetParameter())
    ip = next(lp for lp in model.layer if lp.name == "ip")
    assert len(ip.blobs[0].data) == params[0].count() and len(ip.blobs[0].double_data) == 0
    np.testing.assert_array_equal(np.asarray(ip.blobs[0].data, dtype=np.float32),
                                  params[0].data.cpu().numpy().ravel())
    state = read_binary(state_file, caffe_pb2.SolverState())
    np.testing.assert_array_equal(np.asarray(state.history[0].data, dtype=np.float32),
                                  solver.history[0].data.cpu().numpy().ravel())


def test_set_precision_switches_a_running_solver(tmp_path):
    solver = make_solver(tmp_path)
    assert solver.precision.mode == "fp32"
    solver.step(1)
    solver.set_precision("fp16", init_scale=256.0)
    assert solver.precision.mode == "fp16" and solver.precision.scaler.scale == 256.0
    solver.step(1)
    assert solver.iter == 2


# --- training --------------------------------------------------------------------------------------------------
def lenet_train_net(db):
    """examples/mnist/lenet.prototxt with a Data layer on `db` (batch 50) and SoftmaxWithLoss instead of Softmax."""
    net = read_net_param(str(LENET))
    data = parse_text(f'name: "mnist" type: "Data" top: "data" top: "label" transform_param {{ scale: 0.00390625 }} '
                      f'data_param {{ source: "{db}" batch_size: 50 backend: LMDB }}', caffe_pb2.LayerParameter())
    net.layer[0].CopyFrom(data)
    net.layer[-1].CopyFrom(parse_text('name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" '
                                      'top: "loss"', caffe_pb2.LayerParameter()))
    return net


TRAIN_SOLVER = """net: "{net}" base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005 lr_policy: "inv" gamma: 0.0001
power: 0.75 display: 0 max_iter: 60 snapshot: 0 snapshot_after_train: false random_seed: 1701
snapshot_prefix: "{prefix}"
"""


def test_lenet_trains_in_bf16_as_in_fp32(golden, tmp_path):
    """60 iterations of LeNet on 1 000 digits (Caffe's lenet_solver settings), fp32 and bf16 from the same seed:
    the bf16 run learns as well — accuracy on 500 bundled test digits within 3 points of fp32."""
    net_file = tmp_path / "lenet.prototxt"
    write_text(lenet_train_net(golden / "files" / "mnist1000_lmdb"), str(net_file))
    images, labels = digits(500)
    results = {}
    for mode in ("fp32", "bf16"):
        common.set_random_seed(1701)
        param = parse_text(TRAIN_SOLVER.format(net=net_file, prefix=tmp_path / mode), caffe_pb2.SolverParameter())
        solver = SGDSolver(param, precision=mode)
        try:
            solver.step(1)
            first_loss = solver.smoothed_loss
            solver.step(59)
            deploy = Net(str(LENET), phase=caffe_pb2.TEST)
            deploy.share_trained_layers_with(solver.net)
            correct = 0
            for start in range(0, 500, 64):
                batch = images[start:start + 64]
                deploy.blobs["data"].reshape(batch.shape)
                deploy.blobs["data"].data.copy_(batch)
                solver.precision.forward(deploy)
                correct += int((deploy.blobs["ip2"].data.argmax(1).cpu() == labels[start:start + 64]).sum())
            results[mode] = (correct / 500, first_loss, solver.smoothed_loss)
        finally:
            solver.close()
        assert all(p.dtype == torch.float32 for p in solver.net.learnable_params)
    (acc32, first32, _), (acc16, first16, _) = results["fp32"], results["bf16"]
    assert first16 == pytest.approx(first32, rel=1e-2)
    assert acc32 > 0.8, results
    assert abs(acc16 - acc32) <= 0.03, results
