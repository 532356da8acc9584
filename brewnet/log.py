"""glog-style logging, so that Caffe's log tools (parse_log.py, plot_training_log.py) and habits keep working.

A line looks like ``I1127 10:00:00.000000  1234 solver.py:210] Iteration 100, loss = 0.25``: severity letter,
month+day, wall time with microseconds, thread id, source file:line, then the message.

glog's environment variables (Caffe's tools read them through glog):

    GLOG_minloglevel=N       drop lines below severity N (0 INFO, 1 WARNING, 2 ERROR, 3 FATAL)
    GLOG_log_dir=DIR         also write glog's log files into DIR, one per severity, each holding its severity and
                             above:  <program>.<host>.<user>.log.<SEVERITY>.<yyyymmdd>-<hhmmss>.<pid>, created
                             at the first line it gets, with the symlink <program>.<SEVERITY> to the newest
    GLOG_logtostderr=1       stderr only, no files
    GLOG_alsologtostderr=0   with GLOG_log_dir: stderr gets only lines at GLOG_stderrthreshold (default 2, ERROR)
                             and above

Caffe's `caffe` sets alsologtostderr itself, so stderr shows every line unless GLOG_alsologtostderr=0 is given;
and unlike glog, no files are written without GLOG_log_dir (glog would write them into /tmp).
"""
import contextlib
import getpass
import logging
import os
import socket
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


_SEVERITIES = (("INFO", logging.NOTSET), ("WARNING", logging.WARNING), ("ERROR", logging.ERROR),
               ("FATAL", logging.CRITICAL))


class GlogFileHandler(logging.Handler):
    """glog's log files in `folder`: the file of a severity holds every line of that severity and above, and is
    created (with glog's three header lines and the <program>.<SEVERITY> symlink) when its first line comes."""

    def __init__(self, folder, program):
        super().__init__()
        self.folder, self.program = folder, program
        self.files, self.pid, self.failed = {}, os.getpid(), False
        self.setFormatter(GlogFormatter())

    def emit(self, record):
        if self.failed:
            return
        try:
            if self.pid != os.getpid():     # a forked child writes files of its own pid, as glog's would
                self.files, self.pid = {}, os.getpid()
            text = self.format(record) + "\n"
            for severity, level in _SEVERITIES:
                if record.levelno >= level:
                    f = self._file(severity)
                    f.write(text)
                    f.flush()
        except OSError as e:
            self.failed = True
            # glog too goes on without its files, after saying so once
            print(f"Could not write log files in {self.folder}: {e.strerror or e}; logging to stderr only",
                  file=sys.stderr)
        except Exception:
            self.handleError(record)

    def _file(self, severity):
        f = self.files.get(severity)
        if f is not None:
            return f
        now = time.time()
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
        name = f"{self.program}.{_hostname()}.{_user()}.log.{severity}.{stamp}.{os.getpid()}"
        f = open(os.path.join(self.folder, name), "a", encoding="utf-8")
        f.write(f"Log file created at: {time.strftime('%Y/%m/%d %H:%M:%S', time.localtime(now))}\n"
                f"Running on machine: {_hostname()}\n"
                "Log line format: [IWEF]mmdd hh:mm:ss.uuuuuu threadid file:line] msg\n")
        link = os.path.join(self.folder, f"{self.program}.{severity}")
        try:
            if os.path.islink(link):
                os.unlink(link)
            os.symlink(name, link)
        except OSError:
            pass        # glog too goes on without the symlink
        self.files[severity] = f
        return f

    def close(self):
        for f in self.files.values():
            f.close()
        self.files = {}
        super().close()


def _hostname():
    return socket.gethostname() or "(unknown)"


def _user():
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "invalid-user"


def _program():
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name and name != "-c" else "python"


def _env_flag(name, default):
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    return value in ("1", "true", "yes", "t", "y")


def _glog_level(value, default):
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = default
    return {0: logging.INFO, 1: logging.WARNING, 2: logging.ERROR}.get(n, logging.CRITICAL)


logger = logging.getLogger("brewnet")
_handler = None
_file_handler = None


def init_log(level=None, stream=None):
    """Send brewnet's log to `stream` (stderr) in glog format, and to glog's log files when GLOG_log_dir is
    set (see the module's docstring); level from GLOG_minloglevel like Caffe."""
    global _handler
    if level is None:
        level = _glog_level(os.environ.get("GLOG_minloglevel", "0"), 0)
    if _handler is not None:
        logger.removeHandler(_handler)
    _handler = logging.StreamHandler(stream or sys.stderr)
    _handler.setFormatter(GlogFormatter())
    files = _use_log_files()
    if files and not _env_flag("GLOG_alsologtostderr", True):
        _handler.setLevel(_glog_level(os.environ.get("GLOG_stderrthreshold", "2"), 2))
    logger.addHandler(_handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger


def _use_log_files():
    """Attach (once per folder) or detach the file handler as the environment says; True when attached."""
    global _file_handler
    folder = "" if _env_flag("GLOG_logtostderr", False) else os.environ.get("GLOG_log_dir", "")
    if _file_handler is not None and _file_handler.folder != folder:
        logger.removeHandler(_file_handler)
        _file_handler.close()
        _file_handler = None
    if folder and _file_handler is None:
        _file_handler = GlogFileHandler(folder, _program())
        logger.addHandler(_file_handler)
    return _file_handler is not None


@contextlib.contextmanager
def quiet():
    """Within it, brewnet logs warnings and errors only: for programs that assemble and train nets as a step of
    their own work (the book's experiments, sample_quality) and print their own lines instead."""
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def get_logger(name):
    """A child of the 'brewnet' logger; its records carry the caller's file:line, as glog's do."""
    return logger.getChild(name)


init_log()
