"""The opt-in compiled path (`caffe train -compile`, `solver.compile = True`): a Net's forward + backward
recorded once into a CUDA graph and replayed every iteration.

Why CUDA graphs rather than torch.compile: a Caffe net is already a fixed list of kernels over buffers that
keep their memory from one iteration to the next (the blobs), which is exactly what a CUDA graph replays,
with the very same kernels, so the numbers are identical to the eager path; what it removes is the
per-kernel launch cost of the Python layer loop, which dominates small batches on a fast GPU (ResNet-50 at
batch 8: ~600 kernels per iteration).  torch.compile was measured on the CPU (LeNet: 25 s to compile, no
gain, and 13 graph breaks for forward + backward), and its generated kernels round differently.  On the CPU
`-compile` therefore runs the eager path (and says so once).

What is recorded: every layer after the leading data layers (those without bottoms run eagerly before each
replay: they copy the next batch into their tops' memory, which the graph reads), then the whole backward.
The solver's update stays eager (on a GPU it is a few batched foreach kernels).  Before recording, the step
runs `warmup` times eagerly on a side stream, with every host-side check on (label ranges...), so that lazily
created buffers exist; the layer blobs (weights and BatchNorm's running statistics) and the parameter diffs
are restored afterwards, so the warm-up leaves no trace.  During the recording `common.capturing()` is true
and layers skip their host-side checks: a bad label met later trips a device assert instead of a LayerError.

Not recordable, refused with a NetError naming the layer: a layer that says why (its `not_recordable`
reason, core/layer.py: Python layers, layers that read files or the host during forward, whose work would be
frozen into the graph), and any step that still makes the host wait for the device or copies host values
into it (checked with HostSyncs on the last warm-up; of Caffe's layers only Filter would, and it declares
so).  When blob shapes or memory change (a reshape, an eager forward in between), the step is recorded
again.  Mixed precision runs eagerly (autocast caches its casts of the weights across a recording).
"""
import traceback

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ..errors import NetError
from ..log import get_logger
from ..core import common

log = get_logger("capture")


def source_layers(net):
    """How many leading layers produce data without bottoms (they run eagerly, outside the graph)."""
    count = 0
    while count < len(net.layers) and not net.bottom_vecs[count]:
        count += 1
    return count


def check_recordable(net, first):
    """Refuse the net if a layer from `first` on declares that a replay cannot stand for it."""
    for name, layer in list(zip(net.layer_names, net.layers))[first:]:
        if layer.not_recordable is not None:
            raise NetError(f"-compile: layer '{name}' of type {layer.type} cannot be recorded into a CUDA graph "
                           f"({layer.not_recordable}); run without -compile")


# Ops a CUDA graph cannot record: those after which the host must wait for the device (reading a value:
# item(), float(), bool() of a tensor; a result whose size depends on the values), and lift_fresh, a tensor
# made from host data (torch.tensor(...)): on a GPU that is a copy from pageable host memory, which a
# capture forbids (and a replay would reuse the value of the recording).
SYNCING_OPS = ("aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten._unique",
               "aten.unique_", "aten.repeat_interleave", "aten.lift_fresh")


class HostSyncs(TorchDispatchMode):
    """Records every op in SYNCING_OPS run inside it, with the brewnet source line that ran it (any device:
    on the CPU it shows what would break a CUDA graph recording)."""

    def __init__(self):
        super().__init__()
        self.found = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket) if hasattr(func, "overloadpacket") else str(func)
        if name.startswith(SYNCING_OPS):
            frames = [f for f in traceback.extract_stack()[:-1] if "/brewnet/" in f.filename.replace("\\", "/")]
            where = f"{frames[-1].filename.split('brewnet', 1)[-1].lstrip('/')}:{frames[-1].lineno}" if frames else "?"
            self.found.append(f"{name} ({where})")
        return func(*args, **(kwargs or {}))


