"""Starting the ranks of a data-parallel run, and noticing when one of them dies.

Caffe ran its solvers as threads of one process (P2PSync, then NCCL); brewnet runs one process per rank, so a
rank is isolated from its neighbours' crashes — and the other ranks must learn of a crash instead of waiting
for it forever.  Three ways a run gets its ranks:

    launch(fn, nprocs)            this machine: spawns nprocs processes, rank r runs fn(*args) on devices[r]
    torchrun ... caffe train      torchrun (or any launcher that sets RANK, WORLD_SIZE, MASTER_ADDR, ...)
                                  starts the processes; `init_from_environment()` joins them (multi-node)

How a failure ends the run instead of hanging it:

    a rank raises                 it writes its error where the launcher finds it and exits with status 1
    a rank dies (killed, OOM)     its sockets close, so the peers' next all-reduce fails at once (gloo: "Connection
                                  closed by peer"); they raise DistributedError naming themselves and exit
    a rank hangs but lives        the peers' collectives give up after `timeout` seconds (init_process_group)
    the launcher notices          the first rank that exits non-zero starts a grace period; ranks still alive
                                  after it are terminated; launch() raises DistributedError naming every failed
                                  rank, its exit status and its error message
    the launcher dies             each rank watches its parent and exits when it is gone (no orphans)

The ranks get their own process group, so a Ctrl-C in the terminal reaches only the launcher, which passes
SIGINT / SIGHUP / SIGTERM on to rank 0: the root solver decides (sigint_effect / sighup_effect / sigterm_effect)
and tells the others.
"""
import datetime
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback

import torch
import torch.distributed as dist

from .. import switches
from ..core import common
from ..errors import BrewnetError, SolverError
from ..log import get_logger, logger as brewnet_logger

log = get_logger("parallel")

# A collective that waits longer than its timeout for a live but silent peer gives up.  Long by default
# ($BREWNET_DIST_TIMEOUT, 1800 s: switches.py), because the other ranks wait in their next collective while
# rank 0 alone tests and snapshots (Caffe's root-only TestAll).  None: that default, read when used.
DEFAULT_TIMEOUT = None
# How long the launcher lets the surviving ranks find out about a failure by themselves before ending them.
DEFAULT_GRACE = 30.0
_TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(SolverError):
    """A data-parallel run that cannot go on: a rank failed, died, or stopped answering."""


# --- who am I ------------------------------------------------------------------------------------------------
def torchrun_environment():
    """(rank, world_size, local_rank) when this process was started by torchrun (or a launcher setting the same
    variables) as one of several ranks, else None."""
    if dist.is_initialized() or any(name not in os.environ for name in _TORCHRUN_VARIABLES):
        return None
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError:
        raise DistributedError("torchrun environment: Expect: integer RANK, WORLD_SIZE and LOCAL_RANK, Actual: "
                               f"RANK={os.environ.get('RANK')!r} WORLD_SIZE={os.environ.get('WORLD_SIZE')!r} "
                               f"LOCAL_RANK={os.environ.get('LOCAL_RANK')!r}") from None
    if world < 1 or not 0 <= rank < world:
        raise DistributedError(f"torchrun environment: Expect: 0 <= RANK < WORLD_SIZE, Actual: RANK={rank} "
                               f"WORLD_SIZE={world}")
    return rank, world, local_rank


def describe_rank():
    if not dist.is_initialized():
        return "rank 0 of 1"
    return f"rank {dist.get_rank()} of {dist.get_world_size()}"


def _become_rank(rank, world, device):
    """What every rank does before joining the group: Caffe's solver_count / solver_rank (the data layers read
    their share by them), the device, and a log that only rank 0 writes at INFO level (Caffe's
    LOG_IF(INFO, Caffe::root_solver()))."""
    common.set_solver_count(world)
    common.set_solver_rank(rank)
    if device is not None:
        common.set_device(device)
        common.set_mode_gpu()
        torch.cuda.set_device(device)
    if rank != 0:
        brewnet_logger.setLevel(max(brewnet_logger.level, logging.WARNING))


