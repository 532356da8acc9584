"""The converters write the same bytes Caffe's tools wrote (golden/files), with Caffe's flags."""
import numpy as np
import pytest

from brewnet.data.db import open_db
from brewnet.data.mnist import write_idx_images, write_idx_labels
from brewnet.tools import compute_image_mean, convert_imageset, convert_mnist_data


def records(path, backend="lmdb"):
    with open_db(path, backend) as database:
        return list(database)


@pytest.mark.parametrize("backend", ["lmdb", "leveldb"])
def test_convert_mnist_data_matches_caffe(golden, tmp_path, backend):
    digits = np.load(golden / "files" / "mnist1000.npz")
    write_idx_images(tmp_path / "images.gz", digits["images"][:200])
    write_idx_labels(tmp_path / "labels", digits["labels"][:200])
    flag = ["--backend=" + backend] if backend == "leveldb" else ["-backend", "lmdb"]
    assert convert_mnist_data.main(flag + [str(tmp_path / "images.gz"), str(tmp_path / "labels"),
                                           str(tmp_path / "db")]) == 0
    assert records(tmp_path / "db", backend) == records(golden / "files" / f"mnist1000_{backend}", backend)[:200]


@pytest.mark.parametrize("flags,golden_db", [
    (["-resize_height=32", "--resize_width", "32"], "images_raw32_lmdb"),
    (["-gray", "-resize_height=32", "-resize_width=32"], "images_gray32_lmdb"),
    (["--encoded=true", "--encode_type=png", "-check_size=false"], "images_encoded_lmdb"),
])
def test_convert_imageset_matches_caffe(golden, tmp_path, monkeypatch, flags, golden_db):
    monkeypatch.chdir(golden / "files")
    assert convert_imageset.main(flags + ["images/", "images.txt", str(tmp_path / "db")]) == 0
    assert records(tmp_path / "db") == records(golden_db)


def test_convert_imageset_check_size_and_missing(golden, tmp_path, monkeypatch):
    monkeypatch.chdir(golden / "files")
    # without resize the images have two sizes: check_size stops at the first odd one
    assert convert_imageset.main(["-check_size", "images/", "images.txt", str(tmp_path / "a")]) == 1
    (tmp_path / "list.txt").write_text("img00.jpg 1\nnothere.jpg 2\nimg02.jpg 5\n")
    assert convert_imageset.main(["images/", str(tmp_path / "list.txt"), str(tmp_path / "b")]) == 0
    assert [k for k, _ in records(tmp_path / "b")] == [b"00000000_img00.jpg", b"00000002_img02.jpg"]


def test_compute_image_mean_matches_caffe(golden, tmp_path):
    out = tmp_path / "mean.binaryproto"
    assert compute_image_mean.main(["-backend", "lmdb", str(golden / "files" / "mnist1000_lmdb"), str(out)]) == 0
    assert out.read_bytes() == (golden / "files" / "mnist1000_mean.binaryproto").read_bytes()
    assert compute_image_mean.main(["--backend=leveldb", str(golden / "files" / "mnist1000_leveldb"),
                                    str(tmp_path / "m2")]) == 0
    assert (tmp_path / "m2").read_bytes() == out.read_bytes()


def test_missing_db_fails_cleanly(tmp_path, capsys):
    assert compute_image_mean.main([str(tmp_path / "none")]) == 1
    assert convert_mnist_data.main(["a", "b"]) == 1   # usage


def test_gflags_command_lines(golden, tmp_path, monkeypatch, capsys):
    """The converters take brewnet.tools.flags' command line: help, gflags errors, `--`, status codes."""
    assert convert_imageset.main(["-help"]) == 0
    out = capsys.readouterr().out
    assert "convert_imageset [FLAGS] ROOTFOLDER/ LISTFILE DB_NAME" in out
    assert "-resize_height (Height images are resized to) type: int32 default: 0" in out
    assert convert_imageset.main(["-resize_height=big", "a/", "b", "c"]) == 1
    assert "illegal value 'big' specified for int32 flag 'resize_height'" in capsys.readouterr().err
    assert compute_image_mean.main(["-shuffle", "db"]) == 1
    assert "unknown command line flag 'shuffle'" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)   # after `--` a file name may start with '-'
    assert compute_image_mean.main(["-backend=lmdb", "--", str(golden / "files" / "mnist1000_lmdb"),
                                    "-mean.binaryproto"]) == 0
    assert (tmp_path / "-mean.binaryproto").stat().st_size > 0


def test_create_mnist_example(tmp_path):
    """examples/mnist/create_mnist.py: the bundled digits -> 8 000 / 2 000 record databases."""
    import importlib.util
    import pathlib
    script = pathlib.Path(__file__).resolve().parents[2] / "examples" / "mnist" / "create_mnist.py"
    spec = importlib.util.spec_from_file_location("create_mnist", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--out", str(tmp_path)]) == 0
    assert len(records(tmp_path / "mnist_train_lmdb")) == 8000
    assert len(records(tmp_path / "mnist_test_lmdb")) == 2000
