"""caffe.draw is brewnet.pycaffe.draw (the same module object)."""
import sys

import brewnet.pycaffe.draw

sys.modules[__name__] = brewnet.pycaffe.draw
