"""VOC digits: the seeded VOC2012-layout segmentation set drawn from the bundled MNIST digits."""
import numpy as np
import pytest
from PIL import Image

from brewnet.data import voc_digits
from brewnet.data.idx_sets import load_idx_set
from brewnet.data.voc_digits import load_voc_pair, make_voc_digits
from brewnet.errors import DataError, DataValueError

SUBFOLDERS = ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation")


def folder_bytes(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    return root, make_voc_digits(root, train=4, val=3, seed=7)


def test_layout_and_listings_name_exactly_the_files_written(small_set):
    root, manifest = small_set
    for split, count in (("train", 4), ("val", 3)):
        listed = (root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().splitlines()
        assert listed == [entry["id"] for entry in manifest[split]] and len(listed) == count
    ids = [entry["id"] for split in ("train", "val") for entry in manifest[split]]
    assert sorted(p.stem for p in (root / "JPEGImages").iterdir()) == sorted(ids)
    assert sorted(p.stem for p in (root / "SegmentationClass").iterdir()) == sorted(ids)
    assert {p.suffix for p in (root / "JPEGImages").iterdir()} == {".jpg"}
    assert {p.suffix for p in (root / "SegmentationClass").iterdir()} == {".png"}
    assert sorted(p.name for p in root.iterdir()) == ["ImageSets", "JPEGImages", "SegmentationClass"]


def test_png_is_palette_mode_with_vocs_colours_and_jpg_is_rgb_of_its_size(small_set):
    root, manifest = small_set
    for entry in manifest["train"] + manifest["val"]:
        with Image.open(root / "SegmentationClass" / f"{entry['id']}.png") as png, \
                Image.open(root / "JPEGImages" / f"{entry['id']}.jpg") as jpeg:
            assert png.mode == "P" and jpeg.mode == "RGB" and jpeg.format == "JPEG"
            assert png.size == jpeg.size == (entry["width"], entry["height"])
            palette = png.getpalette()
            assert 64 <= entry["height"] <= 128 and 64 <= entry["width"] <= 128
    # VOC2012's colours: background black, aeroplane (1) maroon, bicycle (2) green, ..., person (15), ignore
    assert palette[:12] == [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0]
    assert palette[15 * 3:16 * 3] == [192, 128, 128] and palette[255 * 3:] == [224, 224, 192]


def test_labels_hold_the_digits_placed(small_set):
    """Values only in {0..10, 255}; each placed digit's class fills part of its box, each class in the label
    is a digit the manifest records, and every stroke pixel is ringed by ignore pixels, never by background."""
    root, manifest = small_set
    sources = {"train": load_idx_set().train_labels, "val": load_idx_set().test_labels}
    for split in ("train", "val"):
        for entry in manifest[split]:
            image, label = load_voc_pair(root, entry["id"])
            assert image.shape == (entry["height"], entry["width"], 3) and image.dtype == np.uint8
            assert label.shape == (entry["height"], entry["width"]) and label.dtype == np.uint8
            assert set(np.unique(label)) <= set(range(11)) | {255}
            assert 1 <= len(entry["digits"]) <= 4
            classes = set(np.unique(label)) - {0, 255}
            assert classes == {d["class"] for d in entry["digits"]}
            for digit in entry["digits"]:
                y, x, h, w = digit["box"]
                assert digit["class"] == digit["digit"] + 1 == sources[split][digit["source_index"]] + 1
                assert 22 <= h <= 56 and (label[y:y + h, x:x + w] == digit["class"]).sum() >= 20
            stroke = (label > 0) & (label < 255)
            near_background = voc_digits._dilate(label == 0, 1)
            assert not (stroke & near_background).any()


def test_digit_colour_differs_from_the_background_around_it(small_set):
    """The label edge is a colour edge: in each digit's box, its mean stroke colour and the mean colour of the
    background just outside the ignore ring are over 100 apart (sum over R, G, B; the least of 669 digits
    drawn with seed 0 was 117)."""
    root, manifest = small_set
    for entry in manifest["train"] + manifest["val"]:
        image, label = load_voc_pair(root, entry["id"])
        for digit in entry["digits"]:
            y, x, h, w = digit["box"]
            box, pixels = label[y:y + h, x:x + w], image[y:y + h, x:x + w].astype(float)
            outside = voc_digits._dilate(box == 255, 2) & (box == 0)
            gap = np.abs(pixels[box == digit["class"]].mean(axis=0) - pixels[outside].mean(axis=0)).sum()
            assert gap > 100, (entry["id"], digit, gap)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, small_set):
    root, _ = small_set
    make_voc_digits(tmp_path / "again", train=4, val=3, seed=7)
    assert folder_bytes(tmp_path / "again") == folder_bytes(root)
    make_voc_digits(tmp_path / "other", train=4, val=3, seed=8)
    other, first = folder_bytes(tmp_path / "other"), folder_bytes(root)
    assert other.keys() == first.keys()
    assert all(other[name] != first[name] for name in other if not name.endswith(".txt"))


def test_validation_images_do_not_depend_on_the_training_count(tmp_path, small_set):
    root, _ = small_set
    make_voc_digits(tmp_path, train=1, val=3, seed=7)
    for i in range(3):
        name = f"JPEGImages/val_{i:06d}.jpg"
        assert (tmp_path / name).read_bytes() == (root / name).read_bytes()


def test_size_range_and_draw_image_in_memory():
    data = load_idx_set()
    rng = np.random.default_rng(3)
    for _ in range(5):
        image, label, digits = voc_digits.draw_image(data.test_images, data.test_labels, rng, 40, 48, 2)
        assert 40 <= label.shape[0] <= 48 and 40 <= label.shape[1] <= 48 and image.shape == label.shape + (3,)
        assert 1 <= len(digits) <= 2


@pytest.mark.parametrize("kwargs,message", [
    ({"min_size": 100, "max_size": 90}, "max_size = 90; Expect: at least min_size = 100"),
    ({"train": -1}, "train = -1; Expect: a number of images >= 0"),
    ({"val": -3}, "val = -3; Expect: a number of images >= 0"),
    ({"seed": -2}, "seed = -2; Expect: an integer >= 0"),
    ({"min_size": 16}, "min_size = 16; Expect: at least 32 pixels"),
])
def test_bad_arguments_name_the_value_and_write_nothing(tmp_path, kwargs, message):
    with pytest.raises(DataValueError, match="^make_voc_digits: " + message.replace("(", r"\(")):
        make_voc_digits(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_missing_idx_folder_and_missing_pair(tmp_path):
    with pytest.raises(DataError, match=f"data folder {tmp_path / 'none'} does not exist"):
        make_voc_digits(tmp_path / "out", train=1, val=1, idx_folder=tmp_path / "none")
    assert not (tmp_path / "out").exists()
    with pytest.raises(DataValueError, match="JPEGImages/train_000009.jpg: no such file"):
        load_voc_pair(tmp_path, "train_000009")
