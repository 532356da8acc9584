"""Caffe's SignalHandler: SIGINT / SIGHUP (and, brewnet only, SIGTERM) become solver actions (stop, snapshot,
none) checked between iterations, so that Ctrl-C stops training cleanly (with a snapshot) instead of killing it
mid-update.

    with SignalHandler(sigint_effect="stop", sighup_effect="snapshot", sigterm_effect="snapshot") as handler:
        solver.set_action_function(handler.check_for_signals)
        solver.solve()
        if handler.snapshot_before_exit: ...     # SIGTERM asked for a snapshot of the last iteration

The handlers only set flags (nothing else is safe inside a signal handler); the solver asks for the pending
action once per iteration (and once per test batch).  A SIGHUP wins over a SIGINT received at the same time, as
in Caffe; a SIGTERM wins over both.  The previous handlers come back on close().

SIGTERM is what batch schedulers send before they kill a job, so a training that goes on after it is lost: its
"snapshot" effect (the default) stops as well as snapshotting — the solver stops (and snapshots when
snapshot_after_train is set), and `snapshot_before_exit` tells the caller to write the snapshot when the solver
did not.  "stop" stops, "none" ignores the signal.
"""
import signal

from ..errors import BrewnetError
from ..log import get_logger
from ..solvers.base import SolverAction

log = get_logger("signal_handler")


def action_from_flag(value, flag):
    if value not in SolverAction.ALL:
        raise BrewnetError(f"Invalid signal effect \"{value}\" was specified for -{flag} "
                           f"(Expect: {', '.join(SolverAction.ALL)})")
    return value


class SignalHandler:
    def __init__(self, sigint_effect=SolverAction.STOP, sighup_effect=SolverAction.SNAPSHOT,
                 sigterm_effect=SolverAction.SNAPSHOT):
        self.effects = {signal.SIGINT: action_from_flag(sigint_effect, "sigint_effect"),
                        signal.SIGHUP: action_from_flag(sighup_effect, "sighup_effect"),
                        signal.SIGTERM: action_from_flag(sigterm_effect, "sigterm_effect")}
        self.pending = {signum: False for signum in self.effects}
        self.snapshot_before_exit = False
        self.previous = {}
        for signum in self.effects:
            self.previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum, frame):
        self.pending[signum] = True

    def check_for_signals(self):
        """The action asked for since the last call (and forget it), or SolverAction.NONE."""
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            if self.pending[signum]:
                self.pending[signum] = False
                return self._action(signum)
        return SolverAction.NONE

    def _action(self, signum):
        effect = self.effects[signum]
        if signum != signal.SIGTERM or effect == SolverAction.NONE:
            return effect
        self.snapshot_before_exit = self.snapshot_before_exit or effect == SolverAction.SNAPSHOT
        log.info("SIGTERM received: %s", "snapshotting and stopping" if self.snapshot_before_exit else "stopping")
        return SolverAction.STOP

    def close(self):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
