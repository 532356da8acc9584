"""Python layers written the pycaffe way (a caffe.Layer subclass in a module on the path), through `import caffe`."""
import numpy as np
import pytest

import caffe
from brewnet.errors import BrewnetError


# --- Python layers, written the pycaffe way -------------------------------------------------------------------------
PY_MODULE = '''
import caffe
import numpy as np


class ScaledSquare(caffe.Layer):
    """y = s * x^2 with s from param_str; a learned offset blob added with add_blob."""

    def setup(self, bottom, top):
        self.s = float(self.param_str)
        self.blobs.add_blob(1)
        self.blobs[0].data[...] = 0.5

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = self.s * bottom[0].data ** 2 + self.blobs[0].data[0]

    def backward(self, top, propagate_down, bottom):
        self.blobs[0].diff[0] += top[0].diff.sum()
        if propagate_down[0]:
            bottom[0].diff[...] = 2 * self.s * bottom[0].data * top[0].diff


class Broken(caffe.Layer):
    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        raise ValueError("user bug in forward")
'''

PY_NET = """force_backward: true
layer {{ name: "x" type: "Input" top: "x" input_param {{ shape {{ dim: 2 dim: 3 }} }} }}
layer {{ name: "sq" type: "Python" bottom: "x" top: "y"
        python_param {{ module: "{module}" layer: "{layer}" param_str: "3" }} }}
"""


def test_python_layer_through_caffe(tmp_path, monkeypatch):
    (tmp_path / "pycaffe_user_layers.py").write_text(PY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "py.prototxt"
    path.write_text(PY_NET.format(module="pycaffe_user_layers", layer="ScaledSquare"))
    net = caffe.Net(str(path), caffe.TRAIN)
    layer = net.layer_dict["sq"]
    assert isinstance(layer, caffe.Layer) and layer.s == 3.0 and layer.phase == caffe.TRAIN
    assert list(net.params) == ["sq"] and net.params["sq"][0].data[0] == 0.5
    x = np.array([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]], np.float32)
    out = net.forward(x=x)
    np.testing.assert_allclose(out["y"], 3 * x ** 2 + 0.5)
    grads = net.backward(y=np.ones((2, 3)))
    np.testing.assert_allclose(grads["x"], 6 * x)
    np.testing.assert_allclose(net.params["sq"][0].diff, [6.0])
    net.params["sq"][0].data[...] = -1          # a parameter edited from outside the layer
    np.testing.assert_allclose(net.forward(x=x)["y"], 3 * x ** 2 - 1)


def test_python_layer_errors_name_the_layer_and_module(tmp_path, monkeypatch):
    (tmp_path / "pycaffe_user_layers2.py").write_text(PY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "py.prototxt"
    path.write_text(PY_NET.format(module="no_such_layer_module", layer="ScaledSquare"))
    with pytest.raises(BrewnetError) as error:
        caffe.Net(str(path), caffe.TRAIN)
    message = str(error.value)
    assert "'no_such_layer_module'" in message and "layer 'sq'" in message and str(tmp_path) in message
    path.write_text(PY_NET.format(module="pycaffe_user_layers2", layer="Broken"))
    net = caffe.Net(str(path), caffe.TRAIN)
    with pytest.raises(ValueError, match="^user bug in forward") as error:
        net.forward(x=np.zeros((2, 3)))
    assert error.value.__notes__ == ["brewnet: raised by pycaffe_user_layers2.Broken.forward in layer 'sq' "
                                     "(type Python)"]
