"""Deeply-supervised nets (Lee et al. 2015): a plain convolutional net whose hidden stages have classifiers
of their own, each with its own loss, so the lower layers get a direct error signal.

    dsn(widths=(32, 64, 128), convs_per_stage=2, num_output=10, deep_supervision=True, aux_weight=0.3,
        batch_norm=False, source=None, input_shape=None, batch_size=64, label=True, accuracy=True,
        backend="LMDB", transform_param=None, name=None) -> caffe_pb2.NetParameter

Stage s (1-based) is convs_per_stage 3x3 convolutions `conv<s>_<i>` of widths[s-1] channels with ReLU (and
BatchNorm + Scale when batch_norm, biases otherwise), then 2x2 max pooling `pool<s>`, except after the last
stage: global average pooling `pool` and the InnerProduct `score`, with SoftmaxWithLoss `loss` (weight 1).
With deep_supervision (and a label), every stage but the last gets a companion classifier: global average
pooling `aux<s>_pool` of the stage's output, InnerProduct `aux<s>_score`, SoftmaxWithLoss `aux<s>_loss` with
loss_weight aux_weight and Accuracy `aux<s>_accuracy`. deep_supervision=False is the plain net of the same
layers. (The paper's companions are squared hinge losses whose weight decays during training; here softmax
losses of constant weight, the form GoogLeNet's auxiliary classifiers took.)

Learned values (parameter_count), c_0 = input channels, w_s = widths[s-1], m = convs_per_stage, b = 2 with
BatchNorm (Scale's gamma and beta), 1 without (the bias):
    sum_s [9 w_{s-1} w_s + b w_s + (m - 1)(9 w_s² + b w_s)]  +  w_last K + K
    + (with deep supervision) sum_{s < last} (w_s K + K)
"""
from ..pycaffe.net_spec import NetSpec, layers as L, params as P
from .common import MSRA, ModelSpecError, add_head, add_inputs, conv_bn, finish


def companion(n, s, top, target, num_output, weight, accuracy):
    n[f"aux{s}_pool"] = L.Pooling(top, pool=P.Pooling.AVE, global_pooling=True)
    n[f"aux{s}_score"] = L.InnerProduct(n[f"aux{s}_pool"], num_output=num_output, weight_filler=MSRA,
                                        bias_filler=dict(type="constant"))
    n[f"aux{s}_loss"] = L.SoftmaxWithLoss(n[f"aux{s}_score"], target, loss_weight=weight)
    if accuracy:
        n[f"aux{s}_accuracy"] = L.Accuracy(n[f"aux{s}_score"], target)


def dsn(widths=(32, 64, 128), convs_per_stage=2, num_output=10, deep_supervision=True, aux_weight=0.3,
        batch_norm=False, source=None, input_shape=None, batch_size=64, label=True, accuracy=True,
        backend="LMDB", transform_param=None, name=None):
    """The NetParameter of a deeply-supervised net, or its plain twin (see the module's docstring)."""
    if not widths or min(widths) < 1 or convs_per_stage < 1:
        raise ModelSpecError(f"Expect: positive widths and convs_per_stage >= 1, Actual: widths {tuple(widths)}, "
                             f"convs_per_stage {convs_per_stage}")
    n = NetSpec()
    top, target = add_inputs(n, source=source, input_shape=input_shape, batch_size=batch_size, label=label,
                             backend=backend, transform_param=transform_param)
    last = len(widths)
    for s, width in enumerate(widths, 1):
        for i in range(1, convs_per_stage + 1):
            top = conv_bn(n, f"conv{s}_{i}", top, width, batch_norm=batch_norm)
        if s == last:
            break
        if deep_supervision and target is not None:
            companion(n, s, top, target, num_output, aux_weight, accuracy)
        n[f"pool{s}"] = L.Pooling(top, pool=P.Pooling.MAX, kernel_size=2, stride=2)
        top = n[f"pool{s}"]
    n.pool = L.Pooling(top, pool=P.Pooling.AVE, global_pooling=True)
    add_head(n, n.pool, target, num_output, accuracy=accuracy)
    return finish(n, name or ("DSN" if deep_supervision else "PlainNet"))
