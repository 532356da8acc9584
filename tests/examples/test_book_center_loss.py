"""Book 5.9 (examples/book/ch5_9.py): a small LeNet++ with center loss trains on the bundled digits, the book's
feature-dump script runs unchanged against it, the compactness ratio is what it says; caffe-face's own
mnist_example prototxt and solver train with only their data paths changed (when a caffe-face checkout is
at hand: its files are not vendored here)."""
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from brewnet.solvers import get_solver
from examples.book import ch5_9

ROOT = pathlib.Path(__file__).resolve().parents[2]
# caffe-face's own files are not vendored (not ours to redistribute): CAFFE_FACE names a checkout or bare clone
# of github.com/ydwen/caffe-face, and the test that trains its prototxt skips without one.
CAFFE_FACE = pathlib.Path(os.environ.get("CAFFE_FACE", "") or "/nonexistent")


def caffe_face_file(path):
    """A file of caffe-face: from a checkout, or from a bare clone through git; None when neither is here."""
    if (CAFFE_FACE / path).is_file():
        return (CAFFE_FACE / path).read_text()
    shown = subprocess.run(["git", "-C", str(CAFFE_FACE), "show", f"HEAD:{path}"], capture_output=True,
                           text=True) if CAFFE_FACE.is_dir() else None
    return shown.stdout if shown is not None and shown.returncode == 0 else None


TINY = dict(widths=(4, 4, 8), iters=12, steps=(8,), batch=16)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("book59")
    train_db, test_db = ch5_9.make_databases(ch5_9.DIGITS, out / "data")
    numbers = ch5_9.train_variant("center", TINY, train_db, test_db, str(out), 1)
    figure, = ch5_9.draw(str(out), numbers)
    return out, numbers, figure, test_db


def test_a_small_lenet_pp_trains_and_writes_its_figure_and_model(trained):
    out, numbers, figure, _ = trained
    assert set(numbers) == {"accuracy_center", "compactness_center", "seconds_center"}
    assert 0.0 <= numbers["accuracy_center"] <= 1.0 and numbers["compactness_center"] > 0
    assert pathlib.Path(figure).stat().st_size > 1000
    assert (out / "lenet_pp_center.caffemodel").exists() and (out / "mnist_deploy.prototxt").exists()


def test_the_books_feature_dump_script_runs_against_the_trained_model(trained):
    out, _, _, test_db = trained
    dump = out / "features.txt"
    script = ROOT / "examples" / "book" / "center_loss_features.py"
    done = subprocess.run([sys.executable, str(script), str(out / "mnist_deploy.prototxt"),
                           str(out / "lenet_pp_center.caffemodel"), test_db, str(dump)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "read 2000 images" in done.stdout and "features (2000, 2)" in done.stdout
    rows = np.loadtxt(dump)
    # the first test batch of the TEST net (100 records, in database order) gave the same features
    kept = np.load(out / "ip1_center.npz")
    np.testing.assert_array_equal(rows[:100, 0], kept["labels"])
    np.testing.assert_allclose(rows[:100, 1:], kept["features"], rtol=1e-4, atol=1e-5)


def test_shifted_settings_train_on_padded_digits_cropped_back(tmp_path):
    import lmdb
    from brewnet.proto import caffe_pb2
    train_db, test_db = ch5_9.make_databases(ch5_9.DIGITS, tmp_path, shift=2)
    assert train_db.endswith("mnist_train_pad2_lmdb")
    shapes = []
    for path in (train_db, test_db):
        with lmdb.open(path, readonly=True, lock=False) as env, env.begin() as txn:
            datum = caffe_pb2.Datum.FromString(txn.get(b"00000000"))
            shapes.append((datum.channels, datum.height, datum.width))
            if path == train_db:
                image = np.frombuffer(datum.data, np.uint8).reshape(32, 32)
                assert not image[:2].any() and not image[:, :2].any() and image[2:30, 2:30].any()
    assert shapes == [(1, 32, 32), (1, 28, 28)]
    text = ch5_9.lenet_pp(train_db, test_db, crop=28)
    train_part, test_part = text.split('include { phase: TEST }', 1)
    assert "crop_size: 28" in train_part and "crop_size" not in test_part.split("layer", 1)[0]


def test_compactness_is_within_over_between_class_distances():
    feats = np.array([[0.0, 1], [0, -1], [10, 1], [10, -1]])
    assert ch5_9.compactness(feats, np.array([0, 0, 1, 1])) == pytest.approx(1 / 10)


@pytest.mark.skipif(caffe_face_file("mnist_example/mnist_solver.prototxt") is None,
                    reason="no caffe-face checkout or clone ($CAFFE_FACE)")
def test_caffe_face_mnist_example_trains_with_only_its_data_paths_changed(trained, tmp_path):
    out, _, _, test_db = trained
    net = caffe_face_file("mnist_example/mnist_train_test.prototxt")
    net = net.replace("mnist_example/data/mnist_train_lmdb", str(out / "data" / "mnist_train_lmdb"))
    net = net.replace("mnist_example/data/mnist_test_lmdb", test_db)
    (tmp_path / "mnist_example" / "mnist_snapshot").mkdir(parents=True)     # as in caffe-face's tree
    (tmp_path / "mnist_example" / "mnist_train_test.prototxt").write_text(net)
    solver_path = tmp_path / "mnist_example" / "mnist_solver.prototxt"
    solver_path.write_text(caffe_face_file("mnist_example/mnist_solver.prototxt"))
    cwd = os.getcwd()
    os.chdir(tmp_path)                       # the solver names its net relative to caffe-face's root
    try:
        solver = get_solver(str(solver_path))
        centers = solver.net.layer_by_name("center_loss").blobs[0]
        before = centers.data.numpy().copy()
        solver.step(2)
    finally:
        os.chdir(cwd)
    assert centers.shape == (10, 2)
    assert solver.net.layer_by_name("center_loss").loss_weights == [pytest.approx(0.01)]
    assert np.isfinite(float(solver.net.blobs["center_loss"].data))
    assert not np.array_equal(centers.data.numpy(), before)
