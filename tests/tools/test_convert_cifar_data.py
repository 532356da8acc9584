"""convert_cifar_data (Caffe's examples/cifar10 tool) on a small folder written in CIFAR-10's format."""
import numpy as np
import pytest

from brewnet.data.datum import datum_to_array, parse_datum
from brewnet.data.db import open_db
from brewnet.tools import cli, convert_cifar_data
from tests.data.test_cifar import write_folder


def records(path, backend):
    with open_db(path, backend) as database:
        return [(key, parse_datum(value)) for key, value in database]


@pytest.mark.parametrize("backend", ["lmdb", "leveldb"])
def test_writes_train_and_test_databases_of_3x32x32_datums(tmp_path, backend):
    arrays = write_folder(tmp_path / "in")
    assert convert_cifar_data.main([str(tmp_path / "in"), str(tmp_path / "out"), backend]) == 0
    train = records(tmp_path / "out" / f"cifar10_train_{backend}", backend)
    test = records(tmp_path / "out" / f"cifar10_test_{backend}", backend)
    assert [key for key, _ in train] == [f"{i:05d}".encode() for i in range(10)]
    assert [key for key, _ in test] == [b"00000", b"00001", b"00002", b"00003"]
    datum = train[4][1]                                       # batch 2, item 1
    assert (datum.channels, datum.height, datum.width, datum.label) == (3, 32, 32, arrays[1][1][1])
    assert np.array_equal(datum_to_array(datum), arrays[1][0][1])
    assert [d.label for _, d in test] == arrays[5][1].tolist()


def test_usage_missing_batch_and_bad_db_type(tmp_path, capsys):
    assert convert_cifar_data.main(["in", "out"]) == 1
    assert "convert_cifar_data input_folder output_folder db_type" in capsys.readouterr().err
    write_folder(tmp_path / "in")
    assert convert_cifar_data.main([str(tmp_path / "in"), str(tmp_path / "out"), "hdf5"]) == 1
    (tmp_path / "in" / "test_batch.bin").unlink()
    assert convert_cifar_data.main([str(tmp_path / "in"), str(tmp_path / "out"), "lmdb"]) == 1
    assert not (tmp_path / "out" / "cifar10_train_lmdb").exists()


def test_reachable_as_a_caffe_tool(tmp_path):
    write_folder(tmp_path / "in")
    assert "convert_cifar_data" in cli.TOOLS
    assert cli.main(["convert_cifar_data", str(tmp_path / "in"), str(tmp_path / "out"), "lmdb"]) == 0
    assert len(records(tmp_path / "out" / "cifar10_train_lmdb", "lmdb")) == 10


def test_a_generated_resnet_reads_the_converted_database(tmp_path):
    from brewnet.models import resnet
    from tests.models.helpers import build

    arrays = write_folder(tmp_path / "in")
    assert convert_cifar_data.main([str(tmp_path / "in"), str(tmp_path / "out"), "lmdb"]) == 0
    param = resnet.cifar_resnet(8, width=2, source=tmp_path / "out" / "cifar10_test_lmdb", batch_size=4,
                                transform_param=dict(scale=1 / 256))
    net = build(param)
    try:
        net.forward()
        assert net.blobs["data"].shape == (4, 3, 32, 32)
        np.testing.assert_allclose(net.blobs["data"].data.numpy() * 256, arrays[5][0], rtol=1e-6)
        assert net.blobs["label"].data.tolist() == arrays[5][1].tolist()
    finally:
        net.close()
