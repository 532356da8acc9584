# -*- coding: utf-8 -*-
"""Book 5.9.2: dump the 2-D ip1 features of the MNIST test set from a trained LeNet++ (center loss), the way
the book does it with pycaffe: an LMDB cursor over Datum records, caffe.io.datum_to_array, net.forward_all.

    python examples/book/center_loss_features.py [DEPLOY CAFFEMODEL TEST_LMDB OUT_TXT]

Defaults: the files `python -m examples.book 5.9` leaves in results/book/5.9/.  Each output line holds
"label x y".
"""
import sys

import lmdb
import numpy as np

import caffe

deploy = 'results/book/5.9/mnist_deploy.prototxt'
model = 'results/book/5.9/lenet_pp_center.caffemodel'
db_path = 'results/book/5.9/data/mnist_test_lmdb'
out_path = 'results/book/5.9/test_features.txt'
if len(sys.argv) == 5:
    deploy, model, db_path, out_path = sys.argv[1:]

caffe.set_mode_cpu()
net = caffe.Net(deploy, model, caffe.TEST)

# read every test image and its label from the database
env = lmdb.open(db_path, readonly=True)
txn = env.begin()
cursor = txn.cursor()
datum = caffe.proto.caffe_pb2.Datum()
images = []
labels = []
for key, value in cursor:
    datum.ParseFromString(value)
    labels.append(datum.label)
    images.append(caffe.io.datum_to_array(datum))
env.close()
print('read', len(images), 'images from', db_path)

# the training net's transform_param: (pixel - 127.5) * 0.0078125
data = (np.array(images, dtype=np.float32) - 127.5) * 0.0078125
out = net.forward_all(data=data)
features = out['ip1']
print('features', features.shape)
for label, (x, y) in list(zip(labels, features))[:5]:
    print(label, x, y)

with open(out_path, 'w') as f:
    for label, (x, y) in zip(labels, features):
        f.write('%d %f %f\n' % (label, x, y))
print('wrote', out_path)
