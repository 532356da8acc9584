"""glog-style logging, so that Caffe's log tools (parse_log.py, plot_training_log.py) and habits keep working.

A line looks like ``I1127 10:00:00.000000  1234 solver.py:210] Iteration 100, loss = 0.25``: severity letter,
month+day, wall time with microseconds, thread id, source file:line, then the message.
"""
import logging
import os
import sys
import threading
import time

_LETTERS = {logging.DEBUG: "I", logging.INFO: "I", logging.WARNING: "W", logging.ERROR: "E",
            logging.CRITICAL: "F"}


class GlogFormatter(logging.Formatter):
    def format(self, record):
        t = time.localtime(record.created)
        micros = int((record.created - int(record.created)) * 1e6)
        head = "%s%02d%02d %02d:%02d:%02d.%06d %5d %s:%d] " % (
            _LETTERS.get(record.levelno, "I"), t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, micros,
            threading.get_native_id() % 100000 if record.thread else os.getpid(), record.filename,
            record.lineno)
        text = head + record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


logger = logging.getLogger("brewnet")
_handler = None


def init_log(level=None, stream=None):
    """Send brewnet's log to `stream` (stderr) in glog format; level from GLOG_minloglevel like Caffe."""
    global _handler
    if level is None:
        glog_level = int(os.environ.get("GLOG_minloglevel", "0"))
        level = {0: logging.INFO, 1: logging.WARNING, 2: logging.ERROR}.get(glog_level, logging.CRITICAL)
    if _handler is not None:
        logger.removeHandler(_handler)
    _handler = logging.StreamHandler(stream or sys.stderr)
    _handler.setFormatter(GlogFormatter())
    logger.addHandler(_handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger


def get_logger(name):
    """A child of the 'brewnet' logger; its records carry the caller's file:line, as glog's do."""
    return logger.getChild(name)


init_log()
