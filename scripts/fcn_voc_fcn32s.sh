#!/usr/bin/env bash
# Runs fcn.berkeleyvision.org's voc-fcn32s code on brewnet, end to end on a VOC-format folder: its net.py
# (NetSpec, coord_map.crop) writes train/val.prototxt, caffe.SGDSolver reads its solver.prototxt, its
# surgery.transplant casts a VGG16 classifier into the FCN, its surgery.interp fills the upsampling filters,
# the solver steps, and its score.seg_tests reports overall accuracy, mean IU and fwavacc.
#
#   scripts/fcn_voc_fcn32s.sh FCN_CHECKOUT [VOC_FOLDER] [STEPS]
#
# FCN_CHECKOUT is a work tree (or bare clone) of github.com/shelhamer/fcn.berkeleyvision.org; nothing of it is
# copied into this repository.  VOC_FOLDER defaults to a few images of brewnet's digit set
# (python -m brewnet.tools.make_voc_digits).  What is changed in their files, and only that:
#   - 2to3's print fixer (the files are Python 2);
#   - data: the train split reads the VOC folder with their VOCSegDataLayer (SBDD's .mat files are not here),
#     the val split is the folder's val.txt; test_iter is the number of val images;
#   - solve.py's GPU device, ILSVRC weights (vgg16-fcn.caffemodel cannot be fetched) and 25 x 4000 steps:
#     the driver below runs CPU mode, from the nets' fillers, STEPS steps (default 2), then one seg_tests.
set -euo pipefail
if [ $# -lt 1 ]; then
    echo "usage: $0 FCN_CHECKOUT [VOC_FOLDER] [STEPS]" >&2
    exit 2
fi
checkout=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$here/.venv/bin/python}
steps=${3:-2}
tree=$(mktemp -d "${TMPDIR:-/tmp}/fcn32s.XXXXXX")
trap 'rm -rf "$tree"' EXIT
if [ -d "$checkout/voc-fcn32s" ]; then
    (cd "$checkout" && tar -c voc-fcn32s voc_layers.py surgery.py score.py) | tar -x -C "$tree"
else
    git -C "$checkout" archive HEAD voc-fcn32s voc_layers.py surgery.py score.py | tar -x -C "$tree"
fi
if [ $# -ge 2 ]; then
    voc=$(cd "$2" && pwd)
else
    voc="$tree/data/voc"
    PYTHONPATH="$here" "$python" -m brewnet.tools.make_voc_digits -train 4 -val 3 -seed 0 "$voc" 2>/dev/null
fi
cd "$tree"
"$python" -m lib2to3 -w -n -f print voc_layers.py surgery.py score.py voc-fcn32s/net.py >/dev/null 2>&1
sed -i "s#pydata_params\['sbdd_dir'\] = '../data/sbdd/dataset'#pydata_params['voc_dir'] = '$voc'#;
        s#pylayer = 'SBDDSegDataLayer'#pylayer = 'VOCSegDataLayer'#;
        s#'../data/pascal/VOC2011'#'$voc'#; s#fcn('seg11valid')#fcn('val')#" voc-fcn32s/net.py
val_count=$(wc -l < "$voc/ImageSets/Segmentation/val.txt")
sed -i "s/^test_iter: .*/test_iter: $val_count/" voc-fcn32s/solver.prototxt
mkdir -p voc-fcn32s/snapshot
cat > voc-fcn32s/run_fcn32s.py <<PY
import sys
sys.path.insert(0, '..')
import numpy as np
import caffe
import net
import score
import surgery
net.make_net()
caffe.set_mode_cpu()
solver = caffe.SGDSolver('solver.prototxt')
# ilsvrc-nets' step: VGG16 cast into fully convolutional form by surgery.transplant (its fc6/fc7 inner
# products coerced into fcn32s's 7x7 and 1x1 convolutions, fc8 dropped); the ILSVRC weights cannot be fetched,
# so the classifier is VGG16's layout filled with Gaussian values.
from caffe import layers as L, params as P
vgg = caffe.NetSpec()
vgg.data = L.Input(shape=dict(dim=[1, 3, 224, 224]))
top = vgg.data
for block, (width, convs) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)], start=1):
    for k in range(1, convs + 1):
        top = L.Convolution(top, num_output=width, kernel_size=3, pad=1, weight_filler=dict(type='gaussian', std=0.01))
        setattr(vgg, 'conv%d_%d' % (block, k), top)
        top = L.ReLU(top, in_place=True)
        setattr(vgg, 'relu%d_%d' % (block, k), top)
    top = L.Pooling(top, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    setattr(vgg, 'pool%d' % block, top)
vgg.fc6 = L.InnerProduct(top, num_output=4096, weight_filler=dict(type='gaussian', std=0.01))
vgg.fc7 = L.InnerProduct(vgg.fc6, num_output=4096, weight_filler=dict(type='gaussian', std=0.01))
vgg.fc8 = L.InnerProduct(vgg.fc7, num_output=1000, weight_filler=dict(type='gaussian', std=0.01))
with open('vgg16_classifier.prototxt', 'w') as f:
    f.write(str(vgg.to_proto()))
base = caffe.Net('vgg16_classifier.prototxt', caffe.TEST)
surgery.transplant(solver.net, base)
for name in ('conv1_1', 'conv5_3', 'fc6', 'fc7'):
    same = np.array_equal(solver.net.params[name][0].data.ravel(), base.params[name][0].data.ravel())
    print('transplant %s %s -> %s: %s' % (name, base.params[name][0].data.shape,
                                         solver.net.params[name][0].data.shape, 'equal' if same else 'DIFFERENT'))
surgery.interp(solver.net, [k for k in solver.net.params.keys() if 'up' in k])
solver.step($steps)
val = np.loadtxt('$voc/ImageSets/Segmentation/val.txt', dtype=str, ndmin=1)
score.seg_tests(solver, False, val, layer='score')
PY
cd voc-fcn32s
PYTHONPATH="$here" GLOG_minloglevel=1 "$python" run_fcn32s.py
