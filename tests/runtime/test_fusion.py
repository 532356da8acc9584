"""The Net's fused BatchNorm + Scale step (runtime/fusion.py, layers/batch_norm_scale.py) against the two
layers run one by one, and the Net's top_data_kept analysis that lets ReLU read its top in backward."""
import numpy as np
import pytest
import torch

from brewnet.core.net import Net
from brewnet.layers.batch_norm_scale import BatchNormScale
from brewnet.runtime.fusion import find_groups
from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text

BLOCK = """
name: "block" force_backward: true
layer { name: "in" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 4 dim: 3 dim: 6 dim: 6 } shape { dim: 4 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 5 kernel_size: 3 bias_term: false weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" %(bn)s }
layer { name: "sc" type: "Scale" bottom: "conv" top: "%(scale_top)s"
        scale_param { bias_term: true filler { type: "gaussian" std: 1 } bias_filler { type: "gaussian" std: 1 } } }
layer { name: "relu" type: "ReLU" bottom: "%(scale_top)s" top: "%(scale_top)s" }
layer { name: "ip" type: "InnerProduct" bottom: "%(scale_top)s" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def block_net(fuse, bn="", scale_top="conv", **kw):
    torch.manual_seed(0)
    net = Net(parse_text(BLOCK % dict(bn=bn, scale_top=scale_top), caffe_pb2.NetParameter()),
              phase=caffe_pb2.TRAIN, **kw)
    net.runtime.fuse_layers = fuse
    if "use_global_stats" in bn:
        stats = net.layer_by_name("bn").blobs
        stats[0].data.copy_(torch.linspace(-1, 1, 5))
        stats[1].data.copy_(torch.linspace(0.5, 2, 5))
        stats[2].data.fill_(1.5)
    g = torch.Generator().manual_seed(1)
    net.blobs["data"].data.copy_(torch.randn(4, 3, 6, 6, generator=g))
    net.blobs["label"].data.copy_(torch.tensor([0.0, 1, 2, 1]))
    return net


def state(net):
    """Every blob's data and diff and every layer blob's data and diff, by name."""
    out = {}
    for name, blob in net.blobs.items():
        out[name] = blob.data.clone()
        out[name + ".diff"] = blob.diff.clone()
    for name, layer in zip(net.layer_names, net.layers):
        for i, blob in enumerate(layer.blobs):
            out[f"{name}.{i}"] = blob.data.clone()
            out[f"{name}.{i}.diff"] = blob.diff.clone()
    return out


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=2e-6, msg=key)


@pytest.mark.parametrize("bn", ["", "batch_norm_param { use_global_stats: true }"], ids=["train", "global"])
def test_fused_forward_backward_equals_the_two_layers(bn):
    results = []
    for fuse in (True, False):
        net = block_net(fuse, bn)
        losses = [net.forward_backward() for _ in range(2)]       # twice: the running sums accumulate
        group = net.runtime.group_of[2]
        assert (group.first, group.last) == (2, 3) and group.fused_forward == fuse
        # On a GPU (BREWNET_TEST_MODE=gpu) the fused step in training runs cuDNN's kernels, the layers torch's.
        on_cuda = net.blobs["data"].data.is_cuda
        assert (group.reserve is not None) == (fuse and on_cuda and "use_global_stats" not in bn)
        results.append((losses, state(net)))
    (fused_losses, fused), (plain_losses, plain) = results
    assert fused_losses == pytest.approx(plain_losses, rel=1e-6)
    assert_same_state(fused, plain)
    # The gradients are real: the scale and bias of Scale and the input all got nonzero diffs.
    assert fused["sc.0.diff"].abs().min() > 0 and fused["data.diff"].abs().max() > 1e-3


ON_THE_DATA = """
name: "on_the_data"
layer { name: "in" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 4 dim: 3 dim: 6 dim: 6 } shape { dim: 4 } } }
layer { name: "bn" type: "BatchNorm" bottom: "data" top: "data" }
layer { name: "sc" type: "Scale" bottom: "data" top: "data"
        scale_param { bias_term: true filler { type: "gaussian" std: 1 } bias_filler { type: "gaussian" std: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def test_a_new_batch_size_reshapes_the_fused_pair():
    """The fused step skips the layers' reshape while the blob keeps its shape; a new batch size must still
    reach them (BatchNorm's split, the count m in its variance correction)."""
    results = []
    for fuse in (True, False):
        net = block_net(fuse)
        net.forward_backward()
        net.blobs["data"].reshape(2, 3, 6, 6)
        net.blobs["label"].reshape(2)
        net.blobs["data"].data.copy_(torch.linspace(-2, 2, 216).view(2, 3, 6, 6))
        net.blobs["label"].data.copy_(torch.tensor([2.0, 0]))
        loss = net.forward_backward()
        assert net.layer_by_name("bn").split[0] == 2 and net.runtime.group_of[2].fused_forward == fuse
        results.append((loss, state(net)))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-6)
    assert_same_state(results[0][1], results[1][1])


def test_batchnorm_on_the_data_before_a_learned_scale():
    # BatchNorm itself needs no backward (its bottom is the data, its statistics are not learned) but Scale
    # does: the fused step must keep its input for Scale's gradients.
    results = []
    for fuse in (True, False):
        torch.manual_seed(0)
        net = Net(parse_text(ON_THE_DATA, caffe_pb2.NetParameter()), phase=caffe_pb2.TRAIN)
        net.runtime.fuse_layers = fuse
        assert [net.layer_need_backward[net.layer_index(n)] for n in ("bn", "sc")] == [False, True]
        net.blobs["data"].data.copy_(torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(1)))
        net.blobs["label"].data.copy_(torch.tensor([0.0, 1, 2, 1]))
        net.forward_backward()
        assert net.runtime.group_of[net.layer_index("bn")].fused_forward == fuse
        results.append([b.diff.clone() for b in net.layer_by_name("sc").blobs])
    for fused, plain in zip(*results):
        torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-6)
        assert fused.abs().max() > 1e-3


