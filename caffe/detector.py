"""caffe.detector is brewnet.pycaffe.detector (the same module object)."""
import sys

import brewnet.pycaffe.detector

sys.modules[__name__] = brewnet.pycaffe.detector
