"""Reading and writing Caffe's protobuf files: prototxt errors, binary round trips, caffemodel wire format,
BlobProto in its legacy and current forms."""
import re

import numpy as np
import pytest

from brewnet.errors import ProtoError, WeightsError
from brewnet.proto import caffe_pb2, io
from brewnet.proto.weights import LegacyShapeArray, blob_to_array, fill_blob_proto, load_weights, shape_matches


# --- prototxt ---------------------------------------------------------------------------------------------------

def test_prototxt_syntax_error_names_file_line_and_column(tmp_path):
    path = tmp_path / "bad.prototxt"
    path.write_text('name: "x"\nlayer {\n  name: "a" bogus: 1\n}\n')
    with pytest.raises(ProtoError) as info:
        io.read_net_param(path)
    # "bogus" starts in column 13 of line 3 (columns counted from 1, as protoc does).
    assert (info.value.line, info.value.column) == (3, 13)
    assert str(info.value).startswith(f"{path}:3:13: ")
    assert "bogus" in str(info.value)


def test_prototxt_unclosed_brace_is_a_proto_error_with_location(tmp_path):
    path = tmp_path / "open.prototxt"
    path.write_text('name: "x"\nlayer {\n  name: "a"\n')
    with pytest.raises(ProtoError) as info:
        io.read_text(path, caffe_pb2.NetParameter())
    assert info.value.line == 3 and re.match(rf"{re.escape(str(path))}:3:\d+: ", str(info.value))


def test_missing_prototxt_names_the_file(tmp_path):
    with pytest.raises(ProtoError, match=re.escape(str(tmp_path / "none.prototxt"))):
        io.read_net_param(tmp_path / "none.prototxt")


def test_text_round_trip(tmp_path):
    net = io.parse_text('name: "n" layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" '
                        'param { lr_mult: 2 } inner_product_param { num_output: 7 } }', caffe_pb2.NetParameter())
    io.write_text(net, tmp_path / "n.prototxt")
    again = io.read_text(tmp_path / "n.prototxt", caffe_pb2.NetParameter())
    assert again == net and again.layer[0].inner_product_param.num_output == 7


# --- binary ---------------------------------------------------------------------------------------------------

def _net_with_weights(rng):
    net = caffe_pb2.NetParameter(name="tiny")
    shapes = {"conv": [(4, 3, 2, 2), (4,)], "ip": [(5, 16), (5,)], "relu": []}
    arrays = {}
    for name, blob_shapes in shapes.items():
        layer = net.layer.add(name=name, type={"conv": "Convolution", "ip": "InnerProduct"}.get(name, "ReLU"))
        arrays[name] = [rng.standard_normal(s).astype(np.float32) for s in blob_shapes]
        for a in arrays[name]:
            fill_blob_proto(layer.blobs.add(), a)
    return net, arrays


def test_binary_round_trip_is_lossless(tmp_path):
    net, arrays = _net_with_weights(np.random.default_rng(0))
    io.write_binary(net, tmp_path / "w.caffemodel")
    again = io.read_binary(tmp_path / "w.caffemodel", caffe_pb2.NetParameter())
    assert again == net
    assert again.SerializeToString() == (tmp_path / "w.caffemodel").read_bytes()


def test_caffemodel_written_by_brewnet_reads_back_as_plain_net_parameter(tmp_path):
    net, arrays = _net_with_weights(np.random.default_rng(1))
    path = tmp_path / "w.caffemodel"
    io.write_binary(net, path)
    # Decoded by protobuf alone, value by value, without brewnet's readers.
    plain = caffe_pb2.NetParameter.FromString(path.read_bytes())
    assert [layer.name for layer in plain.layer] == ["conv", "ip", "relu"]
    for layer in plain.layer:
        assert len(layer.blobs) == len(arrays[layer.name])
        for blob, expected in zip(layer.blobs, arrays[layer.name]):
            assert list(blob.shape.dim) == list(expected.shape)
            assert list(blob.data) == expected.ravel().tolist()       # float32 values exactly
            assert len(blob.diff) == 0 and not blob.HasField("num")


def _schema_numbers(spec_text, message):
    """{field name: number} of `message` in the conformance schema (tests/spec/caffe_schema.txt)."""
    block = re.search(rf"^message {message}\n((?:.+\n)+?)(?:\n|\Z)", spec_text, re.M).group(1)
    return {m.group(2): int(m.group(1)) for m in re.finditer(r"^\s+(\d+) \w+ \S+\s+(\w+)", block, re.M)}


