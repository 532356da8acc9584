"""Pieces every generator shares: the input layers (LMDB Data or Input blobs), the classifier head, the
convolution + BatchNorm + Scale (+ ReLU) unit, and the parameter count the tests and the book compare.

Inputs, chosen by the keyword arguments every generator passes through to `add_inputs`:

- `source="path/to/lmdb"`: one `Data` layer (tops `data`, `label`; `backend` LMDB by default) with
  `batch_size` and the `transform_param` given (e.g. `dict(scale=1/256.)`).
- `input_shape=(C, H, W)`: an `Input` layer `data` of shape (batch_size, C, H, W) and, when `label` is true,
  an `Input` layer `label` of shape (batch_size,): the caller fills them (`net.blobs['data'].data[...] = x`).

Head: with a label, `SoftmaxWithLoss` (top `loss`) and, when `accuracy` is true, `Accuracy` (top
`accuracy`); without a label (a deploy net), `Softmax` (top `prob`). The classifier's output is `score`.
"""
from ..errors import BrewnetError
from ..proto import caffe_pb2
from ..pycaffe.net_spec import layers as L, params as P


class ModelSpecError(BrewnetError, ValueError):
    """A generator was asked for a net it cannot build (depth, inputs, block to delete)."""


MSRA = dict(type="msra")


def add_inputs(n, source=None, input_shape=None, batch_size=64, label=True, backend="LMDB",
               transform_param=None):
    """Set n.data (and n.label) from an LMDB source or an input shape; returns (data, label or None)."""
    if (source is None) == (input_shape is None):
        raise ModelSpecError("give exactly one of source= (a Data layer's LMDB/LevelDB path) and "
                             f"input_shape= (C, H, W of Input blobs); got source={source!r}, "
                             f"input_shape={input_shape!r}")
    if batch_size < 1:
        raise ModelSpecError(f"batch_size must be positive, got {batch_size}")
    if source is not None:
        if backend not in caffe_pb2.DataParameter.DB.keys():
            raise ModelSpecError(f"backend: Expect: one of {', '.join(caffe_pb2.DataParameter.DB.keys())}, "
                                 f"Actual: {backend!r}")
        kwargs = dict(source=str(source), backend=getattr(P.Data, backend), batch_size=batch_size, ntop=2)
        if transform_param:
            kwargs["transform_param"] = dict(transform_param)
        n.data, n.label = L.Data(**kwargs)
        return n.data, (n.label if label else None)
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ModelSpecError(f"input_shape must be (channels, height, width), got {input_shape!r}")
    n.data = L.Input(shape=dict(dim=[batch_size, *shape]))
    if not label:
        return n.data, None
    n.label = L.Input(shape=dict(dim=[batch_size]))
    return n.data, n.label


def add_head(n, features, label, num_output, accuracy=True):
    """InnerProduct `score` on the features, then the loss (and accuracy) or, without a label, `prob`."""
    n.score = L.InnerProduct(features, num_output=num_output, weight_filler=MSRA, bias_filler=dict(type="constant"))
    if label is None:
        n.prob = L.Softmax(n.score)
        return
    n.loss = L.SoftmaxWithLoss(n.score, label)
    if accuracy:
        n.accuracy = L.Accuracy(n.score, label)


def conv_bn(n, name, bottom, num_output, kernel_size=3, stride=1, batch_norm=True, relu=True):
    """Convolution `name` (no bias when BatchNorm follows, as in He et al.), then BatchNorm `name_bn` +
    Scale `name_scale` in place when batch_norm, then ReLU `name_relu` in place when relu. Returns the top."""
    pad = (kernel_size - 1) // 2
    n[name] = L.Convolution(bottom, num_output=num_output, kernel_size=kernel_size, stride=stride, pad=pad,
                            bias_term=not batch_norm, weight_filler=MSRA,
                            **({} if batch_norm else dict(bias_filler=dict(type="constant"))))
    top = n[name]
    if batch_norm:
        n[name + "_bn"] = L.BatchNorm(top, in_place=True)
        n[name + "_scale"] = L.Scale(top, bias_term=True, in_place=True)
    if relu:
        n[name + "_relu"] = L.ReLU(top, in_place=True)
    return top


def bn_relu(n, name, bottom):
    """BatchNorm into a new top `name` (its bottom stays intact for a Concat), Scale and ReLU in place."""
    n[name] = L.BatchNorm(bottom)
    n[name + "_scale"] = L.Scale(n[name], bias_term=True, in_place=True)
    n[name + "_relu"] = L.ReLU(n[name], in_place=True)
    return n[name]


def finish(n, name):
    """The NetParameter of NetSpec n, named."""
    param = n.to_proto()
    param.name = name
    return param


def parameter_count(net):
    """Learned values of a brewnet Net: every parameter blob except BatchNorm's statistics (mean, variance
    and the moving-average factor, which Caffe stores as blobs but never learns). Shared blobs count once."""
    seen, total = set(), 0
    for layer in net.layers:
        if layer.type == "BatchNorm":
            continue
        for blob in layer.blobs:
            if id(blob) not in seen:
                seen.add(id(blob))
                total += blob.count()
    return total

