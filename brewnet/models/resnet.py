"""ResNet for small images (He et al. 2016, section 4.2; the book's ResNet-20, figure 7-2).

    cifar_resnet(depth=20, num_output=10, batch_norm=True, shortcuts=True, width=16, drop_blocks=(),
                 source=None, input_shape=None, batch_size=64, label=True, accuracy=True,
                 backend="LMDB", transform_param=None) -> caffe_pb2.NetParameter

depth = 6n + 2: a 3x3 convolution `conv1` of `width` channels, then three stages of n residual blocks with
width, 2*width and 4*width channels (the first block of stages 2 and 3 halves the size with stride 2), global
average pooling `pool` and the InnerProduct `score`. A block `res<s>_<b>` (stage s = 1..3, block b = 1..n) is
conv `res<s>_<b>_a` (+ ReLU) and conv `res<s>_<b>_b`, each followed by BatchNorm + Scale when batch_norm
(otherwise the convolutions have biases); its output `res<s>_<b>` is the Eltwise sum with the shortcut, then
ReLU in place. The shortcut is the identity, or, where the shape changes, a projection: a 1x1 convolution
`res<s>_<b>_proj` with stride 2 (+ BatchNorm + Scale), as the book's figure draws it.

shortcuts=False gives the plain net of the same depth (no Eltwise sums, no projections).

drop_blocks: names of blocks deleted at test time, the experiment of Veit et al. (2016): the block's residual
branch is left out, so the block's output is its shortcut (the input itself, or the ReLU of the projection).
In a plain net only a block whose input and output shapes agree can be deleted (its output becomes its input).
Layer names do not depend on drop_blocks, so the weights of the whole net copy into the shortened one
(`Net.copy_trained_layers_from`, `share_trained_layers_with`).

Learned values (parameter_count), w = width, c = input channels, K = num_output, with BatchNorm:
    9cw + 2w  +  n(18w² + 4w)  +  (56w² + 12w) + (n-1)(72w² + 8w)  +  (224w² + 24w) + (n-1)(288w² + 16w)
    + 4wK + K
(ResNet-20 on 3-channel 32x32 images, K = 10: 272 474.)
"""
from ..pycaffe.net_spec import NetSpec, layers as L, params as P
from .common import ModelSpecError, add_head, add_inputs, conv_bn, finish


def blocks_per_stage(depth):
    if depth < 8 or (depth - 2) % 6:
        raise ModelSpecError(f"ResNet depth must be 6n + 2 with n >= 1 (8, 14, 20, 32, ...), got {depth}")
    return (depth - 2) // 6


def block_names(depth):
    """The residual blocks' names in order: res1_1 ... res3_n."""
    n = blocks_per_stage(depth)
    return [f"res{s}_{b}" for s in (1, 2, 3) for b in range(1, n + 1)]


def residual_block(n, name, bottom, channels, stride, batch_norm=True, shortcut=True, dropped=False):
    """One block; returns its output top. `channels` is the block's output width."""
    project = stride != 1
    if dropped and project and not shortcut:
        raise ModelSpecError(f"block {name} of the plain net changes the shape (stride {stride}): "
                             "it cannot be deleted, only blocks with identity shortcuts can")
    if not dropped:
        a = conv_bn(n, name + "_a", bottom, channels, stride=stride, batch_norm=batch_norm)
        branch = conv_bn(n, name + "_b", a, channels, batch_norm=batch_norm, relu=False)
    if not shortcut:
        if dropped:
            return bottom
        n[name + "_relu"] = L.ReLU(branch, in_place=True)
        return branch
    skip = bottom
    if project:
        skip = conv_bn(n, name + "_proj", bottom, channels, kernel_size=1, stride=stride,
                       batch_norm=batch_norm, relu=False)
    if dropped:
        if not project:
            return bottom          # already the output of a ReLU: ReLU(x) = x
        n[name + "_relu"] = L.ReLU(skip, in_place=True)
        return skip
    n[name] = L.Eltwise(branch, skip, operation=P.Eltwise.SUM)
    n[name + "_relu"] = L.ReLU(n[name], in_place=True)
    return n[name]


def cifar_resnet(depth=20, num_output=10, batch_norm=True, shortcuts=True, width=16, drop_blocks=(),
                 source=None, input_shape=None, batch_size=64, label=True, accuracy=True, backend="LMDB",
                 transform_param=None, name=None):
    """The NetParameter of ResNet-`depth` (see the module's docstring)."""
    count = blocks_per_stage(depth)
    unknown = set(drop_blocks) - set(block_names(depth))
    if unknown:
        raise ModelSpecError(f"no block {sorted(unknown)[0]} in ResNet-{depth}; blocks: "
                             f"{', '.join(block_names(depth))}")
    n = NetSpec()
    data, target = add_inputs(n, source=source, input_shape=input_shape, batch_size=batch_size, label=label,
                              backend=backend, transform_param=transform_param)
    top = conv_bn(n, "conv1", data, width, batch_norm=batch_norm)
    for stage in (1, 2, 3):
        channels = width * 2 ** (stage - 1)
        for block in range(1, count + 1):
            block_name = f"res{stage}_{block}"
            stride = 2 if stage > 1 and block == 1 else 1
            top = residual_block(n, block_name, top, channels, stride, batch_norm=batch_norm, shortcut=shortcuts,
                                 dropped=block_name in drop_blocks)
    n.pool = L.Pooling(top, pool=P.Pooling.AVE, global_pooling=True)
    add_head(n, n.pool, target, num_output, accuracy=accuracy)
    return finish(n, name or f"{'ResNet' if shortcuts else 'PlainNet'}-{depth}")
