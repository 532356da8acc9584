"""gflags-style command lines for the converter tools, so Caffe's scripts run unchanged.

Accepted: `-name value`, `-name=value`, `--name=value`, `--name value`; booleans also as a bare `-name`
(true), `-noname` (false) or `-name=false`.  Anything not starting with '-' is a positional argument.
A `--help` prints the usage and the flags.  Also a progress bar drawn on stderr when it is a terminal.
"""
import sys
import time

from ..errors import BrewnetError


class FlagError(BrewnetError):
    """A command line that does not parse."""


_TRUE, _FALSE = {"true", "1", "yes", "t", "y"}, {"false", "0", "no", "f", "n"}


def parse_flags(argv, flags, usage):
    """argv (without the program name) -> (values dict, positional list).

    `flags`: {name: (default, help)}; the type is the default's (bool, int, float or str).
    """
    values = {name: default for name, (default, _) in flags.items()}
    positional = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            continue
        name, has_value, value = arg.lstrip("-").partition("=")
        if name in ("help", "h", "helpfull"):
            raise SystemExit(help_text(flags, usage))
        if name not in flags and name.startswith("no") and name[2:] in flags \
                and isinstance(flags[name[2:]][0], bool) and not has_value:
            values[name[2:]] = False
            continue
        if name not in flags:
            raise FlagError(f"unknown command line flag '{name}'\n{help_text(flags, usage)}")
        default = flags[name][0]
        if isinstance(default, bool):
            if not has_value:
                values[name] = True
                continue
            if value.lower() not in _TRUE | _FALSE:
                raise FlagError(f"flag -{name}: Expect: true or false, Actual: {value!r}")
            values[name] = value.lower() in _TRUE
            continue
        if not has_value:
            if i >= len(args):
                raise FlagError(f"flag -{name} is missing its value")
            value = args[i]
            i += 1
        try:
            values[name] = type(default)(value)
        except ValueError:
            raise FlagError(f"flag -{name}: Expect: a {type(default).__name__}, Actual: {value!r}") from None
    return values, positional


def help_text(flags, usage):
    lines = [usage, "", "Flags:"]
    for name, (default, text) in flags.items():
        shown = str(default).lower() if isinstance(default, bool) else repr(default)
        lines.append(f"  -{name} ({text}) default: {shown}")
    return "\n".join(lines)


class Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal (logs stay clean)."""

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
