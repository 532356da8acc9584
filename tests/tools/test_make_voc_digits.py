"""make_voc_digits: Caffe-style flags in, a VOC2012-layout folder out (brewnet/data/voc_digits.py)."""
import numpy as np

from brewnet.data.idx_sets import load_idx_set
from brewnet.data.mnist import write_idx_images, write_idx_labels
from brewnet.data.voc_digits import load_voc_pair, make_voc_digits
from brewnet.tools import make_voc_digits as tool


def test_flags_write_what_the_function_writes(tmp_path):
    assert tool.main(["-train", "2", "--val=1", "-seed", "5", "-min_size", "70", "-max_size", "80",
                      str(tmp_path / "cli")]) == 0
    make_voc_digits(tmp_path / "lib", train=2, val=1, seed=5, min_size=70, max_size=80)
    for name in ("JPEGImages/train_000001.jpg", "SegmentationClass/val_000000.png", "ImageSets/Segmentation/val.txt"):
        assert (tmp_path / "cli" / name).read_bytes() == (tmp_path / "lib" / name).read_bytes()
    assert (tmp_path / "cli" / "ImageSets/Segmentation/train.txt").read_text() == "train_000000\ntrain_000001\n"
    image, label = load_voc_pair(tmp_path / "cli", "train_000000")
    assert 70 <= label.shape[0] <= 80 and image.shape == label.shape + (3,)


def test_idx_folder_argument_chooses_the_digits(tmp_path):
    """A folder whose training set is only the digit 7 and test set only 2: the labels say so."""
    data = load_idx_set()
    sevens, twos = data.train_images[data.train_labels == 7][:5], data.test_images[data.test_labels == 2][:5]
    write_idx_images(tmp_path / "train-images-idx3-ubyte", sevens)
    write_idx_labels(tmp_path / "train-labels-idx1-ubyte", [7] * 5)
    write_idx_images(tmp_path / "t10k-images-idx3-ubyte.gz", twos)
    write_idx_labels(tmp_path / "t10k-labels-idx1-ubyte.gz", [2] * 5)
    assert tool.main(["-train", "2", "-val", "2", str(tmp_path), str(tmp_path / "out")]) == 0
    for split, digit in (("train", 7), ("val", 2)):
        for i in range(2):
            _, label = load_voc_pair(tmp_path / "out", f"{split}_{i:06d}")
            assert set(np.unique(label)) == {0, digit + 1, 255}


def test_bad_flags_are_one_error_naming_the_value(tmp_path, capfd):
    for argv, message in ((["-min_size", "100", "-max_size", "90"], "max_size = 90; Expect: at least min_size = 100"),
                          (["-train", "-4"], "train = -4; Expect: a number of images >= 0"),
                          ([str(tmp_path / "none")], f"data folder {tmp_path / 'none'} does not exist")):
        assert tool.main(argv + [str(tmp_path / "out")]) == 1
        err = capfd.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("E") and err[0].endswith(message), err
        assert not (tmp_path / "out").exists()
    assert tool.main([]) == 1 and "Usage:" in capfd.readouterr().err
    assert tool.main(["-nosuchflag", "1", "out"]) == 1
    assert "unknown command line flag 'nosuchflag'" in capfd.readouterr().err
