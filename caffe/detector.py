"""caffe.detector is brewnet.detector (the same module object)."""
import sys

import brewnet.detector

sys.modules[__name__] = brewnet.detector
