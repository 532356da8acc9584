import math

import pytest
import torch

from brewnet.core.blob import Blob
from brewnet.core.filler import fill
from brewnet.errors import BrewnetError
from brewnet.proto import caffe_pb2


def filler(**kw):
    return caffe_pb2.FillerParameter(**kw)


def big():
    return Blob((200, 30, 3, 3))   # fan_in 270, fan_out 200*9 = 1800


def test_constant_and_uniform():
    b = fill(filler(type="constant", value=2.5), Blob((3, 4)))
    assert torch.all(b.data == 2.5)
    b = fill(filler(type="uniform", min=-0.5, max=1.5), big())
    assert float(b.data.min()) >= -0.5 and float(b.data.max()) <= 1.5
    assert float(b.data.mean()) == pytest.approx(0.5, abs=0.01)


def test_gaussian_and_sparse_gaussian():
    b = fill(filler(type="gaussian", mean=1.0, std=0.2), big())
    assert float(b.data.mean()) == pytest.approx(1.0, abs=0.01)
    assert float(b.data.std()) == pytest.approx(0.2, rel=0.02)
    # sparse=20 of 200 outputs: each weight kept with probability 0.1
    b = fill(filler(type="gaussian", std=1.0, sparse=20), big())
    assert float((b.data != 0).float().mean()) == pytest.approx(0.1, abs=0.01)


@pytest.mark.parametrize("norm,n", [(0, 270.0), (1, 1800.0), (2, (270.0 + 1800.0) / 2)])
def test_xavier_and_msra_use_caffes_fans(norm, n):
    b = fill(filler(type="xavier", variance_norm=norm), big())
    bound = math.sqrt(3.0 / n)
    assert float(b.data.abs().max()) <= bound and float(b.data.abs().max()) > 0.95 * bound
    b = fill(filler(type="msra", variance_norm=norm), big())
    assert float(b.data.std()) == pytest.approx(math.sqrt(2.0 / n), rel=0.03)


def test_positive_unitball_rows_sum_to_one():
    b = fill(filler(type="positive_unitball"), Blob((5, 2, 3)))
    assert torch.allclose(b.data.view(5, -1).sum(1), torch.ones(5))
    assert float(b.data.min()) >= 0


def test_bilinear_kernel_values():
    b = fill(filler(type="bilinear"), Blob((2, 1, 4, 4)))
    # k=4 (upsampling factor 2): f=2, c=0.75; profile = 1 - |x/2 - 0.75| = [0.25, 0.75, 0.75, 0.25]
    p = torch.tensor([0.25, 0.75, 0.75, 0.25])
    assert torch.allclose(b.data[1, 0], p[:, None] * p[None, :])
    # k=5 (factor 3): f=3, c=2/3; profile = [1/3, 2/3, 1, 2/3, 1/3]
    b5 = fill(filler(type="bilinear"), Blob((1, 1, 5, 5)))
    q = torch.tensor([1.0, 2.0, 3.0, 2.0, 1.0]) / 3
    assert torch.allclose(b5.data[0, 0], q[:, None] * q[None, :])


def test_unknown_filler_is_a_clear_error():
    with pytest.raises(BrewnetError, match="unknown filler type 'xavir'"):
        fill(filler(type="xavir"), Blob((2, 2)))


@pytest.mark.parametrize("kind", ["gaussian", "uniform", "xavier", "msra"])
def test_random_fillers_draw_from_the_host_generator_on_any_device(kind):
    # Caffe fills the CPU copy in GPU mode too, so one random_seed gives the same weights on both devices.
    # A blob on another device (here "meta", which holds no values) advances the host generator exactly as
    # the same blob on the CPU does.
    param = caffe_pb2.FillerParameter(type=kind)
    states = []
    for device in ("cpu", "meta"):
        torch.manual_seed(3)
        fill(param, Blob((4, 3, 2, 2), dtype=torch.float32, device=torch.device(device)))
        states.append(torch.get_rng_state())
    assert torch.equal(states[0], states[1])
    torch.manual_seed(3)
    assert not torch.equal(torch.get_rng_state(), states[0])      # the fill did draw
