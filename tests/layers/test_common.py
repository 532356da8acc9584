"""Split, Silence, InnerProduct, Eltwise, Reduction, ArgMax, Embed, BatchReindex, Filter, Parameter."""
import pytest
import torch

from brewnet.core.blob import Blob
from brewnet.core.gradient_check import GradientChecker
from brewnet.core.registry import create_layer
from brewnet.errors import LayerError
from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text
from tests.layers.golden_case import golden_cases, run_golden_case
from tests.layers.helpers import blob, check_layer, make_layer


def setup_forward(text, bottom, ntop=1):
    layer, top = make_layer(text), [Blob(name=f"t{i}") for i in range(ntop)]
    layer.setup(bottom, top)
    layer.Forward(bottom, top)
    return layer, top


def tensor(values):
    return torch.as_tensor(values, dtype=torch.get_default_dtype())


def checker():
    return GradientChecker(stepsize=1e-3, threshold=1e-6)


def randn(*shape):
    return blob(torch.randn(*shape))


# --- Split / Silence --------------------------------------------------------------------------------------

def test_split_shares_data_and_sums_diffs():
    x = blob([[1.0, 2.0], [3.0, 4.0]])
    layer, top = setup_forward('type: "Split"', [x], 3)
    for t in top:
        assert t.data.data_ptr() == x.data.data_ptr() and t.shape == (2, 2)
    for i, t in enumerate(top):
        t.diff.fill_(10.0 ** i)
    layer.Backward(top, [True], [x])
    assert torch.equal(x.diff, torch.full((2, 2), 111.0))
    with pytest.raises(LayerError, match="in place"):
        make_layer('type: "Split"').setup([x], [Blob(), x])


def test_split_gradient(float64):
    checker().check_gradient(make_layer('type: "Split"'), [randn(1, 3, 5)], [Blob(), Blob()])


def test_silence_zeros_requested_diffs():
    a, b = blob([1.0, 2.0]), blob([3.0])
    layer, _ = setup_forward('type: "Silence"', [a, b], 0)
    a.diff.fill_(5.0)
    b.diff.fill_(5.0)
    layer.Backward([], [True, False], [a, b])
    assert torch.equal(a.diff, torch.zeros(2)) and torch.equal(b.diff, torch.full((1,), 5.0))
    with pytest.raises(LayerError, match="number of top blobs == 0"):
        make_layer('type: "Silence"').setup([a], [Blob()])


# --- InnerProduct -----------------------------------------------------------------------------------------

IP = 'type: "InnerProduct" inner_product_param { num_output: 2 %s weight_filler { type: "gaussian" } ' \
     'bias_filler { type: "gaussian" } }'


def test_inner_product_forward_values():
    x = blob([[1.0, 2.0, 3.0], [0.0, -1.0, 1.0]])
    layer, (top,) = setup_forward(IP % "", [x])
    assert [b.shape for b in layer.blobs] == [(2, 3), (2,)]
    layer.blobs[0].data.copy_(tensor([[1, 0, 1], [0.5, 0.5, 0]]))
    layer.blobs[1].data.copy_(tensor([10, -10]))
    layer.Forward([x], [top])
    assert torch.allclose(top.data, tensor([[14, -8.5], [11, -10.5]]))

    t_layer, (t_top,) = setup_forward(IP % "transpose: true", [x])
    assert t_layer.blobs[0].shape == (3, 2)
    t_layer.blobs[0].data.copy_(tensor([[1, 0, 1], [0.5, 0.5, 0]]).t())
    t_layer.blobs[1].data.copy_(tensor([10, -10]))
    t_layer.Forward([x], [t_top])
    assert torch.allclose(t_top.data, top.data)


def test_inner_product_axis_and_shapes():
    layer, (top,) = setup_forward(IP % "axis: 2", [randn(2, 3, 4, 5)])
    assert top.shape == (2, 3, 2) and layer.blobs[0].shape == (2, 20)
    layer, (top,) = setup_forward(IP % "bias_term: false", [randn(2, 3, 4)])
    assert top.shape == (2, 2) and len(layer.blobs) == 1
    with pytest.raises(LayerError, match="incompatible"):
        layer.Forward([randn(2, 3, 5)], [top])