class CapturedStep:
    """forward + backward of `net`, replayed from a CUDA graph after the first call."""

    def __init__(self, net, precision, warmup=3):
        self.net, self.precision, self.warmup = net, precision, warmup
        self.first = source_layers(net)
        check_recordable(net, self.first)
        net.runtime.lazy_clear = False      # a replay adds into the recorded diffs: they must stay, zeroed
        self.graph = None
        self.loss = None
        self.memory = None

    def eager_step(self):
        """The recorded work: the layers after the sources, then backward; the loss stays a tensor."""
        net = self.net
        with self.precision.compute(net.device):
            loss = net.forward_loss(self.first, len(net.layers) - 1)
            net.backward()
        return loss

    def forward_backward(self, read=True):
        """The step, replayed; the loss as a float, or (read=False) the graph's 0-d output tensor, which the
        next replay overwrites."""
        net = self.net
        if self.first:
            net.forward(0, self.first - 1)
        if self.graph is None or self._memory() != self.memory:
            if self.graph is not None:
                log.info("-compile: blob shapes or memory changed since the recording; recording again")
            self.record()
            self.memory = self._memory()
        self.graph.replay()
        return float(self.loss) if read else self.loss

    def record(self):
        net = self.net
        saved = self._state()
        side = torch.cuda.Stream(device=net.device)
        side.wait_stream(torch.cuda.current_stream(net.device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self.eager_step()
            with common.graph_capture(), HostSyncs() as syncs:      # what the recording will run
                self.eager_step()
        torch.cuda.current_stream(net.device).wait_stream(side)
        self._restore(saved)
        if syncs.found:
            raise NetError("-compile: the step makes the host wait for the device or feeds it host values, "
                           f"which a CUDA graph cannot record: {', '.join(syncs.found)}; run without -compile")
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: the data layers' reader and prefetch threads may run CUDA-free work meanwhile.
        with common.graph_capture(), torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.loss = self.eager_step()
        if not isinstance(self.loss, torch.Tensor):
            self.loss = torch.zeros((), device=net.device)        # a net without loss layers
        log.info("-compile: recorded layers %d..%d forward and backward into a CUDA graph",
                 self.first, len(net.layers) - 1)

    def _state(self):
        """Copies of what the warm-up changes: every layer blob's data (weights, running statistics), the
        parameter diffs (the solver cleared them; the warm-up accumulates into them), the device's random
        generator (Dropout)."""
        blobs = [b for layer in self.net.layers for b in layer.blobs]
        return ([(b, b.data.clone(), b.diff.clone()) for b in blobs],
                torch.cuda.get_rng_state(self.net.device))

    def _restore(self, saved):
        blobs, rng = saved
        for blob, data, diff in blobs:
            blob.data.copy_(data)
            blob.diff.copy_(diff)
        torch.cuda.set_rng_state(rng, self.net.device)

    def _memory(self):
        """Where every blob's data and diff live: a replay writes where the recording wrote, so an eager call
        in between that moved a blob (a layer handing its top a fresh tensor) means recording again.  Asked
        before every replay, while the device waits (ResNet-50: 427 blobs), so the blob list is kept and the
        tensors are read without the Blob properties."""
        if self._blobs is None:
            self._blobs = list(self.net._blobs) + [b for layer in self.net.layers for b in layer.blobs]
        return [(b._data.shape, b._data.data_ptr(), b._diff.data_ptr() if b._diff is not None else 0)
                for b in self._blobs]

    _blobs = None


def compiled_step(net, precision):
    """A CapturedStep for a net on a CUDA device; None on the CPU (the eager path), which is logged once."""
    if torch.device(net.device).type != "cuda":
        log.info("-compile: CUDA graphs need a CUDA device; the CPU runs the eager path (torch.compile "
                 "measured no gain on the CPU and rounds differently)")
        return None
    if precision.enabled:
        log.info("-compile: mixed precision (autocast caches casts across a recording) runs eagerly")
        return None
    return CapturedStep(net, precision)
