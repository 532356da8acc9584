"""`import caffe` is brewnet's pycaffe (brewnet/pycaffe/): this package only re-exports it.

    import caffe
    from caffe import layers as L, params as P
    from caffe.proto import caffe_pb2

Each caffe/X.py makes `caffe.X` the module brewnet.pycaffe.X itself; caffe.proto.caffe_pb2 is
brewnet.proto.caffe_pb2.
"""
# The alias modules first: once `caffe.io` is set by the names below, `from . import io` would skip
# caffe/io.py and leave sys.modules without 'caffe.io'.
from . import classifier, detector, io, net_spec, proto, pycaffe  # noqa: F401

from brewnet.pycaffe import *  # noqa: F401,F403
from brewnet.pycaffe import __all__, __version__  # noqa: F401
