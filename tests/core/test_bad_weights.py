"""Weights from which nothing can be copied: an empty file, or a caffemodel / HDF5 file none of whose layer
names matches a layer with parameters.  Caffe silently trains or scores the fillers' random values then; here
it is a WeightsError naming the file and both sides' layer names.  Single unmatched layers stay a log line."""
import logging

import pytest
import torch

import caffe
from brewnet.errors import WeightsError
from brewnet.proto import caffe_pb2
from tests.core.test_net import TWO_IP, net_from

RENAMED = TWO_IP.replace('"ip_a"', '"fc_a"').replace('"ip_b"', '"fc_b"')


def test_empty_caffemodel_is_an_error_naming_the_file(tmp_path):
    empty = tmp_path / "empty.caffemodel"
    empty.write_bytes(b"")
    net = net_from(TWO_IP, phase=caffe_pb2.TRAIN)
    with pytest.raises(WeightsError) as info:
        net.copy_trained_layers_from(str(empty))
    assert str(info.value) == (f"{empty}: the weights file holds no layers (empty, or not a caffemodel / HDF5 "
                               "weights file); no parameter was copied")


@pytest.mark.parametrize("save", ["save", "save_hdf5"])
def test_no_matching_layer_name_lists_both_sides(tmp_path, save):
    path = tmp_path / ("other.caffemodel" + (".h5" if save == "save_hdf5" else ""))
    getattr(net_from(RENAMED, phase=caffe_pb2.TRAIN), save)(str(path))
    net = net_from(TWO_IP, phase=caffe_pb2.TRAIN)
    before = net.layer_by_name("ip_a").blobs[0].data.clone()
    with pytest.raises(WeightsError) as info:
        net.copy_trained_layers_from(str(path))
    message = str(info.value)
    assert message.startswith(f"{path}: no parameter was copied: no layer name in the weights matches a layer "
                              "with parameters in net 'two'")
    assert "the weights have 'fc_a'" in message and "the net has 'ip_a', 'ip_b'" in message
    assert torch.equal(net.layer_by_name("ip_a").blobs[0].data, before)


def test_one_matching_layer_is_enough_and_the_others_are_logged(tmp_path, caplog):
    source = net_from(TWO_IP.replace('"ip_b"', '"fc_b"'), phase=caffe_pb2.TRAIN)
    path = tmp_path / "partial.caffemodel"
    source.save(str(path))
    net = net_from(TWO_IP, phase=caffe_pb2.TRAIN)
    with caplog.at_level(logging.INFO, logger="brewnet"):
        net.copy_trained_layers_from(str(path))
    assert "Ignoring source layer fc_b" in caplog.text
    assert torch.equal(net.layer_by_name("ip_a").blobs[0].data, source.layer_by_name("ip_a").blobs[0].data)


def test_a_net_without_parameters_copies_nothing_without_error(tmp_path):
    path = tmp_path / "w.caffemodel"
    net_from(TWO_IP, phase=caffe_pb2.TRAIN).save(str(path))
    plain = net_from('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 } } }')
    plain.copy_trained_layers_from(str(path))
    assert plain.layer_names == ["in"]


def test_pycaffe_constructor_and_copy_from_refuse(tmp_path):
    proto = tmp_path / "net.prototxt"
    proto.write_text(TWO_IP)
    other = tmp_path / "other.caffemodel"
    net_from(RENAMED, phase=caffe_pb2.TRAIN).save(str(other))
    with pytest.raises(WeightsError, match="other.caffemodel: no parameter was copied"):
        caffe.Net(str(proto), str(other), caffe.TEST)
    empty = tmp_path / "empty.caffemodel"
    empty.write_bytes(b"")
    net = caffe.Net(str(proto), caffe.TEST)
    with pytest.raises(WeightsError, match="empty.caffemodel: the weights file holds no layers"):
        net.copy_from(str(empty))
