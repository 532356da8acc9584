"""Flatten, Reshape, Concat, Slice, Tile: shapes, values, gradients, errors, golden Caffe data."""
import pytest
import torch

from brewnet.core.blob import Blob
from brewnet.core.gradient_check import GradientChecker
from brewnet.errors import LayerError
from tests.layers.golden_case import golden_cases, run_golden_case
from tests.layers.helpers import blob, make_layer


def arange(*shape):
    return blob(torch.arange(float(torch.Size(shape).numel())).reshape(shape))


def setup_forward(text, bottom, ntop=1):
    layer, top = make_layer(text), [Blob(name=f"t{i}") for i in range(ntop)]
    layer.setup(bottom, top)
    layer.Forward(bottom, top)
    return layer, top


def checker():
    return GradientChecker(stepsize=1e-3, threshold=1e-6)


# --- Flatten ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("params,shape", [
    ("", (2, 60)),
    ("flatten_param { axis: 2 }", (2, 3, 20)),
    ("flatten_param { axis: 0 end_axis: 1 }", (6, 4, 5)),
    ("flatten_param { axis: -3 end_axis: -2 }", (2, 12, 5)),
    ("flatten_param { axis: 3 }", (2, 3, 4, 5)),
])
def test_flatten_shapes_and_values(params, shape):
    x = arange(2, 3, 4, 5)
    layer, (top,) = setup_forward(f'type: "Flatten" {params}', [x])
    assert top.shape == shape
    assert torch.equal(top.data.reshape(-1), x.data.reshape(-1))
    assert top.data.data_ptr() == x.data.data_ptr()        # a view, no copy


def test_flatten_backward_and_in_place_refused(float64):
    x = blob(torch.randn(1, 3, 5))
    layer, (top,) = setup_forward('type: "Flatten"', [x])
    top.diff.copy_(torch.arange(15.0).reshape(1, 15))
    layer.Backward([top], [True], [x])
    assert torch.equal(x.diff, torch.arange(15.0).reshape(1, 3, 5).to(x.diff.dtype))
    checker().check_gradient(make_layer('type: "Flatten"'), [x], [Blob()])
    with pytest.raises(LayerError, match="in place"):
        make_layer('type: "Flatten"').setup([x], [x])


def test_flatten_follows_a_replaced_bottom_tensor():
    x = arange(2, 3)
    layer, (top,) = setup_forward('type: "Flatten" flatten_param { axis: 0 }', [x])
    x.data = torch.ones(2, 3)                                  # an upstream layer hands over a new tensor
    layer.Forward([x], [top])
    assert torch.equal(top.data, torch.ones(6))


# --- Reshape ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("params,shape", [
    ("shape { dim: 0 dim: -1 }", (2, 60)),
    ("shape { dim: 0 dim: 2 dim: -1 dim: 5 }", (2, 2, 6, 5)),
    ("shape { dim: -1 }", (120,)),
    ("shape { dim: 0 dim: 0 dim: 0 dim: 0 }", (2, 3, 4, 5)),
    ("shape { dim: 4 dim: 30 }", (4, 30)),
    ("axis: 1 num_axes: 2 shape { dim: -1 }", (2, 12, 5)),
    ("axis: -1 shape { dim: 1 }", (2, 3, 4, 5, 1)),              # insert a trailing axis
    ("axis: 0 num_axes: 0 shape { dim: 1 }", (1, 2, 3, 4, 5)),   # insert a leading axis
    ("axis: 2 num_axes: 1 shape { dim: 2 dim: 2 }", (2, 3, 2, 2, 5)),
    ("axis: 1 num_axes: -1 shape { dim: 0 dim: -1 }", (2, 3, 20)),
])
def test_reshape_shapes(params, shape):
    x = arange(2, 3, 4, 5)
    layer, (top,) = setup_forward(f'type: "Reshape" reshape_param {{ {params} }}', [x])
    assert top.shape == shape
    assert torch.equal(top.data.reshape(-1), x.data.reshape(-1))


@pytest.mark.parametrize("params,match", [
    ("shape { dim: -1 dim: -1 }", "at most one -1"),
    ("shape { dim: 7 dim: -1 }", "cannot infer"),
    ("shape { dim: 7 dim: 3 }", "count must match"),
    ("axis: 4 shape { dim: 0 }", "no axis 4 to copy"),
    ("axis: 5 shape { dim: 1 }", "axis"),
    ("axis: 2 num_axes: 3 shape { dim: 1 }", "axis \\+ num_axes"),
    ("num_axes: -2 shape { dim: 1 }", "num_axes"),
])
def test_reshape_errors_name_the_layer(params, match):
    with pytest.raises(LayerError, match=match) as info:
        make_layer(f'type: "Reshape" reshape_param {{ {params} }}').setup([arange(2, 3, 4, 5)], [Blob()])
    assert "layer 'L' (type Reshape)" in str(info.value)


def test_reshape_gradient(float64):
    x = blob(torch.randn(1, 3, 5))
    checker().check_gradient(make_layer('type: "Reshape" reshape_param { shape { dim: 5 dim: -1 } }'), [x], [Blob()])


# --- Concat ----------------------------------------------------------------------------------------------

def test_concat_values_and_backward():
    a, b = arange(2, 1, 2), blob(torch.full((2, 2, 2), -1.0))
    layer, (top,) = setup_forward('type: "Concat"', [a, b])
    assert torch.equal(top.data, torch.tensor([[[0., 1.], [-1, -1], [-1, -1]], [[2, 3], [-1, -1], [-1, -1]]]))
    top.diff.copy_(torch.arange(12.0).reshape(2, 3, 2))
    layer.Backward([top], [True, False], [a, b])
    assert torch.equal(a.diff, torch.tensor([[[0., 1.]], [[6, 7]]]))
    assert torch.equal(b.diff, torch.zeros(2, 2, 2))            # propagate_down False: untouched


