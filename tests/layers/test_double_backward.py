"""The gradient penalty's parameter gradient (WGAN-GP) through hand-written layers, against torch autograd's
double backprop (create_graph=True) on the same critic written with torch.nn.functional, and against central
differences of the penalty."""
import pytest
import torch
import torch.nn.functional as F

from brewnet.core.net import Net
from brewnet.errors import LayerError
from brewnet.layers.double_backward import DoubleBackwardError, critic_path, gradient_penalty
from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text


def layer(name, type_, bottom, top, params=""):
    return f'layer {{ name: "{name}" type: "{type_}" bottom: "{bottom}" top: "{top}" {params} }}'


def conv(name, bottom, n, k):
    return layer(name, "Convolution", bottom, name, f'convolution_param {{ num_output: {n} kernel_size: {k} '
                 f'weight_filler {{ type: "gaussian" std: 0.4 }} bias_filler {{ type: "gaussian" std: 0.3 }} }}')


def ip(name, bottom, n, extra=""):
    return layer(name, "InnerProduct", bottom, name, f'inner_product_param {{ num_output: {n} {extra} '
                 f'weight_filler {{ type: "gaussian" std: 0.4 }} bias_filler {{ type: "gaussian" std: 0.3 }} }}')


def data(shape):
    dims = " ".join(f"dim: {d}" for d in shape)
    return f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {dims} }} }} }}'


# The book's DCGAN discriminator in small (10.2.3, without its sigmoid: a critic), with every layer kind the
# double backward knows: conv, TanH in place, MAX pooling, conv, LeakyReLU in place, AVE pooling, Flatten,
# InnerProduct, Sigmoid, InnerProduct.
CONV_CRITIC = "\n".join([
    'name: "critic"', data((4, 2, 14, 14)),
    conv("conv1", "data", 4, 3), layer("tanh1", "TanH", "conv1", "conv1"),
    layer("pool1", "Pooling", "conv1", "pool1", "pooling_param { pool: MAX kernel_size: 2 stride: 2 }"),
    conv("conv2", "pool1", 6, 3),
    layer("lrelu2", "ReLU", "conv2", "conv2", "relu_param { negative_slope: 0.2 }"),
    layer("pool2", "Pooling", "conv2", "pool2", "pooling_param { pool: AVE kernel_size: 2 stride: 2 }"),
    layer("flat", "Flatten", "pool2", "flat"),
    ip("fc1", "flat", 8), layer("sig", "Sigmoid", "fc1", "sig"), ip("score", "sig", 1)])


def conv_critic_oracle(x, p):
    y = torch.tanh(F.conv2d(x, p["conv1"][0], p["conv1"][1]))
    y = F.max_pool2d(y, 2, 2)
    y = F.leaky_relu(F.conv2d(y, p["conv2"][0], p["conv2"][1]), 0.2)
    y = F.avg_pool2d(y, 2, 2).flatten(1)
    y = torch.sigmoid(F.linear(y, p["fc1"][0], p["fc1"][1]))
    return F.linear(y, p["score"][0], p["score"][1])


# InnerProduct with transpose, ReLU, a Split on the path (a second head, as InfoGAN's Q head shares D's trunk).
TWO_HEADS = "\n".join([
    'name: "two_heads"', data((5, 3)), ip("fc1", "data", 6, "transpose: true"), layer("relu", "ReLU", "fc1", "fc1"),
    ip("score", "fc1", 1), ip("q", "fc1", 2)])


def two_heads_oracle(x, p):
    return F.linear(F.relu(x @ p["fc1"][0] + p["fc1"][1]), p["score"][0], p["score"][1])


