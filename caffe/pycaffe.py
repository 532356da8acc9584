"""caffe.pycaffe is brewnet.pycaffe (the same module object)."""
import sys

import brewnet.pycaffe

sys.modules[__name__] = brewnet.pycaffe
