"""A live training dashboard: `caffe train -solver S -dashboard [PORT]` serves a page of the run's curves.

    dashboard = start_dashboard(solver, port=0, host="127.0.0.1")    # None (and a warning) if it cannot start
    solver.solve()
    dashboard.close("finished")

The page (static/, drawn with the vendored uPlot) shows the train loss (raw and smoothed), every test output,
the learning rate, iterations per second with an ETA to max_iter, and per-layer mean |w| and mean |dw| of every
parameter blob at each display iteration — the statistics debug_info logs, computed without its log lines.

What it reads: the solver's own log messages (a logging handler parses them as `brewnet report` parses a log
file, curves.py) and, at display iterations, the parameter blobs (a solver callback, after the gradients are
ready and before the update, where debug_info's backward lines are logged).  It changes nothing: training runs
the same numbers with or without it, and any failure of the dashboard is logged once and leaves training alone.
Since it reads INFO messages, GLOG_minloglevel=1 and above leave only the layer statistics on the page.
"""
import logging
import threading
import time

import torch

from ...log import get_logger, logger as brewnet_logger
from .curves import RunCurves, read_log
from .server import DashboardServer, is_loopback

__all__ = ["Dashboard", "RunCurves", "read_log", "start_dashboard", "layer_statistics"]

log = get_logger("dashboard")
# How long close() lets open pages receive the final state before the program goes on (and maybe exits).
FINAL_EVENT_WAIT_S = 2.0


def layer_statistics(net):
    """({'conv1[0]': mean |w|, ...}, {'conv1[0]': mean |dw|, ...}) over every parameter blob of every layer:
    debug_info's statistics, read in one transfer from the device."""
    names, data, diffs = [], [], []
    for layer in net.layers:
        for index, blob in enumerate(layer.blobs):
            if blob.count() == 0:
                continue
            names.append(f"{layer.name}[{index}]")
            data.append(blob.data.detach().abs().mean())
            has_diff = layer.param_propagate(index) and not blob.diff_released()
            diffs.append(blob.diff.detach().abs().mean() if has_diff else None)
    if not names:
        return {}, {}
    weights = torch.stack([d.float() for d in data]).tolist()
    grads = [d.float() for d in diffs if d is not None]
    grads = iter(torch.stack(grads).tolist() if grads else [])
    return (dict(zip(names, weights)),
            {name: next(grads) for name, d in zip(names, diffs) if d is not None})


class _LogReader(logging.Handler):
    """Hands every brewnet log message to the curves; stops reading (and says so) after its first failure."""

    def __init__(self, curves):
        super().__init__(logging.INFO)
        self.curves, self.failed = curves, False

    def emit(self, record):
        if self.failed:
            return
        try:
            self.curves.feed(record.getMessage(), record.created)
        except Exception as error:     # noqa: BLE001 - the dashboard must never stop training
            self.failed = True
            log.warning("Dashboard: stopped reading the log (%s: %s); training goes on", type(error).__name__,
                        error)


class _StatisticsCallback:
    """A solver callback: the current iteration at every step, the layer statistics at display iterations."""

    def __init__(self, solver, curves):
        self.solver, self.curves, self.failed = solver, curves, False

    def on_start(self):
        self.curves.set_iteration(self.solver.iter)

    def on_gradients_ready(self):
        display = self.solver.param.display
        if self.failed or not display or self.solver.iter % display:
            return
        try:
            weights, grads = layer_statistics(self.solver.net)
            self.curves.add_layer_statistics(self.solver.iter, weights, grads)
        except Exception as error:     # noqa: BLE001 - the dashboard must never stop training
            self.failed = True
            log.warning("Dashboard: no more layer statistics (%s: %s); training goes on", type(error).__name__,
                        error)


class Dashboard:
    """The server of one solver's run, in a daemon thread; `close(status)` shows the final state and stops."""

    def __init__(self, solver, port=0, host="127.0.0.1"):
        self.curves = RunCurves(name=solver.net.name, max_iter=solver.param.max_iter)
        self.curves.set_iteration(solver.iter)
        self.server = DashboardServer(self.curves, host, port)
        self.thread = threading.Thread(target=self.server.serve_forever, name="brewnet-dashboard", daemon=True)
        self.reader = _LogReader(self.curves)
        self.solver = solver
        self.solver.add_callback(_StatisticsCallback(solver, self.curves))
        brewnet_logger.addHandler(self.reader)
        self.thread.start()

    @property
    def url(self):
        host = self.server.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.server.port}/"

    def close(self, status="finished"):
        """Mark the run `status` ('finished', 'stopped', 'failed'), let open pages receive it, stop serving."""
        brewnet_logger.removeHandler(self.reader)
        try:
            self.curves.set_iteration(self.solver.iter)
            self.curves.finish(status)
            deadline = time.monotonic() + FINAL_EVENT_WAIT_S
            while self.server.open_streams and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            self.server.closing.set()
            self.server.shutdown()
            self.server.server_close()


def start_dashboard(solver, port=0, host="127.0.0.1"):
    """A running Dashboard whose address is logged, or None after a warning when it cannot start (the port in
    use, an unknown host): training goes on either way."""
    try:
        dashboard = Dashboard(solver, port, host)
    except Exception as error:         # noqa: BLE001 - the dashboard must never stop training
        log.warning("Dashboard not started on %s:%s (%s); training goes on without it", host, port,
                    getattr(error, "strerror", None) or error)
        return None
    log.info("Dashboard: %s (read-only; %s)", dashboard.url,
             "this machine only" if is_loopback(host) else f"open to every machine that reaches {host}")
    return dashboard
