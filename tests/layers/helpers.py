"""Small builders shared by the layer tests."""
import torch

from brewnet.core.blob import Blob
from brewnet.core.registry import create_layer
from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text


def make_layer(text):
    """A layer named L from the text of a LayerParameter (without the name)."""
    return create_layer(parse_text('name: "L" ' + text, caffe_pb2.LayerParameter()))


def blob(values, name="x"):
    """A blob of torch's default dtype holding `values` (nested lists or a tensor)."""
    t = torch.as_tensor(values, dtype=torch.get_default_dtype())
    b = Blob(t.shape, name=name)
    b.data.copy_(t)
    return b


def tensor_blob(values):
    """A blob with the dtype of the tensor `values` (float64 for gradient checks), holding a copy of it."""
    b = Blob(values.shape, dtype=values.dtype)
    b.data = values.clone()
    return b


def assert_matches_autograd(layer, bottom, top, x, oracle):
    """After `layer` ran forward on `x`: its top and its backward of a random top diff equal `oracle` (torch
    ops) and autograd's gradient."""
    dy = torch.randn(top[0].shape)
    top[0].diff.copy_(dy)
    layer.Backward(top, [True], bottom)
    leaf = x.clone().requires_grad_()
    y = oracle(leaf)
    y.backward(dy)
    torch.testing.assert_close(top[0].data, y.detach())
    torch.testing.assert_close(bottom[0].diff, leaf.grad)
