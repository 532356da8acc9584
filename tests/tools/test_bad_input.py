"""Bad input on the command line, each tried for real in a subprocess: one fatal line naming the file, layer
or value, exit status 1, no traceback, and no death by a signal (a truncated LMDB used to end in SIGBUS)."""
import os
import subprocess
import sys

import numpy as np
import pytest

from brewnet.data.datum import array_to_datum
from tests.data.test_bad_db import make_images_db, newest_meta, overwrite_page, truncate

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

NET = """name: "bad"
layer { name: "data" type: "Data" top: "data" top: "label"
  data_param { source: "%s" backend: LMDB batch_size: 10 } transform_param { scale: 0.00390625 } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""

SOLVER = """net: "net.prototxt"
base_lr: 0.01
lr_policy: "fixed"
max_iter: 40
display: 0
snapshot_prefix: "snap"
"""


def caffe(tmp_path, *args):
    """Run the command line in tmp_path; (exit status, the fatal lines, the whole output)."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-m", "brewnet.tools.cli", *args], cwd=tmp_path, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    fatal = [line for line in done.stdout.splitlines() if line.startswith("F")]
    return done.returncode, fatal, done.stdout


def expect_one_error(result, *parts):
    status, fatal, output = result
    assert status == 1, output[-3000:]          # not 135 / -7 (SIGBUS) nor a traceback's exit
    assert "Traceback" not in output, output[-3000:]
    assert len(fatal) == 1, output[-3000:]
    for part in parts:
        assert part in fatal[0], fatal[0]
    return fatal[0]


def train_on(tmp_path, db, *flags, solver_extra=""):
    (tmp_path / "net.prototxt").write_text(NET % db)
    (tmp_path / "solver.prototxt").write_text(SOLVER + solver_extra)
    return caffe(tmp_path, "train", "-solver", "solver.prototxt", *flags)


def test_truncated_lmdb_is_an_error_not_a_bus_error(tmp_path):
    db = make_images_db(tmp_path / "db")
    full = os.path.getsize(os.path.join(db, "data.mdb"))
    truncate(db, full // 2)
    expect_one_error(train_on(tmp_path, db), "layer 'data' (type Data)", f"LMDB '{db}' is truncated",
                     f"has {full // 2} bytes")


def test_corrupt_page_found_by_the_reader_thread_stops_training(tmp_path):
    db = make_images_db(tmp_path / "db")
    _, last = newest_meta(os.path.join(db, "data.mdb"))
    overwrite_page(os.path.join(db, "data.mdb"), last // 2)
    expect_one_error(train_on(tmp_path, db), f"LMDB '{db}' is corrupt or unreadable while reading record #",
                     "(the one after key '000000")


@pytest.mark.parametrize("kind", ["short", "shape"])
def test_bad_record_is_named_by_its_own_key(tmp_path, kind):
    bad = array_to_datum(np.zeros((1, 20, 20) if kind == "shape" else (1, 28, 28), np.uint8), 3)
    if kind == "short":
        bad.data = bad.data[:700]
    db = make_images_db(tmp_path / "db", odd={30: bad})     # 30: the first record of the fourth batch
    expected = ("holds 700 bytes of data but its shape 1 x 28 x 28 needs 784" if kind == "short" else
                "Expect: shape (1, 28, 28)")
    expect_one_error(train_on(tmp_path, db), f"database '{db}': record '00000030': ", expected)


def test_weights_that_match_nothing(tmp_path):
    db = make_images_db(tmp_path / "db", n=20)
    (tmp_path / "other.prototxt").write_text(NET.replace('"ip"', '"fc"') % db)
    (tmp_path / "empty.caffemodel").write_bytes(b"")
    script = ("import caffe; n = caffe.Net('other.prototxt', caffe.TEST); n.save('other.caffemodel'); "
              "n.save_hdf5('other.caffemodel.h5')")
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, check=True, capture_output=True,
                   env=dict(os.environ, PYTHONPATH=REPO))
    no_match = "no parameter was copied: no layer name in the weights matches a layer with parameters in net 'bad'"
    expect_one_error(train_on(tmp_path, db, "-weights", "other.caffemodel.h5"), "other.caffemodel.h5: " + no_match,
                     "the weights have 'fc'; the net has 'ip'")
    expect_one_error(train_on(tmp_path, db, solver_extra='weights: "other.caffemodel"\n'),
                     "other.caffemodel: " + no_match)
    expect_one_error(caffe(tmp_path, "test", "-model", "net.prototxt", "-weights", "empty.caffemodel"),
                     "empty.caffemodel: the weights file holds no layers")


def test_huge_input_shape_names_layer_blob_and_bytes(tmp_path):
    (tmp_path / "huge.prototxt").write_text(
        'layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 65536 dim: 65536 dim: 65536 } } }')
    expect_one_error(caffe(tmp_path, "time", "-model", "huge.prototxt", "-iterations", "1"),
                     "layer 'in' (type Input): blob 'data': cannot allocate shape 65536 x 65536 x 65536",
                     f"{(1 << 48) * 4} bytes")
