"""Mixed precision: bf16 / fp16 compute for any prototxt net, with fp32 master weights, blobs and snapshots.

brewnet's layers are hand-written (forward *and* backward), so torch.autocast alone reaches too little of them:
autocast skips calls with `out=`, in-place accumulations such as `w.diff.addmm_(dy.t(), x)`, and the backward
kernels (`aten.convolution_backward`), and it does not know `aten.convolution`.  The compute context here
therefore has two parts:

    torch.autocast(device_type, dtype)     for layer code written with torch.nn.functional (e.g. Python layers)
    LowPrecisionCompute(dtype)             a TorchFunctionMode for the matmul-class ops of the layers:
                                           convolution (forward and backward), mm / addmm / bmm / matmul / mv,
                                           linear, einsum, tensordot

The mode is not entered over whole passes: a TorchFunctionMode routes every torch call made under it
through Python, which for ResNet-50 was 5,400 calls a step for 109 matmul-class ones (a bf16 step of the
thin ResNet-50 on the CPU cost 1.75 fp32 ones).  The hot layers hand their kernels to it one by one
(`lowered_call`: Convolution, Deconvolution, InnerProduct); layers with matmuls among many other ops run
their forward and backward under it (`lowered` methods: RNN/LSTM, Python layers).

A matmul-class op runs on inputs rounded to bf16/fp16 (the kernel accumulates in fp32) and its result is
stored back in the caller's precision: new tensors come back fp32, `out=` tensors are filled, and in-place
accumulations (`addmm_` & co.) add the low-precision product to the fp32 accumulator, so that parameter diffs
still sum in fp32 (iter_size, shared weights).  Everything else — elementwise layers, pooling, softmax,
losses, BatchNorm statistics, the solver's update — sees fp32 blobs and stays fp32.  Parameters (the master
weights), their diffs, the solver history and therefore snapshots never leave fp32.

fp16 has a narrow exponent range, so small gradients underflow to zero.  LossScaler implements dynamic loss
scaling: after the forward pass the diffs of the loss tops (which hold the loss weights, Caffe's convention)
are multiplied by S, so every gradient of the backward pass is S times larger; before the update the
parameter diffs are divided by S.  If any of them is inf/NaN the update is skipped and S is halved; after
`growth_interval` finite iterations in a row S doubles.

    p = Precision("bf16")
    with p.compute(net.device):
        net.forward()
    # the Solver does this for you: Solver(..., precision="fp16"), solver.set_precision("bf16"),
    # `caffe train -precision bf16`, caffe.set_precision("bf16") / BREWNET_PRECISION=bf16
"""
import contextlib
import functools
import math
import threading

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .. import switches
from ..errors import BrewnetError
from ..log import get_logger
from ..core.blob import scale_all

log = get_logger("precision")

FP32, BF16, FP16 = "fp32", "bf16", "fp16"
MODES = (FP32, BF16, FP16)
LOW_DTYPES = {BF16: torch.bfloat16, FP16: torch.float16}
ENV_VARIABLE = "BREWNET_PRECISION"
_ALIASES = {"float32": FP32, "float": FP32, "bfloat16": BF16, "float16": FP16, "half": FP16}

_default = {"mode": None}       # None: the environment variable decides, else fp32


def check_mode(mode, where="precision"):
    """'bf16' -> 'bf16'; accepts torch's spellings too (bfloat16, float16, half); anything else is an error."""
    if isinstance(mode, Precision):
        return mode.mode
    name = _ALIASES.get(str(mode).lower(), str(mode).lower())
    if name not in MODES:
        raise BrewnetError(f"{where}: Expect: one of {', '.join(MODES)}, Actual: '{mode}'")
    return name


def set_precision(mode):
    """The precision of solvers and pycaffe nets that are not given one explicitly (pycaffe's
    caffe.set_precision); None goes back to the environment variable BREWNET_PRECISION, else fp32."""
    _default["mode"] = None if mode is None else check_mode(mode)


def get_precision():
    """The default precision: set_precision's, else $BREWNET_PRECISION, else fp32."""
    if _default["mode"] is not None:
        return _default["mode"]
    env = switches.value(ENV_VARIABLE)
    return check_mode(env, ENV_VARIABLE) if env else FP32


