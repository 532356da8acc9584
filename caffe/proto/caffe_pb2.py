"""caffe.proto.caffe_pb2 is brewnet.proto.caffe_pb2 (the same module object, so messages interoperate)."""
import sys

import brewnet.proto.caffe_pb2

sys.modules[__name__] = brewnet.proto.caffe_pb2
