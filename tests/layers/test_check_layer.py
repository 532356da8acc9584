"""check_layer (tests/layers/helpers.py) catches each fault it is there for: a layer written right passes, and
each broken variant fails on the check meant for it, with a message naming it."""
import pytest
import torch

from brewnet.core.blob import Blob
from brewnet.core.gradient_check import GradientCheckError
from brewnet.layers.neuron import NeuronLayer
from tests.layers.helpers import check_layer

X = torch.tensor([[-1.5, -0.5, 0.25, 2.0], [0.75, -2.0, 1.0, -0.3]])


class Square(NeuronLayer):
    """y = w * x^2 with a learned scalar w; dx = 2 w x dy, dw += sum(x^2 dy).  Not registered: built through
    check_layer's layer_class."""
    type = "Square"
    needs_input = True

    def layer_setup(self, bottom, top):
        self.blobs = [Blob((1,), dtype=bottom[0].data.dtype)]
        self.blobs[0].data.fill_(0.5)

    def forward(self, bottom, top):
        torch.mul(bottom[0].data.square(), self.blobs[0].data, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        x, dy, w = self.input(bottom), top[0].diff, self.blobs[0].data
        self.blobs[0].diff.add_((x.square() * dy).sum().reshape(1))
        if propagate_down[0]:
            torch.mul(x, dy * 2 * w, out=bottom[0].diff)


class WrongGradient(Square):
    def backward(self, top, propagate_down, bottom):
        super().backward(top, propagate_down, bottom)
        bottom[0].diff.mul_(1.01)


class OverwritesParamDiff(Square):
    def backward(self, top, propagate_down, bottom):
        self.blobs[0].diff.zero_()
        super().backward(top, propagate_down, bottom)


class ForgetsItsInput(Square):
    needs_input = False                     # in place, backward then reads y where it needs x


class ReadsAHostValue(Square):
    def forward(self, bottom, top):
        if float(bottom[0].data.abs().max()) > 1e6:    # a host-side check that the recording must skip
            raise ValueError("too large")
        super().forward(bottom, top)


def square(x, p):
    return p[0] * x * x


def check(cls, **options):
    return check_layer('type: "Square"', [X], [X.shape], layer_class=cls, **options)


def test_a_correct_layer_passes_every_check():
    layer = check(Square, oracle=square, in_place=True)
    assert layer.blobs[0].data.item() == 0.5 and layer.top_data_kept is False


def test_a_wrong_backward_fails_the_gradient_check():
    with pytest.raises(GradientCheckError, match=r"layer 'L' \(Square\), objective sum of squares: "
                                                 r"bottom 0\[0\]: computed -1\.70437, estimated -1\.6875;"):
        check(WrongGradient)


def test_a_wrong_oracle_fails_with_the_tolerance_in_the_message():
    with pytest.raises(AssertionError, match=r"Square 'L': top 0 against the oracle differs \(atol = rtol = "
                                             r"1e-06\) in 8 of 8 elements"):
        check(Square, oracle=lambda x, p: 1.001 * square(x, p))


def test_overwritten_parameter_diffs_fail_the_accumulation_check():
    with pytest.raises(AssertionError, match=r"param 0 diff after a second Backward \(accumulated\) differs"):
        check(OverwritesParamDiff, oracle=square)


def test_a_layer_wrong_in_place_fails_the_in_place_check():
    check(ForgetsItsInput, oracle=square)                   # right when top and bottom differ
    with pytest.raises(AssertionError, match=r"Square 'L' in place: bottom 0 diff differs"):
        check(ForgetsItsInput, in_place=True)


def test_a_host_sync_fails_the_recording_check():
    with pytest.raises(AssertionError, match=r"Square 'L' waits for the device when recorded: "
                                             r"\['aten._local_scalar_dense \(core/layer.py:\d+\)'\]"):
        check(ReadsAHostValue)


def test_wrong_top_shapes_are_named():
    with pytest.raises(AssertionError, match=r"Square 'L': top shapes \[\(2, 4\)\], expected \[\(4, 2\)\]"):
        check_layer('type: "Square"', [X], [(4, 2)], layer_class=Square)