def test_inner_product_keeps_loaded_weights():
    param = parse_text('name: "L" ' + IP % "", caffe_pb2.LayerParameter())
    for shape, value in (((2, 3), 0.5), ((2,), 1.0)):
        b = Blob(shape)
        b.data.fill_(value)
        param.blobs.add().CopyFrom(b.to_proto())
    layer = create_layer(param)
    top = Blob()
    layer.setup([blob([[1.0, 1.0, 1.0]])], [top])
    layer.Forward([blob([[1.0, 1.0, 1.0]])], [top])
    assert torch.allclose(top.data, tensor([[2.5, 2.5]]))


def inner_product(axis=1, transpose=False, bias=True):
    """The torch oracle of InnerProduct: y = x (flattened from `axis`) W^T + b."""
    def oracle(x, p):
        w = p[0].t() if transpose else p[0]
        return torch.nn.functional.linear(x.flatten(axis), w, p[1] if bias else None)
    return oracle


@pytest.mark.parametrize("params,top_shape,oracle", [
    ("", (3, 2), inner_product()),
    ("transpose: true", (3, 2), inner_product(transpose=True)),
    ("bias_term: false", (3, 2), inner_product(bias=False)),
    ("axis: 2", (3, 2, 2), inner_product(axis=2)),
    ("axis: -1", (3, 2, 2), inner_product(axis=2)),
])
def test_inner_product_gradient_autograd_accumulation_and_recording(params, top_shape, oracle):
    # check_layer also runs Backward twice: the weight and bias diffs accumulate to twice autograd's.
    check_layer(IP % params, [torch.randn(3, 2, 5, dtype=torch.float64)], [top_shape], oracle=oracle, tol=1e-9)


# --- Eltwise ----------------------------------------------------------------------------------------------

def test_eltwise_sum_prod_max_forward_backward():
    a, b, c = blob([1.0, -2.0, 3.0]), blob([4.0, 5.0, 3.0]), blob([2.0, 2.0, 3.0])
    layer, (top,) = setup_forward('type: "Eltwise" eltwise_param { coeff: 1 coeff: -0.5 coeff: 2 }', [a, b, c])
    assert torch.equal(top.data, tensor([3.0, -0.5, 7.5]))
    top.diff.copy_(tensor([1.0, 2.0, 4.0]))
    layer.Backward([top], [True, True, False], [a, b, c])
    assert torch.equal(b.diff, tensor([-0.5, -1.0, -2.0]))

    layer, (top,) = setup_forward('type: "Eltwise" eltwise_param { operation: PROD }', [a, b, c])
    assert torch.equal(top.data, tensor([8.0, -20.0, 27.0]))
    top.diff.fill_(1.0)
    layer.Backward([top], [True, True, True], [a, b, c])
    assert torch.equal(a.diff, tensor([8.0, 10.0, 9.0]))

    layer, (top,) = setup_forward('type: "Eltwise" eltwise_param { operation: MAX }', [a, b, c])
    assert torch.equal(top.data, tensor([4.0, 5.0, 3.0]))
    top.diff.copy_(tensor([1.0, 2.0, 4.0]))
    layer.Backward([top], [True, True, True], [a, b, c])
    # ties: a == b at index 2 goes to b (Caffe's a > b test), c == max there keeps b
    assert torch.equal(a.diff, tensor([0.0, 0.0, 0.0]))
    assert torch.equal(b.diff, tensor([1.0, 2.0, 4.0]))
    assert torch.equal(c.diff, tensor([0.0, 0.0, 0.0]))


def test_eltwise_prod_with_a_zero_input_needs_stable_grad():
    a, b = blob([0.0, 2.0]), blob([3.0, 4.0])
    stable, (top,) = setup_forward('type: "Eltwise" eltwise_param { operation: PROD }', [a, b])
    top.diff.fill_(1.0)
    stable.Backward([top], [True, True], [a, b])
    assert torch.equal(a.diff, tensor([3.0, 4.0]))
    quick, (top,) = setup_forward('type: "Eltwise" eltwise_param { operation: PROD stable_prod_grad: false }',
                                  [a, b])
    top.diff.fill_(1.0)
    quick.Backward([top], [True, True], [a, b])
    assert torch.isnan(a.diff[0]) and a.diff[1] == 4.0          # y / x = 0 / 0, as in Caffe