def _wire_fields(payload):
    """(field number, wire type, value bytes or int) of one message, decoded by hand."""
    out, pos = [], 0

    def varint():
        nonlocal pos
        shift = value = 0
        while True:
            byte = payload[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    while pos < len(payload):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 2:
            length = varint()
            out.append((number, wire, payload[pos:pos + length]))
            pos += length
        elif wire == 0:
            out.append((number, wire, varint()))
        else:
            raise AssertionError(f"unexpected wire type {wire}")
    return out


def test_caffemodel_field_numbers_are_caffes(caffe_schema, tmp_path):
    spec = caffe_schema
    net_fields = _schema_numbers(spec, "NetParameter")
    layer_fields = _schema_numbers(spec, "LayerParameter")
    blob_fields = _schema_numbers(spec, "BlobProto")
    net, arrays = _net_with_weights(np.random.default_rng(2))
    path = tmp_path / "w.caffemodel"
    io.write_binary(net, path)

    top = _wire_fields(path.read_bytes())
    assert [n for n, _, _ in top] == [net_fields["name"]] + [net_fields["layer"]] * 3
    conv = _wire_fields(top[1][2])
    assert [n for n, _, _ in conv] == [layer_fields["name"], layer_fields["type"]] + [layer_fields["blobs"]] * 2
    weight = _wire_fields(conv[2][2])
    assert [n for n, w, _ in weight] == [blob_fields["data"], blob_fields["shape"]]
    data = weight[0][2]                                   # packed little-endian float32, as Caffe writes
    np.testing.assert_array_equal(np.frombuffer(data, "<f4"), arrays["conv"][0].ravel())


def test_truncated_caffemodel_is_a_clear_error(golden, tmp_path):
    content = (golden / "nets" / "lenet_train.caffemodel").read_bytes()
    path = tmp_path / "cut.caffemodel"
    path.write_bytes(content[:len(content) // 2])
    with pytest.raises(ProtoError, match=r"cut\.caffemodel: not a valid NetParameter \(truncated or corrupt"):
        io.read_binary(path, caffe_pb2.NetParameter())
    with pytest.raises(WeightsError, match=r"cut\.caffemodel: not a valid NetParameter"):
        load_weights(path)


def test_read_net_param_reads_binary_too(golden):
    net = io.read_net_param(golden / "nets" / "lenet_train.caffemodel")
    assert [layer.name for layer in net.layer][:3] == ["data", "label", "conv1"]
    assert len(net.layer[2].blobs) == 2


# --- BlobProto ------------------------------------------------------------------------------------------------

def test_blob_proto_legacy_four_dims():
    values = np.arange(6, dtype=np.float32) / 7
    proto = caffe_pb2.BlobProto(num=1, channels=1, height=2, width=3, data=values.tolist())
    array = blob_to_array(proto)
    assert isinstance(array, LegacyShapeArray) and array.shape == (1, 1, 2, 3) and array.dtype == np.float32
    np.testing.assert_array_equal(array.ravel(), values)
    # Caffe's ShapeEquals: the legacy dims are the target's last four axes, padded by 1s in front.
    assert shape_matches((2, 3), array) and shape_matches((1, 2, 3), array) and shape_matches((1, 1, 2, 3), array)
    assert not shape_matches((6,), array) and not shape_matches((3, 2), array)
    assert not shape_matches((1, 1, 1, 2, 3), array)


def test_blob_proto_shape_is_matched_exactly():
    proto = fill_blob_proto(caffe_pb2.BlobProto(), np.ones((2, 3), np.float32))
    array = blob_to_array(proto)
    assert type(array) is np.ndarray and array.shape == (2, 3)
    assert shape_matches((2, 3), array) and not shape_matches((1, 2, 3), array)


def test_blob_proto_double_data_and_diff():
    data = np.array([[1 / 3, -2e-300], [np.pi, 7.0]])
    diff = np.array([[0.1, 0.2], [0.3, 1e300]])
    proto = fill_blob_proto(caffe_pb2.BlobProto(), data, diff, write_double=True)
    assert len(proto.data) == 0 and list(proto.double_data) == data.ravel().tolist()
    back = blob_to_array(proto)
    assert back.dtype == np.float64
    np.testing.assert_array_equal(back, data)                    # doubles survive bit for bit
    np.testing.assert_array_equal(blob_to_array(proto, diff=True), diff)
    # A hand-made proto with double_data (as other tools write it) reads the same way.
    plain = caffe_pb2.BlobProto(double_data=[0.5, 0.25])
    plain.shape.dim.extend([2])
    np.testing.assert_array_equal(blob_to_array(plain), [0.5, 0.25])


def test_blob_proto_float_diff_and_missing_diff():
    proto = fill_blob_proto(caffe_pb2.BlobProto(), np.zeros(3, np.float32), np.array([1, 2, 3], np.float32))
    np.testing.assert_array_equal(blob_to_array(proto, diff=True), [1, 2, 3])
    assert blob_to_array(fill_blob_proto(caffe_pb2.BlobProto(), np.zeros(3)), diff=True) is None


def test_blob_proto_value_count_must_fit_shape():
    proto = caffe_pb2.BlobProto(data=[1.0, 2.0, 3.0])
    proto.shape.dim.extend([2, 2])
    with pytest.raises(WeightsError, match=r"conv1 param 0: holds 3 data values but its shape 2 x 2 needs 4"):
        blob_to_array(proto, where="conv1 param 0")


def test_fill_blob_proto_accepts_torch_tensors():
    import torch
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    proto = fill_blob_proto(caffe_pb2.BlobProto(), t)
    assert list(proto.shape.dim) == [3, 4] and list(proto.data) == list(range(12))
