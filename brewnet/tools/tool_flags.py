"""The main() of the converter tools: Caffe's gflags-style command line (brewnet.tools.flags) in, an exit
status out.

    def main(argv=None):
        return run_tool(lambda flags, args: convert(*args, **flags), argv, FLAGS, USAGE, nargs=(3,))

`-help` prints the usage and the flags (status 0); a command line that does not parse, or the wrong number of
positional arguments, prints the error or the usage on stderr (status 1); a BrewnetError raised by the tool is
logged (status 1).  With `flags=None` nothing is parsed: every argument is positional (extract_features).
"""
import sys

from .. import __version__
from ..errors import BrewnetError
from ..log import init_log, logger
from .flags import FlagError, HelpRequested, VersionRequested, parse_flags


def parse_command_line(argv, flags, usage=""):
    """(flag values, positional arguments), or the exit status when the command line needs nothing more:
    0 after printing the help or the version, 1 after printing why it does not parse."""
    try:
        return parse_flags(argv, flags, usage)
    except HelpRequested as request:
        print(request.text)
        return 0
    except VersionRequested:
        print(f"caffe version 1.0.0 (brewnet {__version__})")
        return 0
    except FlagError as error:
        print(error, file=sys.stderr)
        return 1


def run_tool(body, argv=None, flags=None, usage="", nargs=None):
    """Parse argv, then call body(flag values, positional arguments); returns the exit status."""
    init_log()
    argv = list(sys.argv[1:] if argv is None else argv)
    parsed = ({}, argv) if flags is None else parse_command_line(argv, flags, usage)
    if isinstance(parsed, int):
        return parsed
    values, args = parsed
    if nargs is not None and len(args) not in nargs:
        print(usage, file=sys.stderr)
        return 1
    try:
        body(values, args)
    except BrewnetError as error:
        logger.error("%s", error)
        return 1
    return 0
