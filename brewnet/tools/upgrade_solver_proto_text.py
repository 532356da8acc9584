"""upgrade_solver_proto_text INPUT OUTPUT: rewrite a solver prototxt that uses the old `solver_type` enum with
the `type` string instead, as Caffe's tool of that name does.

Exit status: 0 when upgraded (or already current), 1 for a wrong command line or a solver that cannot be
upgraded (both `solver_type` and `type` given), 2 when INPUT cannot be read.
"""
import sys

from ..errors import BrewnetError
from ..log import get_logger
from ..proto import caffe_pb2
from ..proto.io import read_text, write_text
from ..proto.upgrade import solver_needs_type_upgrade, upgrade_solver

log = get_logger("tools")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] in ("-h", "--help"):
        log.error("Usage: upgrade_solver_proto_text old_solver_proto_file_in solver_proto_file_out")
        return 1
    source, target = argv
    try:
        solver = read_text(source, caffe_pb2.SolverParameter())
    except BrewnetError as e:
        log.error("Failed to parse input text file as SolverParameter: %s", e)
        return 2
    try:
        if solver_needs_type_upgrade(solver):
            upgrade_solver(solver, source)
        else:
            log.error("File already in latest proto format: %s", source)
        write_text(solver, target)
    except BrewnetError as e:
        log.error("%s", e)
        return 1
    log.info("Wrote upgraded SolverParameter text proto to %s", target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
