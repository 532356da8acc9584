"""Every prototxt of Caffe's models/ and examples/ (tests/golden/models) parses, upgrades and assembles,
with Input layers standing in for the data layers (their databases are not here), in both phases."""
import pytest
import torch

from brewnet.core.net import Net
from brewnet.proto import caffe_pb2
from brewnet.proto.io import read_net_param, read_text
from brewnet.proto.upgrade import upgrade_net_as_needed, upgrade_solver_as_needed

from tests.conftest import GOLDEN

MODELS = GOLDEN / "models"
DATA_TYPES = {"Data", "ImageData", "HDF5Data", "WindowData", "MemoryData"}
# (channels, height, width) of the images each example's data layer would deliver, when no crop_size says.
IMAGE_SHAPES = {"examples_mnist": (1, 28, 28), "examples_siamese": (2, 28, 28), "examples_cifar10": (3, 32, 32),
                "examples_hdf5_classification": (4,)}
BATCH = 2

PYLOSS = '''
import caffe
import numpy as np

class EuclideanLossLayer(caffe.Layer):
    """pycaffe's examples/pycaffe/layers/pyloss.py, the book's Python-layer example."""
    def setup(self, bottom, top):
        if len(bottom) != 2:
            raise Exception("Need two inputs to compute distance.")
    def reshape(self, bottom, top):
        self.diff = np.zeros_like(bottom[0].data, dtype=np.float32)
        top[0].reshape(1)
    def forward(self, bottom, top):
        self.diff[...] = bottom[0].data - bottom[1].data
        top[0].data[...] = np.sum(self.diff ** 2) / bottom[0].num / 2.
    def backward(self, top, propagate_down, bottom):
        for i in range(2):
            if propagate_down[i]:
                sign = 1 if i == 0 else -1
                bottom[i].diff[...] = sign * self.diff / bottom[i].num
'''


def stand_in_inputs(param, folder):
    """Replace data layers by Input layers of the shapes they would produce (batch 2)."""
    for layer in param.layer:
        if layer.type not in DATA_TYPES:
            continue
        crop = layer.transform_param.crop_size
        image = (3, crop, crop) if crop else IMAGE_SHAPES.get(folder, (3, 227, 227))
        tops = list(layer.top)
        include = [r for r in layer.include]
        layer.Clear()
        layer.name, layer.type = f"{tops[0]}_input", "Input"
        layer.top.extend(tops)
        layer.include.extend(include)
        for i, _ in enumerate(tops):
            layer.input_param.shape.add().dim.extend((BATCH,) + image if i == 0 else (BATCH,))
    return param


def net_params():
    """(id, folder, NetParameter) for every net definition, including nets embedded in solvers."""
    found = []
    for path in sorted(MODELS.rglob("*.prototxt")):
        folder = path.parent.name
        if "solver" in path.name:
            solver = upgrade_solver_as_needed(read_text(str(path), caffe_pb2.SolverParameter()), str(path))
            for field in ("net_param", "train_net_param"):
                if solver.HasField(field):
                    net = upgrade_net_as_needed(getattr(solver, field), str(path))
                    found.append((f"{folder}/{path.name}:{field}", folder, net))
            continue
        found.append((f"{folder}/{path.name}", folder, read_net_param(str(path))))
    return found


CASES = net_params() if MODELS.is_dir() else []


def test_the_model_zoo_is_there():
    assert len(CASES) >= 33, f"expected Caffe's model prototxts under {MODELS}"


@pytest.mark.parametrize("name,folder,param", CASES, ids=[c[0] for c in CASES])
def test_model_assembles_in_both_phases(name, folder, param, tmp_path, monkeypatch):
    (tmp_path / "pyloss.py").write_text(PYLOSS)
    monkeypatch.syspath_prepend(str(tmp_path))
    param = stand_in_inputs(param, folder)
    # Nets whose test data layers are chosen by stage (mnist_autoencoder) are tested with their first stage.
    stages = [s for layer in param.layer for rule in layer.include for s in rule.stage][:1]
    for phase in (caffe_pb2.TRAIN, caffe_pb2.TEST):
        net = Net(param, phase=phase, stages=stages if phase == caffe_pb2.TEST else ())
        # every blob a layer produced has a positive size
        assert net.layers and all(b.count() > 0 for b in net.blobs.values()), name
        net.close()
    # one forward of a small net proves the assembled layers also run
    if sum(b.count() for b in net.learnable_params) < 2_000_000:
        for blob in net.input_blobs:
            blob.data.copy_(torch.rand(blob.shape))
        with torch.no_grad():
            net.forward()
