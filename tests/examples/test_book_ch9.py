"""Chapter 9 (quick version): FCN, dense CRF post-processing and CRF-as-RNN fine-tuning run end to end on a few
VOC-format digit images; the scoring is score.py's (fast_hist, pixel accuracy, mean IU over present classes)."""
import os

import numpy as np
import pytest

from examples.book import ch9
from examples.book.registry import Context, run_experiment


def test_confusion_and_mean_iu_follow_fcn_score_py():
    truth = np.array([[0, 0, 1, 255], [2, 2, 1, 0]], dtype=np.uint8)
    prediction = np.array([[0, 1, 1, 5], [2, 0, 1, 0]])
    hist = ch9.confusion(truth, prediction, classes=3)
    np.testing.assert_array_equal(hist, [[2, 1, 0], [0, 2, 0], [1, 0, 1]])     # the 255 pixel is left out
    m = ch9.measures(hist)
    assert m["pixel_accuracy"] == pytest.approx(5 / 7)
    # IU per class: 2 / (3 + 3 - 2), 2 / (2 + 3 - 2), 1 / (2 + 1 - 1): score.py's np.nanmean of diag / union
    assert m["mean_iu"] == pytest.approx(np.mean([2 / 4, 2 / 3, 1 / 2]))
    # A class in neither truth nor prediction does not count (score.py's nan, skipped by nanmean).
    assert ch9.measures(np.diag([3, 0, 2]))["mean_iu"] == 1.0


def test_quick_segmentation_runs_fcn_crf_and_crf_as_rnn(tmp_path):
    result = run_experiment("9", Context(quick=True, out_root=str(tmp_path)))
    n = result.numbers
    for name in ("fcn", "crf", "crfrnn"):
        assert 0.0 < n[name]["mean_iu"] <= 1.0 and 0.5 < n[name]["pixel_accuracy"] <= 1.0
    assert n["fcn_loss_last"] < n["fcn_loss_first"]
    assert n["crf_params"]["theta_beta"] in ch9.QUICK_GRID["theta_beta"]
    assert n["tune_crf_iu"] >= n["tune_fcn_iu"] - 0.02
    # Fine-tuning moved the CRF's own parameters away from the message's initial 3, 5 and -1.
    spatial, bilateral, compatibility = n["learned_diagonals"]
    assert abs(spatial - 3) > 1e-3 and abs(bilateral - 5) > 1e-3 and abs(compatibility + 1) > 1e-3
    names = sorted(os.path.basename(p) for p in result.figures)
    assert names == ["loss.png", "segmentations.png"] and all(os.path.getsize(p) > 5000 for p in result.figures)
    # The VOC folder is a real one: JPEGs, palette PNGs, the two listings.
    folder = tmp_path / "9" / "quick" / "voc_digits"
    assert len((folder / "ImageSets" / "Segmentation" / "train.txt").read_text().split()) == 13
    assert len(list((folder / "SegmentationClass").glob("*.png"))) == 17