# --- the compute context -------------------------------------------------------------------------------------
def _functional_ops():
    aten = torch.ops.aten
    ops = [torch.mm, torch.matmul, torch.bmm, torch.addmm, torch.baddbmm, torch.addbmm, torch.mv, torch.addmv,
           torch.einsum, torch.tensordot, torch.chain_matmul,
           torch.Tensor.mm, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.Tensor.__rmatmul__,
           torch.Tensor.bmm, torch.Tensor.addmm, torch.Tensor.baddbmm, torch.Tensor.addbmm, torch.Tensor.mv,
           torch.Tensor.addmv,
           F.linear, F.bilinear, F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d,
           F.conv_transpose3d,
           torch.convolution, aten.convolution, aten.convolution_backward, aten._convolution, aten.mm,
           aten.addmm, aten.bmm, aten.matmul, aten.linear, aten.convolution.out]
    return frozenset(ops)


# Out-variant overloads the layers call with out=: run as their functional op, then copied into `out`.
_OUT_OVERLOADS = {torch.ops.aten.convolution.out: torch.ops.aten.convolution.default}


def _weight_positions():
    """Where the convolution ops take the weight and bias: their low-precision copies are made once per
    compute context (a training step) and reused by the backward, instead of once per call."""
    aten = torch.ops.aten
    forward = (1, 2)
    return {torch.convolution: forward, aten.convolution: forward, aten.convolution.default: forward,
            aten.convolution.out: forward, aten.convolution_backward: (2,)}


def _accumulating_ops():
    """In-place `acc = beta * acc + alpha * product`: the product in low precision, the sum in fp32."""
    return {torch.Tensor.addmm_: torch.mm, torch.Tensor.baddbmm_: torch.bmm,
            torch.Tensor.addbmm_: lambda a, b: torch.bmm(a, b).sum(0), torch.Tensor.addmv_: torch.mv}


class LowPrecisionCompute(TorchFunctionMode):
    """Run the matmul-class torch ops of the code inside on `dtype` inputs, storing results in the callers'
    precision (see the module docstring).  Other ops pass through untouched.  Thread-local, like autocast:
    prefetch threads are not affected."""
    FUNCTIONAL = _functional_ops()
    ACCUMULATING = _accumulating_ops()
    WEIGHTS = _weight_positions()

    def __init__(self, dtype):
        super().__init__()
        self.dtype = dtype
        # (memory, version, shape, dtype) -> (the weight, its copy in self.dtype), for this context; holding
        # the weight keeps its memory from being reused by another tensor while the entry lives.
        self.weight_casts = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return self.call(func, args, kwargs or {})

    def call(self, func, args, kwargs):
        """func(*args, **kwargs), a matmul-class op in self.dtype and any other op as it is."""
        if func in self.FUNCTIONAL:
            return self._functional(func, args, kwargs)
        product = self.ACCUMULATING.get(func)
        if product is not None:
            return self._accumulate(product, args, kwargs)
        return func(*args, **kwargs)

    def _low(self, x):
        if isinstance(x, torch.Tensor):
            if x.is_floating_point() and x.dtype != self.dtype and x.element_size() > 2:
                return x.to(self.dtype)
            return x
        if isinstance(x, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in x):
            return type(x)(self._low(v) for v in x)      # einsum's operands; not strides and paddings
        return x

    def _functional(self, func, args, kwargs):
        home = _home_dtype(args)
        if home is None:
            return func(*args, **kwargs)
        out = kwargs.pop("out", None)
        weights = self.WEIGHTS.get(func, ())
        low_args = [self.low_weight(a) if i in weights else self._low(a) for i, a in enumerate(args)]
        func = _OUT_OVERLOADS.get(func, func)
        result = func(*low_args, **{k: self._low(v) for k, v in kwargs.items()})
        if out is not None:
            out.copy_(result)
            return out
        return _cast(result, home)

    def low_weight(self, w):
        """The weight in low precision, cast once per context: the version counter tells whether it was
        written since (the solver's update writes between steps, so within a step it never is).  The
        strides tell a weight from its transpose."""
        if not isinstance(w, torch.Tensor):
            return self._low(w)
        key = (w.data_ptr(), w._version, w.shape, w.stride(), w.dtype)
        entry = self.weight_casts.get(key)
        if entry is None:
            entry = self.weight_casts[key] = (w, self._low(w))
        return entry[1]

    def _accumulate(self, product, args, kwargs):
        acc, a, b = args[0], args[1], args[2]
        beta, alpha = kwargs.get("beta", 1), kwargs.get("alpha", 1)
        p = product(self._low(a), self._low(b))
        if beta != 1:
            acc.mul_(beta)
        return acc.add_(p, alpha=alpha)       # add_ promotes the bf16 product into the fp32 accumulator


