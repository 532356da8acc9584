"""caffe.coord_map is brewnet.pycaffe.coord_map (the same module object)."""
import sys

import brewnet.pycaffe.coord_map

sys.modules[__name__] = brewnet.pycaffe.coord_map