def test_eltwise_sum_in_place_on_the_first_bottom():
    a, b = blob([1.0, 2.0]), blob([10.0, 20.0])
    layer = make_layer('type: "Eltwise" eltwise_param { coeff: 2 coeff: 3 }')
    layer.setup([a, b], [a])
    layer.Forward([a, b], [a])
    assert torch.equal(a.data, tensor([32.0, 64.0]))
    a.diff.copy_(tensor([1.0, -1.0]))
    layer.Backward([a], [True, True], [a, b])
    assert torch.equal(b.diff, tensor([3.0, -3.0])) and torch.equal(a.diff, tensor([2.0, -2.0]))


@pytest.mark.parametrize("params", ["", "coeff: 0.5 coeff: -2 coeff: 3", "operation: PROD",
                                    "operation: PROD stable_prod_grad: false", "operation: MAX"])
def test_eltwise_gradient(float64, params):
    bottoms = [randn(1, 3, 5) for _ in range(3)]
    checker().check_gradient(make_layer(f'type: "Eltwise" eltwise_param {{ {params} }}'), bottoms, [Blob()])


@pytest.mark.parametrize("params,shapes,match", [
    ("", ((2, 3), (3, 2)), "same shape"),
    ("coeff: 1", ((2, 3), (2, 3)), "one coefficient per bottom"),
    ("operation: PROD coeff: 1 coeff: 1", ((2, 3), (2, 3)), "only takes coefficients for summation"),
    ("", ((2, 3),), "number of bottom blobs >= 2"),
])
def test_eltwise_errors(params, shapes, match):
    with pytest.raises(LayerError, match=match) as info:
        make_layer(f'type: "Eltwise" eltwise_param {{ {params} }}').setup([randn(*s) for s in shapes], [Blob()])
    assert "layer 'L' (type Eltwise)" in str(info.value)


# --- Reduction --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("params,expected", [
    ("", 2.0),
    ("operation: ASUM", 14.0),
    ("operation: SUMSQ", 46.0),
    ("operation: MEAN", 2.0 / 6),
    ("operation: SUM coeff: -2", -4.0),
    ("operation: MEAN coeff: 4", 8.0 / 6),
])
def test_reduction_all_axes(params, expected):
    x = blob([[1.0, -2.0], [3.0, 0.0], [4.0, -4.0]])      # axis 0: reduce everything to a scalar
    layer, (top,) = setup_forward(f'type: "Reduction" reduction_param {{ axis: 0 {params} }}', [x])
    assert top.shape == () and float(top.data) == pytest.approx(expected)


def test_reduction_axes_and_backward():
    x = blob([[1.0, -2.0, 0.0], [3.0, 1.0, -1.0]])
    layer, (top,) = setup_forward('type: "Reduction" reduction_param { operation: ASUM coeff: 2 }', [x])
    assert top.shape == () and float(top.data) == 16.0        # Caffe's default axis is 0: everything
    layer, (top,) = setup_forward('type: "Reduction" reduction_param { operation: ASUM coeff: 2 axis: 1 }', [x])
    assert torch.equal(top.data, tensor([6.0, 10.0]))
    top.diff.copy_(tensor([1.0, -1.0]))
    layer.Backward([top], [True], [x])
    assert torch.equal(x.diff, tensor([[2.0, -2.0, 0.0], [-2.0, -2.0, 2.0]]))
    layer, (top,) = setup_forward('type: "Reduction" reduction_param { operation: MEAN axis: -1 }', [x])
    top.diff.copy_(tensor([3.0, 6.0]))
    layer.Backward([top], [True], [x])
    assert torch.equal(x.diff, tensor([[1.0] * 3, [2.0] * 3]))


@pytest.mark.parametrize("op", ["SUM", "ASUM", "SUMSQ", "MEAN"])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_reduction_gradient(float64, op, axis):
    x = randn(1, 3, 5)
    x.data.add_(0.1 * torch.sign(x.data))                  # ASUM: stay off the kink at 0
    checker().check_gradient(make_layer(f'type: "Reduction" reduction_param {{ operation: {op} axis: {axis} '
                                        'coeff: 0.7 }'), [x], [Blob()])


# --- ArgMax -----------------------------------------------------------------------------------------------

