"""Reusable NetSpec generators of the architectures in the book's chapter 7.

    from brewnet.models import resnet, densenet, fractalnet, dsn
    param = resnet.cifar_resnet(depth=20, num_output=10, input_shape=(1, 28, 28), batch_size=64)
    net = brewnet.core.net.Net(param, phase=caffe_pb2.TRAIN)     # or str(param): prototxt text

Every generator returns a `caffe_pb2.NetParameter` built with `caffe.NetSpec` (`str(param)` is its prototxt
text, `brewnet.proto.io` writes it to a file). Every generator takes the same input arguments
(`common.add_inputs`): `source=` an LMDB path (a Data layer, tops `data` and `label`, with `batch_size`,
`backend` and `transform_param`), or `input_shape=(C, H, W)` (Input layers `data` and `label` of batch_size);
`label=False` makes a deploy net ending in `prob`, otherwise the net ends in `loss` (SoftmaxWithLoss) and
`accuracy`. The classifier's output blob is `score`. `common.parameter_count(net)` counts learned values.

- resnet.cifar_resnet(depth=6n+2, ...)         ResNet-N of He et al. for small images, projection shortcuts
- densenet.densenet(depth=3L+4, growth=12, ...)  DenseNet: Concat growth, transition layers
- fractalnet.fractalnet(columns=C, blocks=B, ...) FractalNet: joins by mean with drop-path (DropPath layer)
- dsn.dsn(stages=..., deep_supervision=True, ...) deeply-supervised net: auxiliary classifiers with losses
"""
