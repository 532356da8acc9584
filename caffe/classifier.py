"""caffe.classifier is brewnet.pycaffe.classifier (the same module object)."""
import sys

import brewnet.pycaffe.classifier

sys.modules[__name__] = brewnet.pycaffe.classifier