ON_FEATURES = """
name: "on_features" force_backward: true
layer { name: "in" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 6 dim: 5 } shape { dim: 6 } } }
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc"
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "bn" type: "BatchNorm" bottom: "fc" top: "fc" }
layer { name: "sc" type: "Scale" bottom: "fc" top: "fc"
        scale_param { bias_term: true filler { type: "gaussian" std: 1 } bias_filler { type: "gaussian" std: 1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
"""


def test_fused_step_on_a_2d_blob_with_legacy_4d_statistics():
    """BatchNorm + Scale after an InnerProduct: the fused kernel reads the (N, C) blob as it is.  The
    statistics blobs have the 4-D shape (1, C, 1, 1) older caffemodels store; both paths update them alike."""
    from brewnet.core.blob import Blob
    results = []
    for fuse in (True, False):
        torch.manual_seed(0)
        net = Net(parse_text(ON_FEATURES, caffe_pb2.NetParameter()), phase=caffe_pb2.TRAIN)
        net.runtime.fuse_layers = fuse
        bn = net.layer_by_name("bn")
        for i, blob in enumerate(bn.blobs):
            legacy = Blob((1, blob.count(), 1, 1), name=blob.name)
            legacy.data.copy_(blob.data.view(legacy.shape) + 0.5 * i)
            bn.blobs[i]._data = legacy.data
        g = torch.Generator().manual_seed(3)
        net.blobs["data"].data.copy_(torch.randn(6, 5, generator=g))
        net.blobs["label"].data.copy_(torch.tensor([0.0, 1, 2, 3, 1, 0]))
        losses = [net.forward_backward() for _ in range(2)]
        assert net.runtime.group_of[net.layer_index("bn")].fused_forward == fuse
        results.append((losses, state(net)))
    (fused_losses, fused), (plain_losses, plain) = results
    assert fused_losses == pytest.approx(plain_losses, rel=1e-6)
    assert_same_state(fused, plain)
    # The scale factor started at 1.0 (legacy blob 2 above): s <- 0.999 s + 1, twice.
    assert fused["bn.0"].shape == (1, 4, 1, 1)
    assert fused["bn.2"].item() == pytest.approx(0.999 * (0.999 * 1.0 + 1) + 1, rel=1e-6)
    assert fused["data.diff"].abs().max() > 1e-3 and fused["sc.1.diff"].abs().min() > 0


def test_backward_starting_inside_a_fused_group_unfuses_it():
    results = []
    for fuse in (True, False):
        net = block_net(fuse)
        net.forward()
        net.backward()
        net.backward(start="bn")        # BatchNorm alone, after a fused forward: needs its own x_norm
        assert not net.runtime.group_of[2].fused_forward
        results.append(state(net))
    assert_same_state(*results)


def test_partial_forward_runs_the_layers_on_their_own():
    net = block_net(True)
    net.forward(end="bn")
    net.forward(start="sc")
    assert not net.runtime.group_of[2].fused_forward
    fused_run = block_net(True)
    assert fused_run.forward() == pytest.approx(net.forward(start="conv", end="loss"), rel=1e-6)


