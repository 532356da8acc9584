"""DenseNet for small images (Huang et al. 2017, the basic variant without bottlenecks).

    densenet(depth=40, growth=12, num_output=10, first_channels=None, compression=1.0, dropout=0.0,
             source=None, input_shape=None, batch_size=64, label=True, accuracy=True, backend="LMDB",
             transform_param=None, name=None) -> caffe_pb2.NetParameter

depth = 3L + 4: a 3x3 convolution `conv1` of first_channels (default 2 * growth) channels, three dense blocks of
L layers, a transition between blocks, then BatchNorm + Scale + ReLU (`final_bn`), global average pooling
`pool` and the InnerProduct `score`. Dense layer `block<b>_<i>` (b = 1..3, i = 1..L) is BatchNorm
`block<b>_<i>_bn` (its own top, so the Concat input stays intact) + Scale + ReLU, a 3x3 convolution
`block<b>_<i>` of `growth` channels (+ Dropout in place when dropout > 0) and the Concat `block<b>_<i>_concat`
of its input and its output: each layer adds `growth` channels. Transition `trans<b>`: BatchNorm + Scale +
ReLU, a 1x1 convolution to floor(compression * channels) channels, 2x2 average pooling `trans<b>_pool`.
Convolutions have no bias (a BatchNorm always follows).

Learned values (parameter_count), k = growth, c0 = first_channels, c = input channels, K = num_output:
    conv1: 9 c c0;  a block entered with m channels: (2 + 9k)(L m + k L(L-1)/2), leaving with m + Lk;
    a transition from m to m' channels: 2m + m m';  the head: 2m + m K + K.
"""
from ..pycaffe.net_spec import NetSpec, layers as L, params as P
from .common import MSRA, ModelSpecError, add_head, add_inputs, bn_relu, finish


def layers_per_block(depth):
    if depth < 7 or (depth - 4) % 3:
        raise ModelSpecError(f"DenseNet depth must be 3L + 4 with L >= 1 (7, 10, 13, ..., 40), got {depth}")
    return (depth - 4) // 3


def conv(n, name, bottom, channels, kernel_size, dropout):
    n[name] = L.Convolution(bottom, num_output=channels, kernel_size=kernel_size, pad=(kernel_size - 1) // 2,
                            bias_term=False, weight_filler=MSRA)
    if dropout > 0:
        n[name + "_drop"] = L.Dropout(n[name], dropout_ratio=dropout, in_place=True)
    return n[name]


def dense_block(n, b, top, channels, count, growth, dropout):
    """`count` dense layers on `top` (of `channels` channels); returns the last Concat and its channels."""
    for i in range(1, count + 1):
        name = f"block{b}_{i}"
        new = conv(n, name, bn_relu(n, name + "_bn", top), growth, 3, dropout)
        n[name + "_concat"] = L.Concat(top, new, axis=1)
        top, channels = n[name + "_concat"], channels + growth
    return top, channels


def transition(n, b, top, channels, compression, dropout):
    out = int(channels * compression)
    if out < 1:
        raise ModelSpecError(f"compression {compression} leaves no channel of {channels} in transition {b}")
    name = f"trans{b}"
    top = conv(n, name, bn_relu(n, name + "_bn", top), out, 1, dropout)
    n[name + "_pool"] = L.Pooling(top, pool=P.Pooling.AVE, kernel_size=2, stride=2)
    return n[name + "_pool"], out


def densenet(depth=40, growth=12, num_output=10, first_channels=None, compression=1.0, dropout=0.0,
             source=None, input_shape=None, batch_size=64, label=True, accuracy=True, backend="LMDB",
             transform_param=None, name=None):
    """The NetParameter of DenseNet-`depth` (see the module's docstring)."""
    count = layers_per_block(depth)
    if growth < 1 or not 0 < compression <= 1:
        raise ModelSpecError(f"Expect: growth >= 1 and 0 < compression <= 1, Actual: growth {growth}, "
                             f"compression {compression}")
    n = NetSpec()
    data, target = add_inputs(n, source=source, input_shape=input_shape, batch_size=batch_size, label=label,
                              backend=backend, transform_param=transform_param)
    channels = first_channels or 2 * growth
    top = conv(n, "conv1", data, channels, 3, 0.0)
    for b in (1, 2, 3):
        top, channels = dense_block(n, b, top, channels, count, growth, dropout)
        if b < 3:
            top, channels = transition(n, b, top, channels, compression, dropout)
    n.pool = L.Pooling(bn_relu(n, "final_bn", top), pool=P.Pooling.AVE, global_pooling=True)
    add_head(n, n.pool, target, num_output, accuracy=accuracy)
    return finish(n, name or f"DenseNet-{depth}")