def init_from_environment(backend=None, device=None, timeout=DEFAULT_TIMEOUT):
    """Join the ranks a torchrun-style launcher started (MASTER_ADDR / MASTER_PORT rendezvous, env://)."""
    found = torchrun_environment()
    if found is None:
        raise DistributedError("init_from_environment: RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT must be set "
                               "(start the processes with torchrun)")
    rank, world, _ = found
    timeout = switches.dist_timeout(timeout)
    backend = backend or ("nccl" if device is not None else "gloo")
    _become_rank(rank, world, device)
    try:
        dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=timeout))
    except (RuntimeError, ValueError) as e:
        raise DistributedError(f"rank {rank} of {world}: cannot join the process group at "
                               f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} ({backend}): {e}") from None
    log.info("Joined %d ranks through %s:%s (%s backend)", world, os.environ["MASTER_ADDR"],
             os.environ["MASTER_PORT"], backend)
    return rank, world


# --- launching on this machine --------------------------------------------------------------------------------
def launch(fn, nprocs, args=(), backend="gloo", devices=None, timeout=DEFAULT_TIMEOUT, grace=DEFAULT_GRACE,
           master_addr="127.0.0.1"):
    """Run fn(*args) in `nprocs` new processes joined in one torch.distributed group (rank r on devices[r] when
    devices are given).  fn must be importable by name (spawned processes import it).  Returns when all ranks
    are done; raises DistributedError naming the failed ranks otherwise."""
    if nprocs < 1:
        raise DistributedError(f"launch: Expect: at least 1 process, Actual: {nprocs}")
    timeout = switches.dist_timeout(timeout)
    if devices is not None and len(devices) != nprocs:
        raise DistributedError(f"launch: Expect: one device per process, Actual: {len(devices)} devices for "
                               f"{nprocs} processes")
    # The rendezvous store lives in the launcher: no port to guess, and no rank is special at start-up.
    store = dist.TCPStore(master_addr, 0, nprocs, is_master=True, wait_for_workers=False,
                          timeout=datetime.timedelta(seconds=timeout))
    context = multiprocessing.get_context("spawn")
    error_dir = tempfile.mkdtemp(prefix="brewnet-ranks-")
    spec = {"fn": fn, "args": tuple(args), "world": nprocs, "backend": backend, "devices": devices,
            "timeout": timeout, "master": (master_addr, store.port), "parent": os.getpid(), "errors": error_dir}
    processes = []
    forwarding = _SignalForwarder(processes)
    try:
        for rank in range(nprocs):
            process = context.Process(target=_rank_main, args=(rank, spec), name=f"brewnet-rank-{rank}")
            process.start()
            processes.append(process)
        failures = _watch(processes, grace)
        if failures:
            raise DistributedError(_failure_report(failures, processes, error_dir))
    finally:
        forwarding.close()
        for process in processes:
            _end(process)
        shutil.rmtree(error_dir, ignore_errors=True)
        del store


def _watch(processes, grace):
    """Wait for every rank; after the first failure give the others `grace` seconds, then end them.
    Returns [(rank, how)] for the failed ranks in the order they failed."""
    alive = {p.sentinel: rank for rank, p in enumerate(processes)}
    failures, deadline = [], None
    while alive:
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready = multiprocessing.connection.wait(list(alive), timeout=wait)
        for sentinel in ready:
            rank = alive.pop(sentinel)
            processes[rank].join()
            code = processes[rank].exitcode
            if code != 0:
                failures.append((rank, _exit_status(code)))
                log.error("rank %d (pid %d) %s", rank, processes[rank].pid, _exit_status(code))
                if deadline is None:
                    deadline = time.monotonic() + grace
        if not ready and deadline is not None and time.monotonic() >= deadline:
            for sentinel, rank in sorted(alive.items(), key=lambda item: item[1]):
                log.error("rank %d (pid %d) still running %gs after the first failure: terminating it", rank,
                          processes[rank].pid, grace)
                _end(processes[rank])
                failures.append((rank, f"was terminated by the launcher {grace:g}s after the first failure"))
            alive.clear()
    return failures


