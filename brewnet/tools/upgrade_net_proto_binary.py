"""upgrade_net_proto_binary INPUT OUTPUT: rewrite a V0/V1 binary net (an old caffemodel) in today's format,
as Caffe's tool of that name does; the weights travel along unchanged. Exit status as upgrade_net_proto_text.
"""
import sys

from .upgrade_net_proto_text import upgrade_net_file


def main(argv=None):
    return upgrade_net_file(sys.argv[1:] if argv is None else argv, binary=True)


if __name__ == "__main__":
    sys.exit(main())
