"""A one-line progress bar for the converter tools, drawn on stderr only when it is a terminal."""
import sys
import time


class Progress:
    """`update(done)` redraws at most ten times a second; `close()` draws the full bar and ends the line.
    Nothing is written when the stream is not a terminal, so logs and pipes stay clean."""

    def __init__(self, total, label="", stream=None, width=30):
        self.total, self.label, self.width = max(int(total), 1), label, width
        self.stream = stream or sys.stderr
        self.enabled = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start, self.last = time.time(), 0.0

    def update(self, done):
        if not self.enabled:
            return
        now = time.time()
        if done < self.total and now - self.last < 0.1:
            return
        self.last = now
        filled = int(self.width * done / self.total)
        rate = done / max(now - self.start, 1e-9)
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (self.width - filled)}] "
                          f"{done}/{self.total} ({rate:,.0f}/s)")
        self.stream.flush()

    def close(self):
        if self.enabled:
            self.update(self.total)
            self.stream.write("\n")
            self.stream.flush()
