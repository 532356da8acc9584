"""caffe.io is brewnet.pycaffe.io (the same module object)."""
import sys

import brewnet.pycaffe.io

sys.modules[__name__] = brewnet.pycaffe.io
