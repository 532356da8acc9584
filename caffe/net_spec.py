"""caffe.net_spec is brewnet.pycaffe.net_spec (the same module object)."""
import sys

import brewnet.pycaffe.net_spec

sys.modules[__name__] = brewnet.pycaffe.net_spec
