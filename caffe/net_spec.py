"""caffe.net_spec is brewnet.net_spec (the same module object)."""
import sys

import brewnet.net_spec

sys.modules[__name__] = brewnet.net_spec
