"""The Python layer: a user module written to tmp_path and imported from sys.path, as pycaffe users do."""
import sys

import numpy as np
import pytest
import torch

from brewnet.core.blob import Blob
from brewnet.core.gradient_check import GradientChecker
from brewnet.core.registry import create_layer
from brewnet.errors import LayerError
from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text

USER_LAYERS = '''
import ast
import numpy as np
from brewnet.layers.python_layer import PythonLayerBase


class EuclideanLoss(PythonLayerBase):
    """Caffe's examples/pycaffe/layers/pyloss.py, scaled by param_str and by the top diff."""

    def setup(self, bottom, top):
        if len(bottom) != 2:
            raise Exception("Need two inputs to compute distance.")
        self.scale = ast.literal_eval(self.param_str or "{}").get("scale", 1.0)

    def reshape(self, bottom, top):
        if bottom[0].count != bottom[1].count:
            raise Exception("Inputs must have the same dimension.")
        self.diff = np.zeros_like(bottom[0].data)
        top[0].reshape(1)

    def forward(self, bottom, top):
        self.diff[...] = bottom[0].data - bottom[1].data
        top[0].data[...] = self.scale * np.sum(self.diff ** 2) / bottom[0].num / 2.0

    def backward(self, top, propagate_down, bottom):
        for i in range(2):
            if propagate_down[i]:
                sign = 1 if i == 0 else -1
                bottom[i].diff[...] = top[0].diff[0] * sign * self.scale * self.diff / bottom[i].num


class LearnedScale(PythonLayerBase):
    """y = x * w (w one value per channel, a parameter blob made with add_blob)."""

    def setup(self, bottom, top):
        self.w = self.blobs.add_blob(bottom[0].channels)
        self.w.data[...] = np.arange(1, bottom[0].channels + 1)

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data * self.blobs[0].data[None, :]

    def backward(self, top, propagate_down, bottom):
        self.blobs[0].diff[...] += (top[0].diff * bottom[0].data).sum(0)
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff * self.blobs[0].data[None, :]


class TimesTen(PythonLayerBase):
    """pycaffe's test layer."""

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = 10 * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = 10 * top[0].diff


class PhaseAndParam(PythonLayerBase):
    def setup(self, bottom, top):
        self.seen = (self.phase, self.param_str, self.type)

    def reshape(self, bottom, top):
        top[0].reshape(2)

    def forward(self, bottom, top):
        top[0].data[...] = [self.phase, len(self.param_str)]


class Broken(PythonLayerBase):
    def setup(self, bottom, top):
        raise RuntimeError("cannot set up: " + self.param_str)


class BrokenBackward(TimesTen):
    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = np.ones(7)
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """Write USER_LAYERS as module `my_user_layers` in tmp_path and put it on sys.path."""
    (tmp_path / "my_user_layers.py").write_text(USER_LAYERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_user_layers"
    sys.modules.pop("my_user_layers", None)


def python_layer(module, cls, extra="", name="py"):
    return create_layer(parse_text(f'name: "{name}" type: "Python" {extra} '
                                   f'python_param {{ module: "{module}" layer: "{cls}" }}',
                                   caffe_pb2.LayerParameter()))


def blob(values):
    b = Blob(values.shape)
    b.data = values.to(b.dtype)
    return b


def test_euclidean_forward_backward_and_loss_weight(user_module):
    layer = python_layer(user_module, "EuclideanLoss", 'loss_weight: 2 python_param { param_str: "{\'scale\': 3}" }')
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    bottom, top = [blob(a), blob(b)], [Blob()]
    layer.setup(bottom, top)
    assert layer.impl.scale == 3
    assert top[0].shape == (1,) and float(top[0].diff[0]) == 2.0      # the loss weight sits in the top diff
    loss = layer.Forward(bottom, top)
    expected = 3 * float(((a - b) ** 2).sum()) / 4 / 2
    assert float(top[0].data[0]) == pytest.approx(expected, rel=1e-5)
    assert loss == pytest.approx(2 * expected, rel=1e-5)
    layer.Backward(top, [True, True], bottom)
    torch.testing.assert_close(bottom[0].diff, 2 * 3 * (a - b) / 4)
    torch.testing.assert_close(bottom[1].diff, -2 * 3 * (a - b) / 4)


def test_euclidean_gradient(float64, user_module):
    layer = python_layer(user_module, "EuclideanLoss", 'python_param { param_str: "{\'scale\': 0.5}" }')
    bottom = [blob(torch.randn(3, 2, 2)), blob(torch.randn(3, 2, 2))]
    GradientChecker(stepsize=1e-3, threshold=1e-4).check_gradient(layer, bottom, [Blob()])


def test_add_blob_parameters_gradient_and_sharing(float64, user_module):
    layer = python_layer(user_module, "LearnedScale")
    bottom, top = [blob(torch.randn(2, 3))], [Blob()]
    layer.setup(bottom, top)
    assert [b.shape for b in layer.blobs] == [(3,)]           # the net sees the user's parameter
    torch.testing.assert_close(layer.blobs[0].data, torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    layer.Forward(bottom, top)
    torch.testing.assert_close(top[0].data, bottom[0].data * torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    GradientChecker(stepsize=1e-3, threshold=1e-4).check_gradient(layer, bottom, [Blob()])

    # The net shares parameters by replacing the layer's blob: the user's self.blobs follows.
    shared = Blob((3,))
    shared.data.fill_(5.0)
    layer.blobs[0] = shared
    layer.Forward(bottom, top)
    torch.testing.assert_close(top[0].data, 5 * bottom[0].data)


def test_chained_layers_share_memory(user_module):
    """pycaffe's test_python_layer: three x10 layers; numpy writes land in the torch tensors."""
    layers = [python_layer(user_module, "TimesTen", name=f"l{i}") for i in range(3)]
    blobs = [blob(torch.full((10, 9, 8), 8.0))] + [Blob() for _ in range(3)]
    for i, layer in enumerate(layers):
        layer.setup([blobs[i]], [blobs[i + 1]])
        layer.Forward([blobs[i]], [blobs[i + 1]])
    assert torch.all(blobs[3].data == 8000)
    blobs[3].diff.fill_(7.0)
    for i in reversed(range(3)):
        layers[i].Backward([blobs[i + 1]], [True], [blobs[i]])
    assert torch.all(blobs[0].diff == 7000)


def test_phase_param_str_and_type(user_module):
    param = parse_text('name: "p" type: "Python" phase: TEST '
                       'python_param { module: "my_user_layers" layer: "PhaseAndParam" param_str: "abc" '
                       'share_in_parallel: true }', caffe_pb2.LayerParameter())
    layer = create_layer(param)
    top = [Blob()]
    layer.setup([], top)
    assert layer.impl.seen == (caffe_pb2.TEST, "abc", "Python")
    layer.Forward([], top)
    assert top[0].data.tolist() == [caffe_pb2.TEST, 3]


def test_user_errors_keep_their_type_with_a_note(user_module):
    """The user's exception reaches the caller as itself (scripts catch their own types, as with Caffe);
    brewnet only adds a note naming the layer, the class and the hook."""
    layer = python_layer(user_module, "Broken", 'python_param { param_str: "no way" }', name="bad")
    with pytest.raises(RuntimeError, match="^cannot set up: no way") as info:
        layer.setup([blob(torch.zeros(2))], [Blob()])
    assert type(info.value) is RuntimeError
    assert info.value.__notes__ == ["brewnet: raised by my_user_layers.Broken.setup in layer 'bad' (type Python)"]

    layer = python_layer(user_module, "EuclideanLoss")
    with pytest.raises(Exception, match=r"^Inputs must have the same dimension\.") as info:
        layer.setup([blob(torch.zeros(2)), blob(torch.zeros(3))], [Blob()])
    assert type(info.value) is Exception
    assert info.value.__notes__ == ["brewnet: raised by my_user_layers.EuclideanLoss.reshape in layer 'py' "
                                    "(type Python)"]

    layer = python_layer(user_module, "BrokenBackward")
    bottom, top = [blob(torch.zeros(2, 3))], [Blob()]
    layer.setup(bottom, top)
    layer.Forward(bottom, top)
    with pytest.raises(ValueError) as info:
        layer.Backward(top, [True], bottom)
    assert type(info.value) is ValueError and "BrokenBackward.backward in layer 'py'" in info.value.__notes__[0]

    layer = python_layer(user_module, "PhaseAndParam")
    with pytest.raises(NotImplementedError) as info:
        layer.Backward([Blob((2,))], [], [])
    assert "PhaseAndParam.backward in layer 'py'" in info.value.__notes__[0]


def test_missing_module_class_and_params(user_module, tmp_path):
    with pytest.raises(LayerError, match=r"layer 'py' \(type Python\): cannot import Python layer module "
                                         r"'no_such_module_xyz': not found on the search path") as info:
        python_layer("no_such_module_xyz", "X")
    assert str(tmp_path) in str(info.value)          # the search path is shown
    assert isinstance(info.value, ImportError)       # what pycaffe's import raises

    with pytest.raises(LayerError, match=r"class 'Nope' not found in module 'my_user_layers'.*EuclideanLoss") \
            as info:
        python_layer(user_module, "Nope")
    assert isinstance(info.value, AttributeError)

    with pytest.raises(LayerError, match="python_param with module and layer"):
        create_layer(parse_text('name: "p" type: "Python" python_param { module: "m" }',
                                caffe_pb2.LayerParameter()))

    # An import error inside the user's module is reported as such, not as "not found".
    (tmp_path / "user_layers_with_bad_import.py").write_text("import not_installed_dependency_xyz\n")
    try:
        with pytest.raises(ModuleNotFoundError, match="not_installed_dependency_xyz") as info:
            python_layer("user_layers_with_bad_import", "X")
        assert info.value.__notes__ == ["brewnet: raised by importing module 'user_layers_with_bad_import' in "
                                        "layer 'py' (type Python)"]
    finally:
        sys.modules.pop("user_layers_with_bad_import", None)


def test_module_written_after_start_is_found(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(LayerError):
        python_layer("late_user_layers", "TimesTen")
    (tmp_path / "late_user_layers.py").write_text(USER_LAYERS)
    try:
        layer = python_layer("late_user_layers", "TimesTen")
        bottom, top = [blob(torch.ones(2))], [Blob()]
        layer.setup(bottom, top)
        layer.Forward(bottom, top)
        assert top[0].data.tolist() == [10.0, 10.0]
    finally:
        sys.modules.pop("late_user_layers", None)


def test_numpy_views_are_float64_in_float64_mode(float64, user_module):
    layer = python_layer(user_module, "TimesTen")
    bottom, top = [blob(torch.tensor([0.1, 0.2], dtype=torch.float64))], [Blob()]
    layer.setup(bottom, top)
    layer.Forward(bottom, top)
    assert top[0].data.dtype == torch.float64
    np.testing.assert_array_equal(top[0].data.numpy(), 10 * np.array([0.1, 0.2]))


def test_python_layers_in_a_net(user_module):
    """pycaffe's own test net: three x10 Python layers, force_backward."""
    from brewnet.core.net import Net
    layers = "".join(f"layer {{ type: 'Python' name: '{name}' bottom: '{bottom}' top: '{name}' "
                     f"python_param {{ module: 'my_user_layers' layer: 'TimesTen' }} }}"
                     for bottom, name in (("data", "one"), ("one", "two"), ("two", "three")))
    net = Net(parse_text("name: 'pythonnet' force_backward: true "
                         "layer { name: 'in' type: 'Input' top: 'data' "
                         "input_param { shape { dim: 10 dim: 9 dim: 8 } } } "
                         + layers, caffe_pb2.NetParameter()), phase=caffe_pb2.TRAIN)
    net.blobs["data"].data.fill_(8.0)
    net.forward()
    assert torch.all(net.blobs["three"].data == 8000)
    net.blobs["three"].diff.fill_(7.0)
    net.backward()
    assert torch.all(net.blobs["data"].diff == 7000)


STATEFUL_LAYERS = '''
import numpy as np
from brewnet.layers.python_layer import PythonLayerBase


