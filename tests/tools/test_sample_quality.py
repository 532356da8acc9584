"""brewnet.tools.sample_quality: class histogram, inception-style score and best code->digit accuracy, with a
LeNet classifier trained on the bundled digits."""
import math

import numpy as np
import pytest
import torch

from brewnet.data.idx_sets import load_idx_set
from brewnet.tools import sample_quality as sq


def test_inception_score_by_hand():
    # p(y) = [0.75, 0.25]; KL rows: log(4/3) and 0.5 log(2/3) + 0.5 log 2.
    p = np.array([[1.0, 0.0], [0.5, 0.5]])
    expected = math.exp((math.log(4 / 3) + 0.5 * math.log(2 / 3) + 0.5 * math.log(2)) / 2)
    assert sq.inception_score(p) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(1.240806, abs=1e-6)


def test_inception_score_bounds():
    assert sq.inception_score(np.eye(10)) == pytest.approx(10.0)                  # confident, all digits
    assert sq.inception_score(np.tile(np.eye(10)[1], (50, 1))) == pytest.approx(1.0)    # all "1": collapse
    assert sq.inception_score(np.full((7, 10), 0.1)) == pytest.approx(1.0)      # nothing recognisable
    with pytest.raises(sq.SampleQualityError, match="N x classes"):
        sq.inception_score(np.zeros(10))


def test_histogram_counts_top_predictions():
    p = np.array([[0.1, 0.9, 0], [0.2, 0.7, 0.1], [0, 0, 1]])
    assert sq.class_histogram(p, classes=4).tolist() == [0, 2, 1, 0]


def test_best_code_accuracy_finds_the_permutation():
    codes = np.repeat(np.arange(10), 10)
    digit_of = np.array([3, 7, 0, 1, 9, 2, 8, 5, 4, 6])
    predicted = digit_of[codes].copy()
    predicted[::10] = (predicted[::10] + 1) % 10           # one mistake per code
    accuracy, mapping = sq.best_code_accuracy(codes, predicted)
    assert accuracy == pytest.approx(0.9)
    assert mapping == {c: int(d) for c, d in enumerate(digit_of)}
    with pytest.raises(sq.SampleQualityError, match="3 codes for 2 samples"):
        sq.best_code_accuracy([0, 1, 2], [0, 1])


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A LeNet trained 80 iterations (the measure's own fallback, shortened), kept for the module; on one
    thread, as the book's laboratory trains (the machine is shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return sq.DigitClassifier(train_iterations=80, cache_dir=str(tmp_path_factory.mktemp("lenet")))
    finally:
        torch.set_num_threads(threads)


def test_the_trained_classifier_reads_real_digits(classifier):
    digits = load_idx_set()
    assert classifier.trained_accuracy > 0.8
    images, labels = digits.test_images[:300], digits.test_labels[:300]
    report = sq.measure(images, classifier, value_range=(0, 256))
    assert report.n == 300 and report.histogram.sum() == 300
    assert report.score > 5.0                   # real digits: confident and spread over the classes
    np.testing.assert_allclose(report.histogram, np.bincount(labels, minlength=10), atol=25)
    codes = labels                              # a "code" that is the digit itself
    report = sq.measure(images, classifier, value_range=(0, 256), codes=codes)
    assert report.code_accuracy > 0.8 and report.code_mapping[7] == 7
    assert "best code->digit accuracy" in report.line()


def test_a_collapsed_generator_scores_near_one(classifier):
    one = load_idx_set().test_images[np.flatnonzero(load_idx_set().test_labels == 1)[:1]]
    report = sq.measure(np.repeat(one, 40, axis=0) / 128.0 - 1.0, classifier, value_range=(-1, 1))
    assert report.histogram[1] == 40 and report.score == pytest.approx(1.0)


def test_bad_shapes_and_missing_weights_are_named(classifier, tmp_path):
    with pytest.raises(sq.SampleQualityError, match=r"N x 1 x 28 x 28.*Actual: \(2, 3, 28, 28\)"):
        classifier.probabilities(np.zeros((2, 3, 28, 28)))
    with pytest.raises(sq.SampleQualityError, match="nothing.caffemodel: no such file"):
        sq.DigitClassifier(str(tmp_path / "nothing.caffemodel"))


def test_command_line(classifier, tmp_path, capsys):
    digits = load_idx_set()
    np.save(tmp_path / "samples.npy", digits.test_images[:100] / 256.0)
    assert sq.main([str(tmp_path / "samples.npy"), "--weights", classifier.weights]) == 0
    out = capsys.readouterr().out
    assert out.startswith("score ") and "100 samples" in out
