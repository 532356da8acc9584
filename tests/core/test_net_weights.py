"""A Net's trained weights (core/net_weights.py): copied from a caffemodel with errors that name the layer,
the param and both shapes, saved and read back, a truncated file named in the error.  HDF5 weights and the
caffemodel format itself: tests/proto/test_weights.py."""
import pytest
import torch

from brewnet.errors import WeightsError
from brewnet.proto import caffe_pb2
from tests.core.test_net import TWO_IP, net_from


def test_copy_weights_shape_mismatch_names_layer_param_and_shapes(tmp_path):
    net = net_from(TWO_IP, phase=caffe_pb2.TRAIN)
    proto = net.to_proto()
    proto.layer[2].blobs[0].shape.dim[:] = [5, 3]
    del proto.layer[2].blobs[0].data[:]
    proto.layer[2].blobs[0].data.extend([0.0] * 15)
    with pytest.raises(WeightsError, match="Cannot copy param 0 weights from layer 'ip_a'.*5 3 \\(15\\).*2 3 \\(6\\)"):
        net.copy_trained_layers_from(proto)


def test_caffemodel_round_trip_and_truncation(tmp_path):
    net = net_from(TWO_IP, phase=caffe_pb2.TRAIN)
    path = tmp_path / "w.caffemodel"
    net.save(str(path))
    parsed = caffe_pb2.NetParameter()
    parsed.ParseFromString(path.read_bytes())
    assert [l.name for l in parsed.layer if len(l.blobs)] == ["ip_a", "ip_b"]
    other = net_from(TWO_IP, phase=caffe_pb2.TRAIN)
    other.copy_trained_layers_from(str(path))
    assert torch.equal(other.layer_by_name("ip_a").blobs[0].data, net.layer_by_name("ip_a").blobs[0].data)
    truncated = tmp_path / "t.caffemodel"
    truncated.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(Exception, match="t.caffemodel"):
        other.copy_trained_layers_from(str(truncated))
