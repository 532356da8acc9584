"""classify: classify images (or a .npy of H x W x K images) with a trained net (Caffe's python/classify.py).

    python -m brewnet.tools.classify INPUT OUTPUT.npy --model_def deploy.prototxt
        --pretrained_model weights.caffemodel [--gpu] [--center_only] [--images_dim 256,256]
        [--mean_file mean.npy|mean.binaryproto] [--input_scale S] [--raw_scale 255] [--channel_swap 2,1,0]
        [--ext jpg]

INPUT is an image, a directory (every *.EXT in it, sorted) or a .npy array of images.  OUTPUT.npy receives
the N x classes predictions.  Unlike Caffe's script there are no default model paths (brewnet ships no
models) and the mean is optional; a mean given as binaryproto (compute_image_mean's output) is read too.
"""
import argparse
import glob
import os
import sys
import time

import numpy as np

from ..core import common
from ..errors import BrewnetError
from ..log import init_log, logger
from ..proto import caffe_pb2
from ..proto.io import read_binary
from ..pycaffe import io as caffe_io
from ..pycaffe.classifier import Classifier


def parse_args(argv):
    p = argparse.ArgumentParser(prog="classify", description=__doc__.split("\n")[0])
    p.add_argument("input_file", help="Input image, directory, or npy.")
    p.add_argument("output_file", help="Output npy filename.")
    p.add_argument("--model_def", required=True, help="Model definition file.")
    p.add_argument("--pretrained_model", required=True, help="Trained model weights file.")
    p.add_argument("--gpu", action="store_true", help="Switch for gpu computation.")
    p.add_argument("--center_only", action="store_true",
                   help="Predict from the center crop alone instead of averaging across crops.")
    p.add_argument("--images_dim", default="256,256", help="Canonical 'height,width' of input images.")
    p.add_argument("--mean_file", default="", help="Mean image (C x H x W .npy or .binaryproto); '' for none.")
    p.add_argument("--input_scale", type=float, help="Multiply input features by this scale at the end.")
    p.add_argument("--raw_scale", type=float, default=255.0, help="Multiply raw input by this scale first.")
    p.add_argument("--channel_swap", default="2,1,0", help="Order to permute input channels (RGB -> BGR).")
    p.add_argument("--ext", default="jpg", help="Image file extension to take when a directory is given.")
    return p.parse_args(argv)


def load_mean(path):
    if path.endswith(".npy"):
        return np.load(path)
    blob = caffe_pb2.BlobProto()
    read_binary(path, blob)
    mean = caffe_io.blobproto_to_array(blob)
    return mean[0] if mean.ndim == 4 else mean


def load_inputs(path, ext):
    path = os.path.expanduser(path)
    if path.endswith("npy"):
        print(f"Loading file: {path}")
        return np.load(path)
    if os.path.isdir(path):
        print(f"Loading folder: {path}")
        return [caffe_io.load_image(f) for f in sorted(glob.glob(os.path.join(path, "*." + ext)))]
    print(f"Loading file: {path}")
    return [caffe_io.load_image(path)]


def main(argv=None):
    init_log()
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        image_dims = [int(s) for s in args.images_dim.split(",")]
        mean = load_mean(args.mean_file) if args.mean_file else None
        channel_swap = [int(s) for s in args.channel_swap.split(",")] if args.channel_swap else None
        if args.gpu:
            common.set_mode_gpu()
            print("GPU mode")
        else:
            common.set_mode_cpu()
            print("CPU mode")
        classifier = Classifier(args.model_def, args.pretrained_model, image_dims=image_dims, mean=mean,
                                input_scale=args.input_scale, raw_scale=args.raw_scale,
                                channel_swap=channel_swap)
        inputs = load_inputs(args.input_file, args.ext)
        if len(inputs) == 0:
            raise BrewnetError(f"no input images found in {args.input_file}")
        print(f"Classifying {len(inputs)} inputs.")
        start = time.time()
        predictions = classifier.predict(inputs, not args.center_only)
        print(f"Done in {time.time() - start:.2f} s.")
        print(f"Saving results into {args.output_file}")
        np.save(args.output_file, predictions)
    except (BrewnetError, OSError, ValueError) as exc:
        logger.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