# Deconvolution (stride 2) and Reshape, the remaining rules.
DECONV = "\n".join([
    'name: "deconv"', data((3, 2, 3, 3)),
    layer("up", "Deconvolution", "data", "up", 'convolution_param { num_output: 2 kernel_size: 4 stride: 2 pad: 1 '
          'weight_filler { type: "gaussian" std: 0.4 } bias_filler { type: "gaussian" std: 0.3 } }'),
    layer("tanh", "TanH", "up", "up"),
    layer("rows", "Reshape", "up", "rows", "reshape_param { shape { dim: 0 dim: -1 } }"), ip("score", "rows", 1)])


def deconv_oracle(x, p):
    y = torch.tanh(F.conv_transpose2d(x, p["up"][0], p["up"][1], stride=2, padding=1))
    return F.linear(y.reshape(y.shape[0], -1), p["score"][0], p["score"][1])


def make_net(text, dtype):
    torch.manual_seed(3)
    return Net(parse_text(text, caffe_pb2.NetParameter()), phase=caffe_pb2.TRAIN, dtype=dtype)


def params_of(net):
    return {layer.name: [b.data.detach().double().clone() for b in layer.blobs]
            for layer in net.layers if layer.blobs}


def autograd_penalty(oracle, x, params, weight, target):
    """P and dP/dparams by torch autograd's double backprop (float64)."""
    leaves = {k: [t.clone().requires_grad_() for t in v] for k, v in params.items()}
    x = x.double().clone().requires_grad_()
    (g,) = torch.autograd.grad(oracle(x, leaves).sum(), x, create_graph=True)
    norms = g.flatten(1).norm(dim=1)
    penalty = weight * ((norms - target) ** 2).mean()
    flat = [t for v in leaves.values() for t in v]
    grads = torch.autograd.grad(penalty, flat, allow_unused=True)   # None: D's last bias, the q head
    it = iter(grads)
    return penalty.detach(), norms.detach(), {k: [next(it) for _ in v] for k, v in leaves.items()}


def brewnet_penalty(net, x, weight, target):
    net.blobs["data"].data.copy_(x)
    net.forward()
    net.clear_param_diffs()
    penalty, norms = gradient_penalty(net, "data", "score", weight=weight, target=target)
    diffs = {layer.name: [b.diff.detach().double().clone() for b in layer.blobs]
             for layer in net.layers if layer.blobs}
    return penalty, norms, diffs


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-7), (torch.float32, 1e-3)])
@pytest.mark.parametrize("text,oracle,shape", [(CONV_CRITIC, conv_critic_oracle, (4, 2, 14, 14)),
                                               (TWO_HEADS, two_heads_oracle, (5, 3)),
                                               (DECONV, deconv_oracle, (3, 2, 3, 3))],
                         ids=["conv_critic", "two_heads", "deconv_reshape"])
def test_penalty_gradient_equals_autograd_double_backprop(text, oracle, shape, dtype, rtol):
    net = make_net(text, dtype)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    weight, target = 10.0, 1.0
    penalty, norms, diffs = brewnet_penalty(net, x.to(dtype), weight, target)
    expected_penalty, expected_norms, expected = autograd_penalty(oracle, x, params_of(net), weight, target)
    torch.testing.assert_close(norms.double(), expected_norms, rtol=rtol, atol=0)
    torch.testing.assert_close(penalty.double(), expected_penalty, rtol=rtol, atol=0)
    for name, grads in expected.items():
        for i, (actual, wanted) in enumerate(zip(diffs[name], grads)):
            # None: g does not depend on it; 0: only through a ReLU's mask (the two-head net's fc1 bias)
            scale = 0.0 if wanted is None else float(wanted.abs().max())
            if scale == 0.0:
                assert float(actual.abs().max()) == 0.0, f"{name} param {i}"
                continue
            torch.testing.assert_close(actual, wanted, rtol=rtol, atol=rtol * scale,
                                       msg=lambda m: f"{name} param {i}: {m}")


