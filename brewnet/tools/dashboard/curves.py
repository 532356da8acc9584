"""The curves of one training run, read from its glog messages: what the dashboard shows live and what
`brewnet report` draws from a finished log.

Both feed the same messages through `RunCurves.feed` — the live dashboard as the solver logs them, the report
from a log file, real Caffe's included — so a page drawn during training and one drawn from its log agree.
The messages read (Caffe's texts, which brewnet keeps word for word):

    Solving LeNet                                              the run's name
    max_iter: 10000                                            in the solver's parameter dump: the ETA's goal
    Iteration 100 (25.7 iter/s, 3.885s/100 iters), loss = 0.13 a display: the loss (averaged over average_loss
    Iteration 100, loss = 0.13                                 iterations) and the speed; older Caffe's form
        Train net output #0: loss = 0.12 (* 1 = 0.12 loss)      every train output of that iteration
    Iteration 100, lr = 0.0099                                 the learning rate
    Iteration 500, Testing net (#0)                            a test, then every output of that test net:
        Test net output #0: accuracy = 0.96
        [Forward] Layer conv1, param blob 0 data: 0.17         debug_info's mean |w| and mean |dw| of each
        [Backward] Layer conv1, param blob 0 diff: 0.009       parameter blob (the live dashboard computes them)
    Optimization Done. / Optimization stopped early.           the end

Every series is a pair of lists (iterations, values) in a group: loss, train, test, lr, speed, weights,
grads.  Non-finite values become None (JSON null), which the page draws as a gap.
"""
import datetime
import math
import re
import threading
import time

from ..eta import format_eta

GROUPS = ("loss", "train", "test", "lr", "speed", "weights", "grads")
# Points per curve sent to the page: more than a chart is wide in pixels.
MAX_POINTS = 4000

_NUMBER = r"([-+]?(?:[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|nan|inf|-nan))"
RE_DISPLAY = re.compile(r"Iteration (\d+)(?: \(" + _NUMBER + r" iter/s, [^)]*\))?, loss = " + _NUMBER)
RE_LR = re.compile(r"Iteration (\d+), lr = " + _NUMBER)
RE_TESTING = re.compile(r"Iteration (\d+), Testing net \(#(\d+)\)")
RE_TRAIN_OUTPUT = re.compile(r"Train net output #\d+: (\S+) = " + _NUMBER)
RE_TEST_OUTPUT = re.compile(r"Test net output #\d+: (\S+) = " + _NUMBER)
RE_PARAM_DATA = re.compile(r"\[Forward\] Layer (\S+), param blob (\S+) data: " + _NUMBER)
RE_PARAM_DIFF = re.compile(r"\[Backward\] Layer (\S+), param blob (\S+) diff: " + _NUMBER)
RE_MAX_ITER = re.compile(r"^\s*max_iter: (\d+)\s*$", re.M)
RE_SOLVING = re.compile(r"^Solving (.*)$")
GLOG_LINE = re.compile(r"^([IWEF])(\d{4}|\d{8}) (\d\d):(\d\d):(\d\d)\.(\d{6}) +\d+ [^\]]*\] ?(.*)$")


def _number(text):
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


