"""pycaffe and mixed precision (brewnet only): caffe.set_precision, Net(..., precision=), a solver's nets."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import caffe
from brewnet.errors import BrewnetError

from .test_solver import SIMPLE_NET, fill_inputs, write_solver


@pytest.fixture
def net_file(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(SIMPLE_NET)
    return str(path)


def conv_oracle(net, dtype):
    x = torch.from_numpy(np.array(net.blobs["data"].data))
    w, b = (torch.from_numpy(np.array(p.data)) for p in net.params["conv"])
    return F.conv2d(x.to(dtype), w.to(dtype), b.to(dtype), padding=3).float().numpy()


def test_set_precision_and_the_net_keyword(net_file):
    net = caffe.Net(net_file, caffe.TRAIN)
    fill_inputs(net)
    net.forward()
    np.testing.assert_allclose(net.blobs["conv"].data, conv_oracle(net, torch.float32), rtol=1e-5, atol=1e-4)
    caffe.set_precision("bf16")
    try:
        assert net.precision.mode == "bf16"
        net.forward()
        assert net.blobs["conv"].data.dtype == np.float32
        np.testing.assert_array_equal(net.blobs["conv"].data, conv_oracle(net, torch.bfloat16))
        own = caffe.Net(net_file, caffe.TRAIN, precision="fp32")       # an explicit choice wins
        fill_inputs(own)
        own.forward()
        np.testing.assert_allclose(own.blobs["conv"].data, conv_oracle(own, torch.float32), rtol=1e-5, atol=1e-4)
    finally:
        caffe.set_precision(None)
    assert net.precision.mode == "fp32"
    with pytest.raises(BrewnetError, match="Actual: 'int8'"):
        caffe.set_precision("int8")


def test_backward_runs_in_the_nets_precision(net_file):
    net = caffe.Net(net_file, caffe.TRAIN, precision="fp16")
    fill_inputs(net)
    net.forward()
    diffs = net.backward()
    reference = caffe.Net(net_file, caffe.TRAIN)
    reference.share_with(net)
    fill_inputs(reference)
    reference.forward()
    expected = reference.backward()
    assert diffs["data"].dtype == np.float32
    np.testing.assert_allclose(diffs["data"], expected["data"], rtol=0.05, atol=1e-3)
    assert not np.array_equal(diffs["data"], expected["data"])


def test_solver_nets_follow_the_solver(tmp_path):
    solver = caffe.SGDSolver(write_solver(tmp_path), precision="bf16")
    assert solver.net.precision.mode == "bf16" and solver.test_nets[0].precision.mode == "bf16"
    solver.set_precision("fp16")
    assert solver.net.precision.mode == "fp16" and solver.precision.scaler is not None
    fill_inputs(solver.net)
    solver.step(2)
    assert solver.iter == 2
    assert all(p.data.dtype == np.float32 for ps in solver.net.params.values() for p in ps)
    assert caffe.get_solver(write_solver(tmp_path), precision="bf16").net.precision.mode == "bf16"
