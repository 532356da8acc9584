"""draw_net: draw a net prototxt as an image through Graphviz (Caffe's python/draw_net.py).

    python -m brewnet.tools.draw_net NET.prototxt OUT.png [--rankdir LR|TB|BT|RL] [--phase TRAIN|TEST|ALL]
                                     [--display_lrm]

The output format comes from the file extension (png, svg, pdf, ... or raw for the DOT text).  Old (V0/V1)
prototxts are upgraded first.
"""
import argparse
import sys

from ..errors import BrewnetError
from ..log import init_log, logger
from ..proto import caffe_pb2
from ..proto.io import read_net_param
from ..pycaffe import draw

PHASES = {"TRAIN": caffe_pb2.TRAIN, "TEST": caffe_pb2.TEST, "ALL": None}


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="draw_net", description="Draw a graph of the net architecture.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("input_net_proto_file", help="Input network prototxt file")
    parser.add_argument("output_image_file", help="Output image file")
    parser.add_argument("--rankdir", default="LR",
                        help="One of TB (top-bottom, i.e., vertical), RL (right-left, i.e., horizontal), or "
                             "another valid dot option")
    parser.add_argument("--phase", default="ALL", choices=sorted(PHASES),
                        help="Which network phase to draw: TRAIN, TEST, or ALL (every layer)")
    parser.add_argument("--display_lrm", action="store_true",
                        help="Show the learning rate multipliers of Convolution, Deconvolution and "
                             "InnerProduct layers")
    return parser.parse_args(argv)


def main(argv=None):
    init_log()
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        net = read_net_param(args.input_net_proto_file)
        print(f"Drawing net to {args.output_image_file}")
        draw.draw_net_to_file(net, args.output_image_file, args.rankdir, PHASES[args.phase], args.display_lrm)
    except (BrewnetError, OSError) as exc:
        logger.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
