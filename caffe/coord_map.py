"""caffe.coord_map is brewnet.coord_map (the same module object)."""
import sys

import brewnet.coord_map

sys.modules[__name__] = brewnet.coord_map