class Counter(PythonLayerBase):
    """A data layer in Python: top = its counter, which state_dict saves."""

    def setup(self, bottom, top):
        self.count = 0

    def reshape(self, bottom, top):
        top[0].reshape(2)

    def forward(self, bottom, top):
        top[0].data[...] = [self.count, self.count + 1]
        self.count += 2

    def state_dict(self):
        return {"count": self.count, "seen": np.arange(self.count)}

    def load_state_dict(self, state):
        if state["count"] < 0:
            raise ValueError("negative count")
        self.count = state["count"]


class Plain(Counter):
    state_dict = load_state_dict = None
'''


def test_state_dict_passes_through_only_when_the_class_defines_it(tmp_path, monkeypatch):
    (tmp_path / "my_stateful_layers.py").write_text(STATEFUL_LAYERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        layer, top = python_layer("my_stateful_layers", "Counter"), [Blob()]
        layer.setup([], top)
        layer.Forward([], top)
        state = layer.state_dict()
        assert state["count"] == 2 and state["seen"].tolist() == [0, 1]
        fresh, fresh_top = python_layer("my_stateful_layers", "Counter"), [Blob()]
        fresh.setup([], fresh_top)
        fresh.load_state_dict({"count": 6})
        fresh.Forward([], fresh_top)
        assert fresh_top[0].data.tolist() == [6, 7]
        with pytest.raises(ValueError, match="^negative count") as info:
            fresh.load_state_dict({"count": -1})
        assert "Counter.load_state_dict in layer" in info.value.__notes__[0]
        # what the snapshot checks: without callable methods the layer takes no part
        plain = python_layer("my_stateful_layers", "Plain")
        assert getattr(plain, "state_dict", None) is None and not hasattr(plain, "load_state_dict")
    finally:
        sys.modules.pop("my_stateful_layers", None)


def test_layers_without_state_dict_have_none(user_module):
    assert not hasattr(python_layer(user_module, "TimesTen"), "state_dict")