class _ThisThread(threading.local):
    mode = None         # the LowPrecisionCompute of the compute context active on this thread, if any


_this_thread = _ThisThread()


@contextlib.contextmanager
def _lowering(dtype):
    """The scope of a compute context: `lowered` methods called inside run under one LowPrecisionCompute,
    whose weight casts the whole context (a training step's forward and backward) shares."""
    previous = _this_thread.mode
    _this_thread.mode = LowPrecisionCompute(dtype)
    try:
        yield
    finally:
        _this_thread.mode = previous


def compute_mode():
    """The LowPrecisionCompute of the compute context active on this thread; None outside one and in fp32."""
    return _this_thread.mode


def lowered_call(func, *args, **kwargs):
    """func(*args, **kwargs) for a matmul-class op a layer calls: in the compute context's precision, or as
    it is outside one.  The layers' hot kernels call this instead of running under the mode (`lowered`),
    which would also route the layer's other torch calls through Python."""
    mode = _this_thread.mode
    return func(*args, **kwargs) if mode is None else mode.call(func, args, kwargs)


def lowered_weight(w):
    """A layer's weight as a lowered_call should take it: its low-precision copy of this compute context
    (made once, shared by forward and backward), or `w` itself outside one."""
    mode = _this_thread.mode
    return w if mode is None else mode.low_weight(w)


def lowered(method):
    """Decorator for a layer method that calls matmul-class ops among many others (RNN/LSTM, Python
    layers): inside a low-precision compute context it runs under the context's LowPrecisionCompute, else
    as it is (one attribute read)."""
    @functools.wraps(method)
    def run(*args, **kwargs):
        mode = _this_thread.mode
        if mode is None:
            return method(*args, **kwargs)
        _this_thread.mode = None            # a lowered method calling another enters the mode once
        try:
            with mode:
                return method(*args, **kwargs)
        finally:
            _this_thread.mode = mode
    return run


def _home_dtype(args):
    """The precision the caller works in: that of the first (wide) floating-point tensor among the args."""
    for x in args:
        if isinstance(x, (list, tuple)):
            found = _home_dtype(x)
            if found is not None:
                return found
        elif isinstance(x, torch.Tensor) and x.is_floating_point():
            return x.dtype if x.element_size() > 2 else None
    return None


def _cast(result, dtype):
    if isinstance(result, torch.Tensor):
        return result.to(dtype) if result.is_floating_point() and result.dtype != dtype else result
    if isinstance(result, (list, tuple)):
        return type(result)(_cast(r, dtype) for r in result)
    return result


# --- fp16 loss scaling ---------------------------------------------------------------------------------------
class LossScaler:
    """Dynamic loss scaling (as torch.cuda.amp.GradScaler): the scale S starts at `init_scale`, is multiplied
    by `backoff_factor` at every iteration whose gradients overflow (that update is skipped) and by
    `growth_factor` after `growth_interval` finite iterations in a row.  `dynamic=False` keeps S fixed."""

    def __init__(self, init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000,
                 dynamic=True, min_scale=1.0):
        if not init_scale > 0 or not growth_factor >= 1 or not 0 < backoff_factor < 1 or growth_interval < 1:
            raise BrewnetError(f"LossScaler: Expect: init_scale > 0, growth_factor >= 1, 0 < backoff_factor < 1, "
                               f"growth_interval >= 1, Actual: {init_scale}, {growth_factor}, {backoff_factor}, "
                               f"{growth_interval}")
        self.scale = float(init_scale)
        self.growth_factor, self.backoff_factor = float(growth_factor), float(backoff_factor)
        self.growth_interval, self.dynamic, self.min_scale = int(growth_interval), bool(dynamic), float(min_scale)
        self.good_steps = 0
        self.skipped = 0

    def scale_loss(self, net):
        """Set the loss tops' diffs — the loss weights w, Caffe's convention — to w * S (after forward, before
        backward).  A fill, not a multiplication, so that it never compounds across iterations."""
        for layer, tops in zip(net.layers, net.top_vecs):
            for top_id, blob in enumerate(tops):
                weight = layer.loss(top_id)
                if weight:
                    blob.diff.fill_(weight * self.scale)

    def unscale(self, params):
        """Divide the accumulated parameter diffs by S."""
        diffs = [p.diff for p in params]
        if diffs:
            scale_all(diffs, 1.0 / self.scale)

    @staticmethod
    def all_finite(params):
        """Whether no parameter diff holds inf or NaN.  One multi-tensor kernel (torch.amp's check, with a
        factor of 1, which leaves the values as they are) rather than two ops per parameter, which for a net
        of hundreds of parameter blobs costs more than the check itself."""
        if not params:
            return True
        diffs = [p.diff for p in params]
        found = torch.zeros(1, device=diffs[0].device)
        torch._amp_foreach_non_finite_check_and_unscale_(diffs, found, torch.ones(1, device=found.device))
        return not bool(found.item())

    def update(self, finite, iteration):
        """Adjust S after an iteration; returns whether its update may be applied."""
        if not finite:
            self.skipped += 1
            self.good_steps = 0
            old = self.scale
            if self.dynamic:
                self.scale = max(self.scale * self.backoff_factor, self.min_scale)
            log.info("[fp16] loss scale %s -> %s: gradient overflow (inf/NaN) at iteration %d, update skipped",
                     _g(old), _g(self.scale), iteration)
            return False
        self.good_steps += 1
        if self.dynamic and self.good_steps >= self.growth_interval:
            old, self.scale = self.scale, self.scale * self.growth_factor
            self.good_steps = 0
            log.info("[fp16] loss scale %s -> %s after %d iterations without overflow", _g(old), _g(self.scale),
                     self.growth_interval)
        return True


