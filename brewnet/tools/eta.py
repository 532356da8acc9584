"""Progress with an estimated time left, for runs longer than a few seconds (the book's trainings):

    progress = EtaProgress(total, label="6.1 relu+xavier")
    for i in range(total): ...; progress.update(i + 1)
    progress.close()

Writes one line every `every` seconds ("6.1 relu+xavier: 300/1000 (30%), 12.0 s, ETA 28.0 s") to stderr, so it
works in logs and pipes too; nothing before the first `every` seconds, so quick runs stay silent.
"""
import sys
import time


def format_eta(done, total, elapsed):
    """'ETA 28.0 s' from the mean rate so far; '?' before anything is done."""
    if done <= 0:
        return "ETA ?"
    left = elapsed / done * max(total - done, 0)
    return f"ETA {left:.1f} s" if left < 120 else f"ETA {left / 60:.1f} min"


class EtaProgress:
    def __init__(self, total, label="", stream=None, every=5.0, clock=time.monotonic):
        self.total, self.label, self.every, self.clock = max(int(total), 1), label, every, clock
        self.stream = stream or sys.stderr
        self.start = self.last = clock()
        self.lines = 0

    def line(self, done):
        elapsed = self.clock() - self.start
        return (f"{self.label}: {done}/{self.total} ({100 * done // self.total}%), {elapsed:.1f} s, "
                f"{format_eta(done, self.total, elapsed)}")

    def update(self, done):
        now = self.clock()
        if now - self.last >= self.every:
            self.last = now
            self.stream.write(self.line(done) + "\n")
            self.stream.flush()
            self.lines += 1

    def close(self):
        if self.lines:
            self.stream.write(self.line(self.total) + "\n")
            self.stream.flush()
