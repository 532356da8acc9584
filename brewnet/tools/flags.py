"""gflags-style command lines, so that Caffe's scripts (`caffe train -solver s.prototxt -gpu 0`) run unchanged.

Every brewnet tool declares its flags as `{name: (default, help)}`; the type of a flag is its default's
(bool, int, float or str).  Accepted spellings, as in gflags:

    -name value    -name=value    --name value    --name=value
    -name / --name             a bool flag set to true;  -noname: false;  -name=false / -name=0 also
    --                         ends the flags: everything after it is positional

Flags and positional arguments may be mixed in any order (gflags moves the positionals to the end).  A flag
given twice keeps the last value.  `-help` / `--help` / `-helpfull` raise HelpRequested carrying the usage text;
`--version` raises VersionRequested.  `check_values` runs per-flag validators (range checks) after parsing.

    values, positional = parse_flags(argv, FLAGS, USAGE)
"""
from ..errors import BrewnetError

_TRUE, _FALSE = {"true", "1", "yes", "t", "y"}, {"false", "0", "no", "f", "n"}


class FlagError(BrewnetError):
    """A command line that does not parse (unknown flag, missing or ill-typed value)."""


class HelpRequested(Exception):
    """-help was given: `text` is the usage and the list of flags."""

    def __init__(self, text):
        super().__init__(text)
        self.text = text


class VersionRequested(Exception):
    pass


def parse_flags(argv, flags, usage=""):
    """argv (without the program name) -> (dict of flag values, list of positional arguments)."""
    values = {name: default for name, (default, _) in flags.items()}
    positional = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            positional.extend(args[i:])
            break
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            continue
        name, has_value, value = arg.lstrip("-").partition("=")
        if name in ("help", "h", "helpfull", "helpshort"):
            raise HelpRequested(help_text(flags, usage))
        if name == "version":
            raise VersionRequested()
        if name not in flags and name.startswith("no") and name[2:] in flags \
                and isinstance(flags[name[2:]][0], bool) and not has_value:
            values[name[2:]] = False
            continue
        if name not in flags:
            raise FlagError(f"ERROR: unknown command line flag '{name}' (known flags: "
                            f"{', '.join('-' + n for n in flags) or 'none'})")
        default = flags[name][0]
        if isinstance(default, bool):
            if not has_value:
                values[name] = True
                continue
            if value.lower() not in _TRUE | _FALSE:
                raise FlagError(f"ERROR: illegal value '{value}' specified for bool flag '{name}' "
                                "(Expect: true or false)")
            values[name] = value.lower() in _TRUE
            continue
        if not has_value:
            if i >= len(args):
                raise FlagError(f"ERROR: flag '{arg}' is missing its argument; flag description: "
                                f"{flags[name][1]}")
            value = args[i]
            i += 1
        values[name] = _convert(name, default, value)
    return values, positional


def check_values(values, flags, validators):
    """Run each flag's validator on a value the command line set; the first complaint is a FlagError in gflags'
    words, naming the flag and the value."""
    for name, validate in validators.items():
        if values[name] == flags[name][0]:
            continue        # defaults are valid by construction
        problem = validate(values[name])
        if problem:
            raise FlagError(f"ERROR: failed validation of new value '{values[name]}' for flag '{name}': {problem}")


def _convert(name, default, value):
    kind = type(default)
    try:
        return kind(value)
    except ValueError:
        label = {int: "int32", float: "double", str: "string"}.get(kind, kind.__name__)
        raise FlagError(f"ERROR: illegal value '{value}' specified for {label} flag '{name}'") from None


def help_text(flags, usage=""):
    lines = [usage, "", "  Flags:"] if usage else ["  Flags:"]
    for name, (default, text) in flags.items():
        kind = {bool: "bool", int: "int32", float: "double", str: "string"}.get(type(default), "string")
        shown = str(default).lower() if isinstance(default, bool) else (f'"{default}"' if isinstance(default, str)
                                                                       else str(default))
        lines.append(f"    -{name} ({text}) type: {kind} default: {shown}")
    return "\n".join(lines)