def test_argmax_flattened_with_values_and_ties():
    x = blob([[1.0, 5.0, 3.0, 5.0], [0.0, -1.0, 2.0, 1.0]])
    _, (top,) = setup_forward('type: "ArgMax" argmax_param { top_k: 2 out_max_val: true }', [x])
    assert top.shape == (2, 2, 2)
    # the tie 5 == 5 ranks the larger index first
    assert torch.equal(top.data, tensor([[[3, 1], [5, 5]], [[2, 3], [2, 1]]]))
    _, (top,) = setup_forward('type: "ArgMax"', [x])
    assert top.shape == (2, 1, 1) and torch.equal(top.data.reshape(-1), tensor([3, 2]))
    _, (top,) = setup_forward('type: "ArgMax"', [randn(2, 3, 2, 2, 2)])
    assert top.shape == (2, 1, 1, 1, 1)


def test_argmax_along_axis():
    x = blob([[[1.0, 9.0], [7.0, 2.0], [3.0, 4.0]]])       # (1, 3, 2)
    _, (top,) = setup_forward('type: "ArgMax" argmax_param { axis: 1 top_k: 2 }', [x])
    assert top.shape == (1, 2, 2) and torch.equal(top.data, tensor([[[1, 0], [2, 2]]]))
    _, (top,) = setup_forward('type: "ArgMax" argmax_param { axis: -1 out_max_val: true }', [x])
    assert top.shape == (1, 3, 1) and torch.equal(top.data, tensor([[[9], [7], [4]]]))


def test_argmax_errors_and_no_backward():
    with pytest.raises(LayerError, match="top_k <= the flattened size"):
        make_layer('type: "ArgMax" argmax_param { top_k: 5 }').setup([randn(2, 4)], [Blob()])
    with pytest.raises(LayerError, match="top_k <= the dimension of axis 0"):
        make_layer('type: "ArgMax" argmax_param { axis: 0 top_k: 3 }').setup([randn(2, 4)], [Blob()])
    x = randn(2, 4)
    layer, (top,) = setup_forward('type: "ArgMax"', [x])
    with pytest.raises(LayerError, match="cannot backpropagate"):
        layer.Backward([top], [True], [x])


# --- Embed ------------------------------------------------------------------------------------------------

EMBED = 'type: "Embed" embed_param { input_dim: 4 num_output: 3 %s weight_filler { type: "uniform" } ' \
        'bias_filler { type: "uniform" } }'


def test_embed_lookup_and_parameter_gradient():
    idx = blob([[2.0, 0.0], [2.0, 3.0]])
    layer, (top,) = setup_forward(EMBED % "", [idx])
    w, b = layer.blobs[0].data, layer.blobs[1].data
    assert top.shape == (2, 2, 3)
    assert torch.allclose(top.data[0, 0], w[2] + b) and torch.allclose(top.data[1, 1], w[3] + b)
    top.diff.copy_(torch.arange(12.0).reshape(2, 2, 3))
    layer.Backward([top], [False], [idx])
    expected = torch.zeros(4, 3)
    expected[2] = tensor([0, 1, 2]) + tensor([6, 7, 8])        # index 2 used twice: summed
    expected[0], expected[3] = tensor([3, 4, 5]), tensor([9, 10, 11])
    assert torch.equal(layer.blobs[0].diff, expected)
    assert torch.equal(layer.blobs[1].diff, tensor([18, 22, 26]))
    with pytest.raises(LayerError, match="cannot backpropagate"):
        layer.Backward([top], [True], [idx])


def test_embed_errors_and_no_bias():
    layer, (top,) = setup_forward(EMBED % "bias_term: false", [blob([1.0])])
    assert len(layer.blobs) == 1 and torch.equal(top.data[0], layer.blobs[0].data[1])
    with pytest.raises(LayerError, match=r"indices in \[0, 4\).*Actual: 4"):
        layer.Forward([blob([4.0])], [top])
    with pytest.raises(LayerError, match="input_dim > 0"):
        make_layer('type: "Embed" embed_param { num_output: 3 }').setup([blob([1.0])], [Blob()])


def test_embed_gradient(float64):
    idx = blob([[1.0, 3.0, 1.0]])
    # check_bottom=1 names no bottom: only the parameters are checked (indices have no gradient)
    checker().check_gradient(make_layer(EMBED % ""), [idx], [Blob()], check_bottom=1)


# --- BatchReindex / Filter --------------------------------------------------------------------------------

