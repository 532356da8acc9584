import pytest
import torch

from brewnet.models import densenet
from brewnet.models.common import ModelSpecError, parameter_count

from .helpers import build


def densenet_formula(depth, k, c0, c, K, compression=1.0):
    """Learned values of DenseNet-depth, block by block (the module docstring's formula)."""
    layers = (depth - 4) // 3
    total, m = 9 * c * c0, c0
    for b in (1, 2, 3):
        total += (2 + 9 * k) * (layers * m + k * layers * (layers - 1) // 2)
        m += layers * k
        if b < 3:
            out = int(m * compression)
            total += 2 * m + m * out
            m = out
    return total + 2 * m + m * K + K


@pytest.mark.parametrize("depth,growth,first,compression", [(7, 4, None, 1.0), (10, 6, 16, 1.0),
                                                            (13, 12, None, 0.5), (40, 12, 16, 1.0)])
def test_parameter_count_matches_the_formula(depth, growth, first, compression):
    param = densenet.densenet(depth, growth=growth, first_channels=first, compression=compression,
                              input_shape=(3, 8, 8), batch_size=1)
    assert parameter_count(build(param)) == densenet_formula(depth, growth, first or 2 * growth, 3, 10,
                                                             compression)


def test_densenet40_size_and_channel_growth():
    param = densenet.densenet(40, growth=12, first_channels=16, input_shape=(3, 32, 32), batch_size=1)
    assert parameter_count(build(param)) == 1019722      # "1.0M" in Huang et al.'s table 2
    net = build(densenet.densenet(10, growth=5, input_shape=(1, 28, 28), batch_size=2))
    net.blobs["data"].data.copy_(torch.randn(2, 1, 28, 28))
    net.forward()
    assert net.blobs["block1_2_concat"].shape == (2, 10 + 2 * 5, 28, 28)
    assert net.blobs["trans1_pool"].shape == (2, 20, 14, 14)
    assert net.blobs["block3_2_concat"].shape == (2, 40, 7, 7)
    types = [layer.type for layer in param.layer]
    assert types.count("Concat") == 36 and types.count("Pooling") == 3


def test_dropout_and_bad_depth():
    param = densenet.densenet(7, growth=2, dropout=0.2, input_shape=(1, 8, 8), batch_size=1)
    drops = [layer for layer in param.layer if layer.type == "Dropout"]
    assert len(drops) == 3 + 2 and drops[0].dropout_param.dropout_ratio == pytest.approx(0.2)
    with pytest.raises(ModelSpecError, match="3L \\+ 4 .* got 8"):
        densenet.densenet(8, input_shape=(1, 8, 8))
