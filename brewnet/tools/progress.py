"""Progress on a terminal, never in logs or pipes: a one-line bar with an ETA for the long tools
(convert_imageset, convert_mnist_data, compute_image_mean, extract_features), and `caffe train`'s status line
kept below the glog lines.  Both draw only when their stream is a terminal: glog lines stay unchanged when
stderr is a file or a pipe."""
import logging
import sys
import time

from .eta import format_eta

# A terminal's "return to column 0, erase the line": the bar or status line is drawn over itself.
ERASE = "\r\033[K"


def is_terminal(stream):
    return bool(getattr(stream, "isatty", None)) and stream.isatty()


class Progress:
    """`update(done)` redraws at most ten times a second; `close()` draws the full bar and ends the line.
    Nothing is written when the stream is not a terminal, so logs and pipes stay clean."""

    def __init__(self, total, label="", stream=None, width=30, clock=time.monotonic):
        self.total, self.label, self.width, self.clock = max(int(total), 1), label, width, clock
        self.stream = stream or sys.stderr
        self.enabled = is_terminal(self.stream)
        self.start, self.last = clock(), float("-inf")

    def update(self, done):
        if not self.enabled:
            return
        now = self.clock()
        if done < self.total and now - self.last < 0.1:
            return
        self.last = now
        self.stream.write(self.line(done, now))
        self.stream.flush()

    def line(self, done, now):
        filled = int(self.width * min(done, self.total) / self.total)
        elapsed = now - self.start
        rate = done / max(elapsed, 1e-9)
        return (f"\r{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total} "
                f"({rate:,.0f}/s, {format_eta(done, self.total, elapsed)})")

    def close(self):
        if self.enabled:
            self.update(self.total)
            self.stream.write("\n")
            self.stream.flush()


class TrainingProgress:
    """`caffe train`'s status line on a terminal, as a solver callback:

        Iteration 300/10000 (3%), 25.7 iter/s, ETA 6.3 min

    redrawn at most five times a second below the log: the glog lines of the same stream erase it, print, and
    draw it again (their handler writes through `write`), so that it never mixes with them."""

    def __init__(self, solver, stream=None, clock=time.monotonic):
        self.solver, self.clock = solver, clock
        self.stream = stream or sys.stderr
        self.enabled = is_terminal(self.stream)
        self.start_iter, self.total = solver.iter, solver.param.max_iter
        self.start, self.last, self.shown = clock(), float("-inf"), ""
        self._handlers = []

    def attach(self, logger):
        """Route the handlers of `logger` that write to this stream through the status line."""
        if not self.enabled:
            return self
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) is self.stream:
                handler.setStream(self)
                self._handlers.append(handler)
        self.solver.add_callback(self)
        return self

    def on_start(self):
        if not self.enabled:
            return
        now = self.clock()
        if now - self.last >= 0.2:
            self.last = now
            self._draw(self.line(self.solver.iter, now))

    def on_gradients_ready(self):
        pass

    def line(self, iteration, now):
        done, to_do, elapsed = iteration - self.start_iter, max(self.total - self.start_iter, 1), now - self.start
        rate = f"{done / elapsed:.3g} iter/s, " if done > 0 and elapsed > 0 else ""
        return (f"Iteration {iteration}/{self.total} ({100 * iteration // max(self.total, 1)}%), {rate}"
                f"{format_eta(done, to_do, elapsed)}")

    def _draw(self, line):
        self.stream.write(ERASE + line)
        self.stream.flush()
        self.shown = line

    # the file interface the log handlers write through
    def write(self, text):
        if self.shown:
            self.stream.write(ERASE)
        self.stream.write(text)
        if self.shown and text.endswith("\n"):
            self.stream.write(self.shown)

    def flush(self):
        self.stream.flush()

    def close(self):
        """Erase the line and give the handlers their stream back."""
        for handler in self._handlers:
            handler.setStream(self.stream)
        self._handlers = []
        if self.shown:
            self.stream.write(ERASE)
            self.stream.flush()
            self.shown = ""