def test_batch_reindex_forward_backward():
    x, idx = blob([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]), blob([2.0, 0.0, 2.0, 2.0], "idx")
    layer, (top,) = setup_forward('type: "BatchReindex"', [x, idx])
    assert torch.equal(top.data, tensor([[5, 6], [1, 2], [5, 6], [5, 6]]))
    top.diff.copy_(tensor([[1, 1], [2, 2], [3, 3], [4, 4]]))
    layer.Backward([top], [True, False], [x, idx])
    assert torch.equal(x.diff, tensor([[2, 2], [0, 0], [8, 8]]))
    with pytest.raises(LayerError, match="index bottom"):
        layer.Backward([top], [True, True], [x, idx])
    with pytest.raises(LayerError, match=r"in \[0, 3\).*Actual: 3"):
        layer.Forward([x, blob([3.0], "idx")], [top])
    with pytest.raises(LayerError, match="1-D index"):
        make_layer('type: "BatchReindex"').setup([x, blob([[0.0]])], [Blob()])


def test_batch_reindex_gradient(float64):
    checker().check_gradient(make_layer('type: "BatchReindex"'), [randn(3, 5), blob([2.0, 0.0, 2.0])],
                             [Blob()], check_bottom=0)


def test_filter_forward_backward():
    x, y = blob([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]), blob([7.0, 8.0, 9.0], "y")
    sel = blob([[1.0], [0.0], [1.0]], "sel")
    layer, top = make_layer('type: "Filter"'), [Blob(), Blob()]
    layer.setup([x, y, sel], top)
    assert top[0].shape == (3, 2)                              # setup: the full batch, as Caffe
    layer.Forward([x, y, sel], top)
    assert torch.equal(top[0].data, tensor([[1, 2], [5, 6]])) and torch.equal(top[1].data, tensor([7, 9]))
    top[0].diff.fill_(1.0)
    top[1].diff.copy_(tensor([5.0, 6.0]))
    layer.Backward(top, [True, True, False], [x, y, sel])
    assert torch.equal(x.diff, tensor([[1, 1], [0, 0], [1, 1]])) and torch.equal(y.diff, tensor([5, 0, 6]))
    with pytest.raises(LayerError, match="selector"):
        layer.Backward(top, [True, True, True], [x, y, sel])
    with pytest.raises(LayerError, match="one top per filtered bottom"):
        make_layer('type: "Filter"').setup([x, sel], [Blob(), Blob()])
    with pytest.raises(LayerError, match="selector dimensions"):
        make_layer('type: "Filter"').setup([x, blob([[1.0, 0.0]] * 3)], [Blob()])


def test_filter_gradient(float64):
    checker().check_gradient(make_layer('type: "Filter"'), [randn(3, 5), blob([[0.0], [1.0], [1.0]])],
                             [Blob()], check_bottom=0)


# --- Parameter --------------------------------------------------------------------------------------------

def test_parameter_top_shares_data_and_diff():
    layer, top = make_layer('type: "Parameter" parameter_param { shape { dim: 2 dim: 3 } }'), Blob()
    layer.setup([], [top])
    top.data.fill_(9.0)                                       # before the first Forward: the top's own memory,
    layer.Forward([], [top])                                  # then replaced by the parameter (as Caffe)
    p = layer.blobs[0]
    assert p.shape == (2, 3) and top.shape == (2, 3) and torch.equal(p.data, torch.zeros(2, 3))
    p.data.fill_(1.5)
    assert torch.equal(top.data, torch.full((2, 3), 1.5))
    top.diff.fill_(2.0)
    assert torch.equal(p.diff, torch.full((2, 3), 2.0))
    top.diff = torch.full((2, 3), 3.0)                         # a consumer hands over a fresh tensor
    layer.Backward([top], [], [])
    assert torch.equal(p.diff, torch.full((2, 3), 3.0))
    p.data = torch.full((2, 3), 4.0)                          # weights loaded as a new tensor
    layer.Forward([], [top])
    assert torch.equal(top.data, torch.full((2, 3), 4.0))


GOLDEN_TYPES = ("Split", "Silence", "InnerProduct", "Eltwise", "Reduction", "ArgMax", "Embed", "BatchReindex",
                "Filter", "Parameter")


@pytest.mark.parametrize("name", golden_cases(*GOLDEN_TYPES))
def test_golden(golden, name):
    run_golden_case(golden / "layers", name)
