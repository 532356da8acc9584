"""Build a generator's NetParameter into a brewnet Net quietly."""
import logging

from brewnet.core.net import Net
from brewnet.proto import caffe_pb2


def build(param, phase="TRAIN"):
    logger = logging.getLogger("brewnet")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        return Net(param, phase=getattr(caffe_pb2, phase))
    finally:
        logger.setLevel(level)