# --- the policy ----------------------------------------------------------------------------------------------
_NO_CONTEXT = contextlib.nullcontext()       # fp32's compute context (reusable: it does nothing)


class Precision:
    """A precision mode ('fp32', 'bf16', 'fp16') with its compute context and, for fp16, its loss scaler.
    Keyword arguments go to LossScaler (fp16 only)."""

    def __init__(self, mode=FP32, **scaler_args):
        self.mode = check_mode(mode)
        self.dtype = LOW_DTYPES.get(self.mode, torch.float32)
        if scaler_args and self.mode != FP16:
            raise BrewnetError(f"precision {self.mode}: loss scaling options ({', '.join(scaler_args)}) apply to "
                               "fp16 only")
        self.scaler = LossScaler(**scaler_args) if self.mode == FP16 else None
        self.enabled = self.mode != FP32       # anything to do beyond fp32 (the solver's step asks each iteration)

    @classmethod
    def of(cls, value=None):
        """A Precision from a mode name, a Precision (returned as is) or None (the default, get_precision())."""
        if isinstance(value, Precision):
            return value
        return cls(get_precision() if value is None else value)

    def compute(self, device="cpu"):
        """The context a net's forward/backward runs in: nothing for fp32; else autocast, with the `lowered`
        layer methods under one LowPrecisionCompute."""
        if not self.enabled:
            return _NO_CONTEXT
        device_type = torch.device(device).type
        stack = contextlib.ExitStack()
        stack.enter_context(torch.autocast(device_type=device_type, dtype=self.dtype))
        stack.enter_context(_lowering(self.dtype))
        return stack

    def forward(self, net, start=None, end=None):
        with self.compute(net.device):
            return net.forward(start, end)

    def forward_backward(self, net, read=True):
        """net.forward_backward() in this precision; for fp16 the gradients come out multiplied by the loss
        scale (finish_gradients divides them back).  The loss and the layers' checks (labels in range) are
        read once backward is issued: on a GPU, reading them between the passes would make the host wait for
        the forward kernels before it issues the backward ones.  read=False reads nothing: the loss comes
        back as the device left it and the checks stay pending (net.check_values(); the solver reads both
        after issuing its update, runtime/late_read.py)."""
        with self.compute(net.device):
            loss = net.forward_loss(check=False)
            if self.scaler is not None:
                self.scaler.scale_loss(net)
            net.backward()
        if not read:
            return loss
        net.check_values()          # a bad label raises here, before the solver's update
        return float(loss)

    def unscale(self, params):
        if self.scaler is not None:
            self.scaler.unscale(params)

    def accept_update(self, params, iteration):
        """fp16: check the (unscaled) gradients, adjust the scale; False means skip this update."""
        if self.scaler is None:
            return True
        return self.scaler.update(LossScaler.all_finite(params), iteration)

    def __repr__(self):
        extra = f", loss scale {_g(self.scaler.scale)}" if self.scaler is not None else ""
        return f"Precision({self.mode}{extra})"


def _g(x):
    return "%g" % x if math.isfinite(x) else str(x)