@pytest.mark.parametrize("params,shape", [
    ("concat_param { axis: 0 }", (5, 3, 2)),
    ("concat_param { concat_dim: 0 }", (5, 3, 2)),
    ("concat_param { axis: -3 }", (5, 3, 2)),
])
def test_concat_axis_and_legacy_concat_dim(params, shape):
    a, b = arange(2, 3, 2), arange(3, 3, 2)
    _, (top,) = setup_forward(f'type: "Concat" {params}', [a, b])
    assert top.shape == shape
    assert torch.equal(top.data, torch.cat([a.data, b.data], 0))


@pytest.mark.parametrize("shapes,params,match", [
    (((2, 3, 4), (2, 3, 5)), "", "concat axis 1"),
    (((2, 3, 4), (2, 3)), "", "same number of axes"),
    (((2, 3), (2, 3)), "concat_param { axis: 1 concat_dim: 1 }", "either axis or concat_dim"),
    (((2, 3), (2, 3)), "concat_param { concat_dim: 2 }", "concat_dim < 2"),
])
def test_concat_errors(shapes, params, match):
    bottoms = [arange(*s) for s in shapes]
    with pytest.raises(LayerError, match=match) as info:
        make_layer(f'type: "Concat" {params}').setup(bottoms, [Blob()])
    assert "layer 'L'" in str(info.value)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_concat_gradient(float64, axis):
    bottoms = [blob(torch.randn(1, 3, 5)), blob(torch.randn(1, 3, 5))]
    checker().check_gradient(make_layer(f'type: "Concat" concat_param {{ axis: {axis} }}'), bottoms, [Blob()])


# --- Slice -----------------------------------------------------------------------------------------------

def test_slice_points_and_backward():
    x = arange(2, 5)
    layer, top = setup_forward('type: "Slice" slice_param { slice_point: 1 slice_point: 4 }', [x], 3)
    assert [t.shape for t in top] == [(2, 1), (2, 3), (2, 1)]
    assert torch.equal(top[1].data, torch.tensor([[1., 2, 3], [6, 7, 8]]))
    for i, t in enumerate(top):
        t.diff.fill_(i + 1)
    layer.Backward(top, [True], [x])
    assert torch.equal(x.diff, torch.tensor([[1., 2, 2, 2, 3]] * 2))


@pytest.mark.parametrize("params", ["slice_param { axis: 0 }", "slice_param { slice_dim: 0 }",
                                    "slice_param { axis: -2 slice_point: 2 }"])
def test_slice_even_split_and_legacy_slice_dim(params):
    x = arange(4, 3)
    _, top = setup_forward(f'type: "Slice" {params}', [x], 2)
    assert torch.equal(top[0].data, x.data[:2]) and torch.equal(top[1].data, x.data[2:])


@pytest.mark.parametrize("params,ntop,match", [
    ("slice_param { slice_point: 2 }", 3, "2 slice_point for 3 tops"),
    ("slice_param { slice_point: 3 slice_point: 2 }", 3, "strictly increasing"),
    ("slice_param { slice_point: 5 }", 2, "strictly increasing"),
    ("", 2, "divisible"),
    ("slice_param { axis: 1 slice_dim: 1 }", 1, "either axis or slice_dim"),
])
def test_slice_errors(params, ntop, match):
    with pytest.raises(LayerError, match=match):
        make_layer(f'type: "Slice" {params}').setup([arange(2, 5)], [Blob() for _ in range(ntop)])


def test_slice_gradient(float64):
    x = blob(torch.randn(1, 5, 3))
    checker().check_gradient(make_layer('type: "Slice" slice_param { slice_point: 2 }'), [x], [Blob(), Blob()])


# --- Tile ------------------------------------------------------------------------------------------------

def test_tile_values_and_backward():
    x = arange(2, 2)
    layer, (top,) = setup_forward('type: "Tile" tile_param { tiles: 3 }', [x])
    assert torch.equal(top.data, torch.tensor([[0., 1, 0, 1, 0, 1], [2, 3, 2, 3, 2, 3]]))
    top.diff.copy_(torch.arange(12.0).reshape(2, 6))
    layer.Backward([top], [True], [x])
    assert torch.equal(x.diff, torch.tensor([[0. + 2 + 4, 1 + 3 + 5], [6 + 8 + 10, 7 + 9 + 11]]))
    _, (top0,) = setup_forward('type: "Tile" tile_param { axis: 0 tiles: 2 }', [x])
    assert torch.equal(top0.data, torch.tensor([[0., 1], [2, 3], [0, 1], [2, 3]]))


def test_tile_errors_and_gradient(float64):
    with pytest.raises(LayerError, match="tiles given"):
        make_layer('type: "Tile"').setup([arange(2, 2)], [Blob()])
    with pytest.raises(LayerError, match="tiles > 0"):
        make_layer('type: "Tile" tile_param { tiles: 0 }').setup([arange(2, 2)], [Blob()])
    x = blob(torch.randn(1, 3, 5))
    checker().check_gradient(make_layer('type: "Tile" tile_param { axis: 1 tiles: 3 }'), [x], [Blob()])


@pytest.mark.parametrize("name", golden_cases("Flatten", "Reshape", "Concat", "Slice", "Tile"))
def test_golden(golden, name):
    run_golden_case(golden / "layers", name)
