"""Caffe's SignalHandler: SIGINT / SIGHUP become solver actions (stop, snapshot, none) checked between
iterations, so that Ctrl-C stops training cleanly (with a snapshot) instead of killing it mid-update.

    with SignalHandler(sigint_effect="stop", sighup_effect="snapshot") as handler:
        solver.set_action_function(handler.check_for_signals)
        solver.solve()

The handlers only set flags (nothing else is safe inside a signal handler); the solver asks for the pending
action once per iteration (and once per test batch).  A SIGHUP wins over a SIGINT received at the same time, as
in Caffe.  The previous handlers come back on close().
"""
import signal

from ..errors import BrewnetError
from ..solvers.base import SolverAction


def action_from_flag(value, flag):
    if value not in SolverAction.ALL:
        raise BrewnetError(f"Invalid signal effect \"{value}\" was specified for -{flag} "
                           f"(Expect: {', '.join(SolverAction.ALL)})")
    return value


class SignalHandler:
    def __init__(self, sigint_effect=SolverAction.STOP, sighup_effect=SolverAction.SNAPSHOT):
        self.effects = {signal.SIGINT: action_from_flag(sigint_effect, "sigint_effect"),
                        signal.SIGHUP: action_from_flag(sighup_effect, "sighup_effect")}
        self.pending = {signal.SIGINT: False, signal.SIGHUP: False}
        self.previous = {}
        for signum in self.effects:
            self.previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum, frame):
        self.pending[signum] = True

    def check_for_signals(self):
        """The action asked for since the last call (and forget it), or SolverAction.NONE."""
        for signum in (signal.SIGHUP, signal.SIGINT):
            if self.pending[signum]:
                self.pending[signum] = False
                return self.effects[signum]
        return SolverAction.NONE

    def close(self):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
