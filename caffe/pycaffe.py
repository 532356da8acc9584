"""caffe.pycaffe is the package brewnet.pycaffe (the same module object): Caffe's pycaffe module holds Net,
the solvers, NCCL and Timer, and brewnet.pycaffe exposes those (and the rest of `caffe`)."""
import sys

import brewnet.pycaffe

sys.modules[__name__] = brewnet.pycaffe
