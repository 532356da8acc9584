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
from .flags import FlagError, HelpRequested, VersionRequested, check_values, parse_flags


def parse_command_line(argv, flags, usage="", validators=None):
    """(flag values, positional arguments), or the exit status when the command line needs nothing more:
    0 after printing the help or the version, 1 after printing why it does not parse or why a value is out
    of range (`validators`: {flag name: function(value) -> None or what is wrong with it}, as gflags'
    RegisterFlagValidator)."""
    try:
        values, positional = parse_flags(argv, flags, usage)
        check_values(values, flags, validators or {})
        return values, positional
    except HelpRequested as request:
        print(request.text)
        return 0
    except VersionRequested:
        # brewnet's version is the Caffe interface it implements (1.0.0: Caffe 1.0), defined once in brewnet/.
        print(f"caffe version {__version__}")
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
