"""Timing helpers shared by the benchmarks.

The development machine has 2 cores shared with other jobs, so timings drift.  `interleaved` therefore runs
the contenders in alternating order, round after round, and reports per contender the median time, and for
the ratio the median of the per-round ratios: a load spike hits both sides of a round alike.
"""
import ctypes
import ctypes.util
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch


def setup_process(threads=None):
    """Flush denormal floats to zero, for both contenders alike.  Training on random inputs drives some
    values (momentum histories, tiny gradients) into the denormal range, where x86 arithmetic is up to 100x
    slower; which side gets there first depends on its random initial weights, not on the framework, and
    made single iterations swing between 20 and 300 ms.  Malloc keeps its memory (steady_malloc).  `threads`
    sets torch's intra-op threads.  Also silence brewnet's INFO log (net assembly)."""
    import logging
    torch.set_flush_denormal(True)
    steady_malloc()
    if threads:
        torch.set_num_threads(threads)
    logging.getLogger("brewnet").setLevel(logging.WARNING)


def steady_malloc():
    """Keep glibc's malloc from handing memory back to the kernel between iterations (fixed trim and mmap
    thresholds instead of its adaptive ones), for both contenders.  With two frameworks in one process the
    heap's shape depends on both: LeNet then swung between phases of 0 and 3 000 page faults per brewnet
    step (26 vs 34 ms) or per PyTorch step, depending on which allocation met a trimmed heap; either program
    alone takes none.  (Intel's PyTorch tuning guide prescribes jemalloc/tcmalloc for the same reason.)"""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-1, 1 << 30)       # M_TRIM_THRESHOLD: keep up to 1 GiB of free heap
        libc.mallopt(-3, 32 << 20)      # M_MMAP_THRESHOLD: blocks below 32 MiB come from the heap
    except (OSError, AttributeError):
        pass                            # not glibc: nothing to steady


def interleaved(contenders, rounds, warmup=1, repeat=1, settle=1):
    """contenders: {name: callable}.  Each round calls every callable `settle` times untimed and then
    `repeat` times timed (order alternating between rounds).  Returns {name: [seconds per call, one per
    round]}.  The untimed calls put the contender's own buffers back into the caches the other one just
    used: a user trains with one framework at a time, and without them the side whose memory stays allocated
    between calls (brewnet's blobs, as Caffe's) pays for the other's cache traffic on its first call."""
    names = list(contenders)
    for _ in range(warmup):
        for name in names:
            contenders[name]()
    times = {name: [] for name in names}
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            fn = contenders[name]
            for _ in range(settle):
                fn()
            start = time.perf_counter()
            for _ in range(repeat):
                fn()
            times[name].append((time.perf_counter() - start) / repeat)
    return times


def median(values):
    return statistics.median(values)


def paired_ratio(times, a, b):
    """Median over rounds of a's time / b's time in the same round."""
    return statistics.median(x / y for x, y in zip(times[a], times[b]))


def machine_description():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = "%.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        load = "n/a"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": load,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "mkldnn": torch.backends.mkldnn.is_available(),
        "platform": platform.platform(),
    }


def fmt_ms(seconds):
    if seconds < 1e-3:          # the tiny net's step: a tenth of a millisecond would round away
        return f"{seconds * 1e3:.3f}"
    return f"{seconds * 1e3:.1f}" if seconds < 10 else f"{seconds * 1e3:.0f}"
