"""upgrade_net_proto_text INPUT OUTPUT: rewrite a V0/V1 (or input-field, old BatchNorm) net prototxt in
today's format, as Caffe's tool of that name does.

Exit status: 0 when the net was upgraded (or already current), 1 when some setting could not be carried over
or the command line is wrong, 2 when INPUT cannot be read.
"""
import sys

from ..errors import BrewnetError
from ..log import get_logger
from ..proto import caffe_pb2
from ..proto.io import read_binary, read_text, write_binary, write_text
from ..proto.upgrade import net_needs_upgrade, upgrade_net

log = get_logger("tools")


def main(argv=None):
    return upgrade_net_file(sys.argv[1:] if argv is None else argv, binary=False)


def upgrade_net_file(argv, binary):
    """The shared body of upgrade_net_proto_text and upgrade_net_proto_binary."""
    tool = "upgrade_net_proto_binary" if binary else "upgrade_net_proto_text"
    form = "binary" if binary else "text"
    if len(argv) != 2 or argv[0] in ("-h", "--help"):
        log.error("Usage: %s v0_net_proto_file_in net_proto_file_out", tool)
        return 1
    source, target = argv
    net = caffe_pb2.NetParameter()
    try:
        (read_binary if binary else read_text)(source, net)
    except BrewnetError as e:
        log.error("Failed to parse input %s file as NetParameter: %s", form, e)
        return 2
    success = True
    try:
        if net_needs_upgrade(net):
            success = upgrade_net(net, source)
            if not success:
                log.error("Encountered error(s) while upgrading prototxt; see details above.")
        else:
            log.error("File already in latest proto format: %s", source)
        (write_binary if binary else write_text)(net, target)
    except BrewnetError as e:
        log.error("%s", e)
        return 1
    log.info("Wrote upgraded NetParameter %s proto to %s", form, target)
    return 0 if success else 1


if __name__ == "__main__":
    sys.exit(main())
