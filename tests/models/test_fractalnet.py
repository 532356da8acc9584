import torch

import pytest

from brewnet.models import fractalnet
from brewnet.models.common import ModelSpecError, parameter_count

from .helpers import build


def fractal_formula(columns, widths, c, K):
    total = 0
    for width in widths:
        total += columns * (9 * c * width + 2 * width) + (2 ** columns - 1 - columns) * (9 * width ** 2 + 2 * width)
        c = width
    return total + c * K + K


@pytest.mark.parametrize("columns,widths", [(1, (8,)), (2, (8, 16)), (3, (16, 32, 64)), (4, (4, 8))])
def test_parameter_count_and_layout_match_the_expansion(columns, widths):
    param = fractalnet.fractalnet(columns, widths, input_shape=(3, 8, 8), batch_size=1)
    assert parameter_count(build(param)) == fractal_formula(columns, widths, 3, 10)
    types = [layer.type for layer in param.layer]
    assert types.count("Convolution") == len(widths) * (2 ** columns - 1)
    # joins every two convolutions of the deepest column, where the next shallower column meets it
    assert types.count("DropPath") == (len(widths) * 2 ** (columns - 2) if columns > 1 else 0)
    convs = [layer.name for layer in param.layer if layer.type == "Convolution" and layer.name.startswith("b1_")]
    for j in range(columns):        # column j is 2^j convolutions deep
        assert sum(name.startswith(f"b1_c{j}_") for name in convs) == 2 ** j


def test_joins_name_their_columns_and_share_the_seed():
    param = fractalnet.fractalnet(3, (8,), input_shape=(1, 8, 8), batch_size=1, seed=5, drop_ratio=0.2)
    joins = [layer for layer in param.layer if layer.type == "DropPath"]
    assert [list(j.drop_path_param.column) for j in joins] == [[1, 2], [0, 1, 2]]
    assert [list(j.bottom) for j in joins] == [["b1_c1_1", "b1_c2_2"], ["b1_c0_1", "b1_c1_2", "b1_c2_4"]]
    assert {(j.drop_path_param.num_columns, j.drop_path_param.seed) for j in joins} == {(3, 5)}


def test_global_drop_path_trains_one_column_of_every_join():
    param = fractalnet.fractalnet(3, (4, 4), input_shape=(1, 8, 8), batch_size=2, global_ratio=1.0, seed=11)
    net = build(param)
    net.blobs["data"].data.copy_(torch.randn(2, 1, 8, 8))
    joins = [layer for layer in net.layers if layer.type == "DropPath"]
    for _ in range(6):
        net.forward()
        kept_columns = {tuple(sorted(j.columns[i] for i in j.kept)) for j in joins}
        assert len(kept_columns - {()}) == 1 and len(next(iter(kept_columns - {()}))) == 1


def test_single_column_test_net_and_errors():
    net = build(fractalnet.fractalnet(3, (4,), input_shape=(1, 8, 8), batch_size=1, test_column=2), "TEST")
    net.blobs["data"].data.copy_(torch.randn(1, 1, 8, 8))
    net.forward()
    assert net.blobs["b1_join2"].data.equal(net.blobs["b1_c2_4"].data)   # the deepest column only
    assert net.blobs["b1_join1"].data.equal(net.blobs["b1_c2_2"].data)
    with pytest.raises(ModelSpecError, match="test_column 3 of a FractalNet with 3 columns"):
        fractalnet.fractalnet(3, input_shape=(1, 8, 8), test_column=3)
