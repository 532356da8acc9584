"""Caffe's file formats: caffe.proto (our own text, wire-compatible), prototxt, binary protos, upgrades."""
from . import caffe_pb2  # noqa: F401