def test_a_held_array_sees_the_result_and_the_step_runs_unfused():
    net = block_net(True)
    held = net.blobs["conv"].data.numpy()        # a pycaffe user's view of the blob
    net.forward()
    assert not net.runtime.group_of[2].fused_forward
    np.testing.assert_array_equal(held, net.blobs["conv"].data.numpy())
    reference = block_net(False)
    reference.forward()
    np.testing.assert_allclose(held, reference.blobs["conv"].data.numpy(), rtol=1e-6)


def test_debug_info_runs_every_layer():
    net = block_net(True)
    net.debug_info = True
    net.forward()
    assert not net.runtime.group_of[2].fused_forward


def test_scale_out_of_place_is_not_fused():
    # BatchNorm's output would be observable in blob "conv": no group.
    net = block_net(True, scale_top="scaled")
    assert net.runtime.group_of == {}


def net_from(text, **kw):
    torch.manual_seed(0)
    return Net(parse_text(text, caffe_pb2.NetParameter()), phase=caffe_pb2.TRAIN, **kw)


@pytest.mark.parametrize("where", ["before-relu", "last"])
def test_batchnorm_without_a_scale_after_it_forms_no_group(where):
    # BatchNorm names its fusion partner; the partner's match sees no Scale after it.
    text = BLOCK % dict(bn="", scale_top="conv")
    if where == "before-relu":
        text = text.replace('layer { name: "sc"', 'layer { name: "relu0" type: "ReLU" bottom: "conv" top: "conv" }\n'
                                                  'layer { name: "sc"')
    else:
        text = 'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 4 dim: 3 } } }\n' \
               'layer { name: "bn" type: "BatchNorm" bottom: "x" top: "x" }'
    net = net_from(text)
    assert net.layer_by_name("bn").fusion is BatchNormScale
    assert find_groups(net) == [] and net.runtime.group_of == {}


def test_the_fusion_partner_is_asked_of_the_layer_not_its_type_string():
    from tests.runtime import capability_layers  # noqa: F401  (registers RenamedBatchNorm)
    results = []
    for bn_type in ("BatchNorm", "RenamedBatchNorm"):
        net = net_from((BLOCK % dict(bn="", scale_top="conv")).replace('type: "BatchNorm"', f'type: "{bn_type}"'))
        assert net.layers[2].type == bn_type
        g = torch.Generator().manual_seed(1)
        net.blobs["data"].data.copy_(torch.randn(4, 3, 6, 6, generator=g))
        net.blobs["label"].data.copy_(torch.tensor([0.0, 1, 2, 1]))
        losses = [net.forward_backward() for _ in range(2)]
        group = net.runtime.group_of[2]
        assert type(group) is BatchNormScale and (group.first, group.last) == (2, 3) and group.fused_forward
        results.append((losses, state(net)))
    assert results[0][0] == results[1][0]
    assert all(torch.equal(results[0][1][key], results[1][1][key]) for key in results[0][1])


# --- top_data_kept -----------------------------------------------------------------------------------------
REWRITTEN = """
name: "rewritten" force_backward: true
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 6 } } }
layer { name: "relu" type: "ReLU" bottom: "x" top: "y" }
layer { name: "split_use" type: "Flatten" bottom: "y" top: "flat" }
layer { name: "neg" type: "Power" bottom: "flat" top: "flat" power_param { scale: -1 } }
layer { name: "loss" type: "EuclideanLoss" bottom: "flat" bottom: "x" top: "loss" }
"""


def test_relu_top_rewritten_through_a_view_keeps_its_mask():
    # Power works in place on a view (Flatten) of ReLU's top: the top's memory changes sign before
    # backward, so ReLU must not read it there.
    net = Net(parse_text(REWRITTEN, caffe_pb2.NetParameter()))
    relu = net.layer_by_name("relu")
    assert relu.top_data_kept is False
    x = torch.tensor([[1.0, -2, 3, -4, 0.5, -0.5], [-1, 2, -3, 4, -0.5, 0.5]])
    net.blobs["x"].data.copy_(x)
    net.forward()
    net.backward()
    xa = x.clone().requires_grad_()
    flat = -torch.relu(xa)
    loss = ((flat - xa.detach()) ** 2).sum() / 2 / 2
    loss.backward()
    # x's diff: ReLU's part (through flat) plus EuclideanLoss's direct part on its second bottom.
    direct = -(flat.detach() - x) / 2
    torch.testing.assert_close(net.blobs["x"].diff, xa.grad + direct)


def test_relu_in_place_before_a_reader_reads_its_top():
    net = Net(parse_text(BLOCK % dict(bn="", scale_top="conv"), caffe_pb2.NetParameter()))
    assert net.layer_by_name("relu").top_data_kept is True
    assert net.layer_by_name("bn").top_data_kept is False       # Scale and ReLU rewrite it in place
    net.forward()
    assert net.layer_by_name("relu").positive is None          # no mask kept
