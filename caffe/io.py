"""caffe.io is brewnet.io (the same module object)."""
import sys

import brewnet.io

sys.modules[__name__] = brewnet.io