def test_penalty_gradient_equals_central_differences():
    """Independent of autograd: dP/dw for one entry of every parameter blob, by (P(w+h) - P(w-h)) / 2h."""
    net = make_net(CONV_CRITIC, torch.float64)
    x = torch.randn((4, 2, 14, 14), generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    _, _, diffs = brewnet_penalty(net, x, 10.0, 1.0)
    h = 1e-6
    for name, index in (("conv1", 0), ("conv1", 1), ("conv2", 0), ("conv2", 1), ("fc1", 0), ("fc1", 1),
                        ("score", 0)):
        blob = net.layer_by_name(name).blobs[index]
        flat = blob.count() // 2
        value = blob.data.view(-1)[flat].item()
        values = []
        for shifted in (value + h, value - h):
            blob.data.view(-1)[flat] = shifted
            values.append(float(brewnet_penalty(net, x, 10.0, 1.0)[0]))
        blob.data.view(-1)[flat] = value
        numeric = (values[0] - values[1]) / (2 * h)
        analytic = float(diffs[name][index].view(-1)[flat])
        assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(numeric)), (name, index, numeric, analytic)


def test_penalty_accumulates_into_diffs_and_skips_frozen_parameters():
    net = make_net(CONV_CRITIC.replace('name: "fc1" type: "InnerProduct" bottom: "flat" top: "fc1"',
                                       'name: "fc1" type: "InnerProduct" bottom: "flat" top: "fc1" '
                                       'param { lr_mult: 0 } param { lr_mult: 0 }'), torch.float64)
    x = torch.randn((4, 2, 14, 14), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    _, _, once = brewnet_penalty(net, x, 10.0, 1.0)
    gradient_penalty(net, "data", "score")          # a second call adds the same again
    assert float(once["conv1"][0].abs().max()) > 0
    torch.testing.assert_close(net.layer_by_name("conv1").blobs[0].diff, 2 * once["conv1"][0])
    assert float(net.layer_by_name("fc1").blobs[0].diff.abs().max()) == 0.0


def test_path_follows_in_place_layers_and_splits():
    path = critic_path(make_net(TWO_HEADS, torch.float64), "data", "score")
    assert [s.layer.type for s in path] == ["InnerProduct", "ReLU", "Split", "InnerProduct"]
    path = critic_path(make_net(CONV_CRITIC, torch.float64), "data", "score")
    assert [s.layer.name for s in path] == ["conv1", "tanh1", "pool1", "conv2", "lrelu2", "pool2", "flat", "fc1",
                                           "sig", "score"]


def test_layer_without_double_backward_is_named():
    text = "\n".join(['name: "bn_critic"', data((4, 3)), ip("fc1", "data", 4),
                      layer("bn", "BatchNorm", "fc1", "bn"), ip("score", "bn", 1)])
    with pytest.raises(DoubleBackwardError, match=r"layer 'bn' \(type BatchNorm, 1 bottoms\) lies on the path "
                                                  r"from 'data' to 'score' and has no double backward"):
        critic_path(make_net(text, torch.float64), "data", "score")


def test_output_not_computed_from_input_is_an_error():
    text = "\n".join(['name: "apart"', data((4, 3)),
                      'layer { name: "z" type: "Input" top: "z" input_param { shape { dim: 4 dim: 3 } } }',
                      ip("score", "z", 1)])
    with pytest.raises(DoubleBackwardError, match="blob 'score' is not computed from blob 'data'"):
        critic_path(make_net(text, torch.float64), "data", "score")


def test_pooling_other_than_max_or_ave_is_refused():
    text = "\n".join(['name: "stochastic"', data((2, 1, 4, 4)),
                      layer("pool", "Pooling", "data", "pool", "pooling_param { pool: STOCHASTIC kernel_size: 2 }"),
                      ip("score", "pool", 1)])
    with pytest.raises(LayerError, match=r"layer 'pool' \(type Pooling\): Expect: MAX or AVE pooling with one top "
                                         r"for a double backward, Actual: STOCHASTIC with 1 tops"):
        critic_path(make_net(text, torch.float64), "data", "score")