class RunCurves:
    """The series of one run, safe to feed from the training thread while the server reads snapshots."""

    def __init__(self, name="", max_iter=None):
        self.name, self.max_iter = name, max_iter
        self.status = "running"
        self.iteration = None           # the last iteration seen (the live dashboard updates it every step)
        self.series = {group: {} for group in GROUPS}
        self.version = 0                # grows with every change; the server's event stream waits on it
        self.changed = threading.Condition()
        self._start = None              # (time, iteration) of the first display: the ETA's reference
        self._last_time = None
        self._display_iter = self._test_iter = None
        self._test_net = 0
        self._pending = {"weights": {}, "grads": {}}

    # --- feeding -------------------------------------------------------------------------------------------
    def feed(self, message, when=None):
        """Read one glog message (without its glog head) logged at `when` (seconds since the epoch)."""
        with self.changed:
            if self._read(message, time.time() if when is None else when):
                self._bump()

    def set_iteration(self, iteration):
        """The solver's current iteration (between displays: a smoother ETA); no event for the page."""
        self.iteration = iteration

    def add_layer_statistics(self, iteration, weights, grads):
        """{'conv1[0]': mean |w|}, {'conv1[0]': mean |dw|} of one iteration (the live dashboard's callback)."""
        with self.changed:
            for name, value in weights.items():
                self._add("weights", name, iteration, value)
            for name, value in grads.items():
                self._add("grads", name, iteration, value)
            self._bump()

    def finish(self, status):
        """'finished' or 'stopped' (or 'failed'): the page stops listening and keeps the final curves."""
        with self.changed:
            self.status = status
            self._bump()

    def _bump(self):
        self.version += 1
        self.changed.notify_all()

    def _read(self, message, when):
        self._last_time = when
        match = RE_DISPLAY.search(message)
        if match:
            return self._display(int(match.group(1)), _number(match.group(2) or ""),
                                 _number(match.group(3)), when)
        for regex, reader in ((RE_TRAIN_OUTPUT, self._train_output), (RE_TEST_OUTPUT, self._test_output),
                              (RE_LR, self._lr), (RE_TESTING, self._testing), (RE_PARAM_DATA, self._param),
                              (RE_PARAM_DIFF, self._param)):
            match = regex.search(message)
            if match:
                return reader(match)
        return self._run_line(message)

    def _display(self, iteration, per_s, loss, when):
        self.iteration = iteration
        self._display_iter = iteration
        if self._start is None:
            self._start = (when, iteration)
        self._add("loss", "loss", iteration, loss)
        # Caffe's first display reports a meaningless rate (no interval yet); brewnet's, zero
        if per_s is not None and per_s > 1e-30:
            self._add("speed", "iter/s", iteration, per_s)
        for group, values in self._pending.items():
            for name, value in values.items():
                self._add(group, name, iteration, value)
            values.clear()
        return True

    def _train_output(self, match):
        if self._display_iter is None:
            return False
        self._add("train", match.group(1), self._display_iter, _number(match.group(2)))
        return True

    def _testing(self, match):
        self._test_iter, self._test_net = int(match.group(1)), int(match.group(2))
        self.iteration = self._test_iter if self.iteration is None else self.iteration
        return False

    def _test_output(self, match):
        if self._test_iter is None:
            return False
        name = match.group(1) if self._test_net == 0 else f"{match.group(1)} (#{self._test_net})"
        self._add("test", name, self._test_iter, _number(match.group(2)))
        return True

    def _lr(self, match):
        self._add("lr", "lr", int(match.group(1)), _number(match.group(2)))
        return True

    def _param(self, match):
        # debug_info logs these before the display line of the iteration they belong to; the last value
        # before it is the train net's (a test pass logs its own first)
        group = "weights" if match.re is RE_PARAM_DATA else "grads"
        self._pending[group][f"{match.group(1)}[{match.group(2)}]"] = _number(match.group(3))
        return False

    def _run_line(self, message):
        match = RE_SOLVING.match(message)
        if match:
            self.name = self.name or match.group(1).strip()
            return True
        if self.max_iter is None:
            match = RE_MAX_ITER.search(message)
            if match:
                self.max_iter = int(match.group(1))
                return True
        if message.startswith("Optimization Done."):
            self.status = "finished"
            return True
        if message.startswith("Optimization stopped early."):
            self.status = "stopped"
            return True
        return False

    def _add(self, group, name, iteration, value):
        iterations, values = self.series[group].setdefault(name, ([], []))
        if iterations and iterations[-1] == iteration:
            values[-1] = value          # the same iteration again (a resumed log): the later value
            return
        iterations.append(iteration)
        values.append(value)

    # --- reading -------------------------------------------------------------------------------------------
    def eta_seconds(self, now=None):
        """Seconds left to max_iter at the mean rate since the first display, or None (no rate yet, no goal,
        or the run is over)."""
        progress = self._progress(now)
        return None if progress is None else progress[2] / progress[0] * (progress[1] - progress[0])

    def _progress(self, now):
        """(iterations done, iterations to do, seconds spent) since the first display, while running."""
        if self._start is None or not self.max_iter or self.iteration is None or self.status != "running":
            return None
        t0, i0 = self._start
        done = self.iteration - i0
        if done <= 0:
            return None
        return done, max(self.max_iter - i0, done), (time.time() if now is None else now) - t0

    def snapshot(self, now=None):
        """Everything the page draws, as JSON-ready data."""
        with self.changed:
            if now is None:
                now = time.time() if self.status == "running" else self._last_time
            progress = self._progress(now)
            return {
                "name": self.name, "status": self.status, "iteration": self.iteration,
                "max_iter": self.max_iter, "version": self.version,
                "elapsed": None if self._start is None or now is None else now - self._start[0],
                "eta": None if progress is None else self.eta_seconds(now),
                # eta.format_eta: one wording for every ETA brewnet prints
                "eta_text": "" if progress is None else format_eta(*progress),
                "series": {group: {name: _thinned(its, vals) for name, (its, vals) in named.items()}
                           for group, named in self.series.items()},
            }

    def wait_for_change(self, version, timeout):
        """Block until the version differs from `version` or `timeout` seconds pass; the current version."""
        with self.changed:
            self.changed.wait_for(lambda: self.version != version, timeout)
            return self.version


def _thinned(iterations, values, most=MAX_POINTS):
    """[iterations, values] with at most about `most` points, evenly spaced, the last one kept: a long run
    displayed every iteration stays quick to send and to draw."""
    step = -(-len(iterations) // most)
    if step <= 1:
        return [list(iterations), list(values)]
    keep = list(range(0, len(iterations) - 1, step)) + [len(iterations) - 1]
    return [[iterations[i] for i in keep], [values[i] for i in keep]]


# --- logs on disk --------------------------------------------------------------------------------------------
def read_log(path, year=None):
    """RunCurves of a glog-format training log (brewnet's or Caffe's).  Lines without a glog head continue
    the message before them (the solver's parameter dump)."""
    curves = RunCurves()
    year = year or datetime.date.today().year
    when = month = None
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            match = GLOG_LINE.match(line)
            if match:
                if month is not None and int(match.group(2)[-4:-2]) < month:
                    year += 1           # glog's classic head has no year: a run across New Year
                month = int(match.group(2)[-4:-2])
                when = _glog_time(match, year) or when
                message = match.group(7)
            else:
                message = line
            curves.feed(message, when)
    if curves.status == "running":
        curves.status = "ended"         # the log stops without Caffe's last line (killed, or still running)
    return curves


def _glog_time(match, year):
    stamp = match.group(2)
    if len(stamp) == 8:
        year, stamp = int(stamp[:4]), stamp[4:]
    try:
        moment = datetime.datetime(year, int(stamp[:2]), int(stamp[2:]), int(match.group(3)),
                                   int(match.group(4)), int(match.group(5)), int(match.group(6)))
    except ValueError:
        return None
    return moment.timestamp()
