"""caffe.draw is brewnet.draw (the same module object)."""
import sys

import brewnet.draw

sys.modules[__name__] = brewnet.draw