def _exit_status(code):
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name} (exit status {code})"
    return f"exited with status {code}"


def _failure_report(failures, processes, error_dir):
    lines = [f"data-parallel training failed ({len(processes)} ranks); first failure: rank {failures[0][0]}"]
    for rank, how in failures:
        line = f"  rank {rank} (pid {processes[rank].pid}) {how}"
        message = _read_error(error_dir, rank)
        if message:
            line += f": {message}"
        lines.append(line)
    return "\n".join(lines)


def _read_error(error_dir, rank):
    try:
        with open(os.path.join(error_dir, f"rank{rank}.error"), encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return ""


def _end(process, wait=5.0):
    if process.is_alive():
        process.terminate()
        process.join(wait)
    if process.is_alive():
        process.kill()
        process.join()


class _SignalForwarder:
    """SIGINT / SIGHUP / SIGTERM at the launcher go to rank 0 (the solver that owns sigint_effect /
    sighup_effect / sigterm_effect)."""

    SIGNALS = (signal.SIGINT, signal.SIGHUP, signal.SIGTERM)

    def __init__(self, processes):
        self.processes, self.previous = processes, {}
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self.previous[signum] = signal.signal(signum, self._forward)

    def _forward(self, signum, frame):
        if self.processes and self.processes[0].is_alive():
            os.kill(self.processes[0].pid, signum)

    def close(self):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}


# --- inside a spawned rank ------------------------------------------------------------------------------------
def _rank_main(rank, spec):
    os.setpgrp()    # terminal signals go to the launcher, which forwards them to rank 0
    _watch_parent(spec["parent"], rank)
    device = spec["devices"][rank] if spec["devices"] is not None else None
    if device is None and "OMP_NUM_THREADS" not in os.environ:
        # n ranks on one machine share its cores (torchrun sets OMP_NUM_THREADS for the same reason)
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // spec["world"]))
    try:
        _become_rank(rank, spec["world"], device)
        host, port = spec["master"]
        timeout = datetime.timedelta(seconds=spec["timeout"])
        try:
            store = dist.TCPStore(host, port, spec["world"], is_master=False, timeout=timeout)
            dist.init_process_group(spec["backend"], store=store, rank=rank, world_size=spec["world"],
                                    timeout=timeout)
        except (RuntimeError, ValueError) as e:
            raise DistributedError(f"rank {rank} of {spec['world']}: cannot join the process group at "
                                   f"{host}:{port} ({spec['backend']}): {e}") from None
        spec["fn"](*spec["args"])
        dist.destroy_process_group()
    except BaseException as e:  # noqa: BLE001 — whatever ends a rank must reach the launcher's report
        message = f"{type(e).__name__}: {e}"
        if not isinstance(e, (BrewnetError, KeyboardInterrupt)):    # a bug, not a user error: keep the trace
            message += "\n" + "".join(traceback.format_exception(e)).rstrip()
        _write_error(spec["errors"], rank, message)
        brewnet_logger.setLevel(min(brewnet_logger.level, logging.ERROR))
        log.critical("rank %d: %s", rank, message)
        sys.stderr.flush()
        # Leave at once: data threads and half-open sockets must not keep a failed rank alive.
        os._exit(1)


def _write_error(error_dir, rank, message):
    path = os.path.join(error_dir, f"rank{rank}.error")
    try:
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(message)
        os.replace(path + ".tmp", path)
    except OSError:
        pass


def _watch_parent(parent, rank, period=1.0):
    """Exit when the launcher is gone, so that a killed launcher leaves no ranks behind."""
    def watch():
        while True:
            time.sleep(period)
            if os.getppid() != parent:
                log.critical("rank %d: the launcher (pid %d) is gone; exiting", rank, parent)
                sys.stderr.flush()
                os._exit(1)
    threading.Thread(target=watch, name="brewnet-parent-watch", daemon=True).start()
