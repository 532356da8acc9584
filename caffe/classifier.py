"""caffe.classifier is brewnet.classifier (the same module object)."""
import sys

import brewnet.classifier

sys.modules[__name__] = brewnet.classifier
