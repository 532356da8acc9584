"""Every switch of brewnet in one place: the environment variables, and the in-code flags and API calls that
do the same thing.

An environment variable is read when its value is used (a net built, a solver made, a process group joined),
never at import, so a script may set one after `import caffe`.  The in-code form, where there is one, wins over
the variable for the object it is set on.

| variable              | default | what it does                                        | in code / API                        |
| --------------------- | ------- | --------------------------------------------------- | ------------------------------------ |
| BREWNET_PRECISION     | fp32    | compute precision: fp32, bf16 or fp16 (fp32 master  | caffe.set_precision, Solver          |
|                       |         | weights; fp16 with dynamic loss scaling)            | (precision=), `caffe train -precision`|
| BREWNET_COMPILE       | 0       | 1: record forward + backward into a CUDA graph and  | solver.compile = True,               |
|                       |         | replay it (the CPU runs eagerly)                    | `caffe train -compile`               |
| BREWNET_FUSE          | 1       | 0: run an in-place BatchNorm + Scale pair as two    | net.runtime.fuse_layers = False      |
|                       |         | layers instead of one fused step                    |                                      |
| BREWNET_READ_FIRST    | 0       | 1: on an accelerator read the loss before issuing   | solver.read_after_update = False     |
|                       |         | the update, as Caffe (no undo copies)               |                                      |
| BREWNET_TF32          | 0       | 1: allow TF32 convolutions and matmuls in GPU mode  | core.common.set_tf32(True)           |
|                       |         | (faster, not Caffe's float32 numbers)               |                                      |
| BREWNET_REQUIRE_GPU   | 0       | 1: pycaffe's set_mode_gpu without CUDA is an error  |                                      |
|                       |         | instead of a warning and CPU mode                   |                                      |
| BREWNET_DIST_TIMEOUT  | 1800    | seconds a data-parallel collective waits for a live | launch(..., timeout=),               |
|                       |         | but silent rank (must exceed the longest test pass) | caffe.NCCL(solver, uid, timeout=)    |

In-code flags without a variable: NetRuntime.pack_running_sums (BatchNorm statistics packed in one tensor per net),
NetRuntime.lazy_clear and LAZY_CLEAR_CPU_LIMIT (diffs dropped rather than zeroed), runtime.deferred.GATHER_CPU_GRADIENTS,
runtime.device_checks.DEFER_ON_CPU, SGDSolver.batched_update and SGDSolver.CHUNK (how the update iterates over the
parameters), solver.compile.  Variables of the test suite and examples, not of the library: BREWNET_GOLDEN
and BREWNET_SCHEMA (tests/conftest.py), BREWNET_TEST_MODE=gpu (every test in GPU mode), BREWNET_BOOK_THREADS
(examples/book).
"""
import os

DEFAULTS = {
    "BREWNET_PRECISION": "",
    "BREWNET_COMPILE": "0",
    "BREWNET_FUSE": "1",
    "BREWNET_READ_FIRST": "0",
    "BREWNET_TF32": "0",
    "BREWNET_REQUIRE_GPU": "0",
    "BREWNET_DIST_TIMEOUT": "1800",
}


def value(name):
    """The variable's text now, or its default ('' and unset alike mean the default)."""
    return os.environ.get(name) or DEFAULTS[name]


def on(name):
    """A 0/1 switch: anything but '0' turns it on."""
    return value(name) != "0"


def dist_timeout(timeout=None):
    """`timeout` seconds when given, else $BREWNET_DIST_TIMEOUT (1800)."""
    return float(value("BREWNET_DIST_TIMEOUT") if timeout is None else timeout)
