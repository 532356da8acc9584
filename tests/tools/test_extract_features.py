"""extract_features: a Data layer over a small database, an InnerProduct with known weights; the features read
back from the databases are the direct computation, under Caffe's "%010d" keys."""
import numpy as np
import pytest

from brewnet.data import db as dbm
from brewnet.data.datum import array_to_datum, parse_datum
from brewnet.proto import caffe_pb2
from brewnet.proto.io import write_binary
from brewnet.tools import extract_features

NET = """name: "features"
layer {{ name: "data" type: "Data" top: "data" top: "label"
        data_param {{ source: "{source}" backend: {backend} batch_size: 3 }} transform_param {{ scale: 0.5 }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param {{ num_output: 2 weight_filler {{ type: "gaussian" }} }} }}
"""
IMAGES = np.random.RandomState(0).randint(0, 256, (5, 1, 2, 2)).astype(np.uint8)
WEIGHT = np.array([[0.5, -1.0, 2.0, 0.25], [1.5, 0.0, -0.75, 1.0]], np.float32)
BIAS = np.array([0.1, -2.0], np.float32)


def make_files(tmp_path, backend):
    source = tmp_path / "images_db"
    with dbm.open_db(source, backend, dbm.NEW) as database:
        txn = database.transaction()
        for i, image in enumerate(IMAGES):
            txn.put(dbm.format_key(i), array_to_datum(image, i).SerializeToString())
        txn.commit()
    (tmp_path / "net.prototxt").write_text(NET.format(source=source, backend=backend.upper()))
    weights = caffe_pb2.NetParameter()
    layer = weights.layer.add()
    layer.name, layer.type = "ip", "InnerProduct"
    for array in (WEIGHT, BIAS):
        blob = layer.blobs.add()
        blob.shape.dim.extend(array.shape)
        blob.data.extend(array.ravel().tolist())
    write_binary(weights, str(tmp_path / "w.caffemodel"))
    return [str(tmp_path / "w.caffemodel"), str(tmp_path / "net.prototxt")]


def read_features(path, backend):
    with dbm.open_db(path, backend) as database:
        return [(key, parse_datum(value)) for key, value in database]


@pytest.mark.parametrize("backend", ["lmdb", "leveldb"])
def test_features_match_direct_computation(tmp_path, capsys, backend):
    args = make_files(tmp_path, backend)
    out_ip, out_data = str(tmp_path / "feat_ip"), str(tmp_path / "feat_data")
    # 3 batches of 3 over 5 records: the data layer wraps round, images 0..4, 0..3
    assert extract_features.main(args + ["ip,data", f"{out_ip},{out_data}", "3", backend, "CPU"]) == 0
    order = [0, 1, 2, 3, 4, 0, 1, 2, 3]
    x = IMAGES[order].reshape(9, 4).astype(np.float32) * np.float32(0.5)
    expected_ip = x @ WEIGHT.T + BIAS

    ip = read_features(out_ip, backend)
    assert [key for key, _ in ip] == [b"%010d" % i for i in range(9)]
    assert [key for key, _ in ip][:2] == [b"0000000000", b"0000000001"]
    for (_, datum), row in zip(ip, expected_ip):
        assert (datum.channels, datum.height, datum.width) == (2, 1, 1)
        assert not datum.HasField("label") and not datum.HasField("data") and not datum.HasField("encoded")
        np.testing.assert_allclose(datum.float_data, row, rtol=1e-6, atol=1e-6)

    data = read_features(out_data, backend)
    assert len(data) == 9
    for (_, datum), row in zip(data, x):
        assert (datum.channels, datum.height, datum.width) == (1, 2, 2)
        np.testing.assert_array_equal(np.asarray(datum.float_data, np.float32), row)

    log = capsys.readouterr().err
    assert "Using CPU" in log and "Extracting Features" in log
    assert "Extracted features of 9 query images for feature blob ip" in log
    assert "Successfully extracted the features!" in log


def test_bad_arguments_fail_cleanly(tmp_path, capsys):
    args = make_files(tmp_path, "lmdb")
    assert extract_features.main(args + ["ip"]) == 1                                  # too few arguments
    assert "Usage: extract_features" in capsys.readouterr().err
    assert extract_features.main(args + ["ip,data", str(tmp_path / "f"), "1", "lmdb"]) == 1
    assert "number of blob names and dataset names" in capsys.readouterr().err
    assert extract_features.main(args + ["fc7", str(tmp_path / "f"), "1", "lmdb"]) == 1
    assert "Unknown feature blob name fc7" in capsys.readouterr().err
    assert extract_features.main(args + ["ip", str(tmp_path / "f"), "one", "lmdb"]) == 1
    assert "num_mini_batches" in capsys.readouterr().err
    (tmp_path / "exists").mkdir()
    assert extract_features.main(args + ["ip", str(tmp_path / "exists"), "1", "lmdb"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert not (tmp_path / "f").exists()
