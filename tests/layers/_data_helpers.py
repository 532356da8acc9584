"""Helpers for the data-layer tests: build a layer from prototxt text, run it on fresh blobs."""
from brewnet.core.blob import Blob
from brewnet.core.registry import create_layer
from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text, read_net_param


def layer_from_text(text, phase=caffe_pb2.TEST):
    param = parse_text(text, caffe_pb2.LayerParameter())
    param.phase = phase
    return create_layer(param)


def layer_from_file(path, phase=caffe_pb2.TEST):
    param = read_net_param(str(path)).layer[0]
    param.phase = phase
    return create_layer(param)


def setup(layer, num_tops=2):
    top = [Blob() for _ in range(num_tops)]
    layer.setup([], top)
    return top
