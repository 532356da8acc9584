"""caffe.proto: `from caffe.proto import caffe_pb2` gives brewnet's caffe_pb2 (same message classes)."""
from . import caffe_pb2  # noqa: F401
