import pytest
import torch

from brewnet.models import dsn
from brewnet.models.common import ModelSpecError, parameter_count

from .helpers import build


def dsn_formula(widths, m, c, K, batch_norm, deep):
    b = 2 if batch_norm else 1
    total = 0
    for w in widths:
        total += 9 * c * w + b * w + (m - 1) * (9 * w * w + b * w)
        c = w
    total += widths[-1] * K + K
    if deep:
        total += sum(w * K + K for w in widths[:-1])
    return total


@pytest.mark.parametrize("widths,m,bn", [((8,), 1, False), ((8, 16), 2, True), ((16, 32, 64), 2, False),
                                         ((4, 8, 8, 16), 3, True)])
@pytest.mark.parametrize("deep", [True, False])
def test_parameter_count_matches_the_formula(widths, m, bn, deep):
    param = dsn.dsn(widths, m, batch_norm=bn, deep_supervision=deep, input_shape=(1, 16, 16), batch_size=1)
    assert parameter_count(build(param)) == dsn_formula(widths, m, 1, 10, bn, deep)


def test_companion_losses_carry_their_weight():
    param = dsn.dsn((4, 8, 8), 1, aux_weight=0.25, input_shape=(1, 16, 16), batch_size=2)
    net = build(param)
    net.blobs["data"].data.copy_(torch.randn(2, 1, 16, 16))
    net.blobs["label"].data.copy_(torch.tensor([1.0, 3.0]))
    total = net.forward()
    parts = [float(net.blobs[name].data) for name in ("loss", "aux1_loss", "aux2_loss")]
    assert total == pytest.approx(parts[0] + 0.25 * (parts[1] + parts[2]), rel=1e-6)
    assert net.blobs["aux1_score"].shape == (2, 10)
    deploy = dsn.dsn((4, 8), input_shape=(1, 16, 16), batch_size=1, label=False)
    assert not [layer for layer in deploy.layer if layer.name.startswith("aux")]
    with pytest.raises(ModelSpecError, match="convs_per_stage 0"):
        dsn.dsn((4,), 0, input_shape=(1, 8, 8))
