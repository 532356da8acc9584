"""caffe.Classifier, caffe.Detector and the classify tool on LeNet (Caffe's weights), checked against the same
pipeline done by hand: crop, preprocess, one forward."""
import numpy as np
import pytest

import caffe
from brewnet.errors import BrewnetError
from brewnet.tools import classify

from .conftest import LENET_DEPLOY


@pytest.fixture
def model(tmp_path, golden):
    path = tmp_path / "deploy.prototxt"
    path.write_text(LENET_DEPLOY.replace("dim: 64 dim: 1", "dim: 10 dim: 1"))
    return str(path), str(golden / "nets" / "lenet_test.caffemodel")


@pytest.fixture
def images(golden):
    """Three MNIST digits on a 32 x 32 canvas, H x W x 1 in [0, 1]."""
    digits = np.load(golden / "files" / "mnist1000.npz")["images"][:3] / 255.0
    canvas = np.zeros((3, 32, 32, 1), np.float32)
    canvas[:, 1:29, 3:31, 0] = digits
    return list(canvas)


def reference_net(model, batch):
    net = caffe.Net(model[0], caffe.TEST, weights=model[1])
    net.blobs["data"].reshape(batch, 1, 28, 28)
    net.reshape()
    return net


def test_predict_oversampled_averages_ten_crops(model, images):
    clf = caffe.Classifier(*model, image_dims=(32, 32), raw_scale=255 / 256.0)
    assert clf.transformer.transpose["data"] == (2, 0, 1)
    predictions = clf.predict(images)
    assert predictions.shape == (3, 10)
    crops = []
    for im in images:
        five = [im[:28, :28], im[:28, 4:], im[4:, :28], im[4:, 4:], im[2:30, 2:30]]
        crops += five + [c[:, ::-1] for c in five]
    batch = np.stack([c.transpose(2, 0, 1) * (255 / 256.0) for c in crops])
    probs = reference_net(model, 30).forward(data=batch)["prob"]
    np.testing.assert_allclose(predictions, probs.reshape(3, 10, 10).mean(axis=1), rtol=1e-4, atol=1e-6)


def test_predict_centre_only_with_mean(model, images):
    mean = np.full((1, 28, 28), 0.1, np.float32)
    clf = caffe.Classifier(*model, image_dims=(32, 32), mean=mean, input_scale=2.0)
    predictions = clf.predict(images, oversample=False)
    batch = np.stack([(im[2:30, 2:30].transpose(2, 0, 1) - 0.1) * 2.0 for im in images])
    expected = reference_net(model, 3).forward(data=batch)["prob"]
    np.testing.assert_allclose(predictions, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(predictions.sum(axis=1), 1, rtol=1e-5)


def test_predict_scales_images_to_image_dims(model, images):
    clf = caffe.Classifier(*model)                           # default image_dims: the net's 28 x 28
    predictions = clf.predict(images[:2], oversample=False)
    resized = [caffe.io.resize_image(im, (28, 28)) for im in images[:2]]
    expected = reference_net(model, 2).forward(data=np.stack([r.transpose(2, 0, 1) for r in resized]))["prob"]
    np.testing.assert_allclose(predictions, expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(BrewnetError, match="image_dims \\(20, 20\\) smaller than the net's input \\(28, 28\\)"):
        caffe.Classifier(*model, image_dims=(20, 20)).predict(images)


def test_detector_windows(model, images, tmp_path):
    det = caffe.Detector(*model)
    image = images[0]
    windows = [(0, 0, 28, 28), (2, 3, 30, 31), (0, 0, 16, 16)]
    detections = det.detect_windows([(image, windows)])
    assert [tuple(d["window"]) for d in detections] == windows
    crops = [image[0:28, 0:28], image[2:30, 3:31], caffe.io.resize_image(image[0:16, 0:16], (28, 28))]
    expected = reference_net(model, 3).forward(data=np.stack([c.transpose(2, 0, 1) for c in crops]))["prob"]
    for d, e in zip(detections, expected):
        np.testing.assert_allclose(d["prediction"], e, rtol=1e-4, atol=1e-6)


def test_detector_context_padding_fills_with_the_mean(model):
    det = caffe.Detector(*model, mean=np.array([0.3]), context_pad=2)
    crop = det.crop(np.ones((40, 40, 1), np.float32), (0, 0, 20, 20))
    # the window grows by 28/24 around its centre to (-2, -2, 23, 23): two rows and columns lie outside the
    # image and hold the mean, the rest is the (constant) image warped into place
    assert crop.shape == (28, 28, 1)
    np.testing.assert_allclose(crop[:2], 0.3)
    np.testing.assert_allclose(crop[:, :2], 0.3)
    np.testing.assert_allclose(crop[2:, 2:], 1.0)
    with pytest.raises(BrewnetError, match="selective search"):
        det.detect_selective_search(["x.jpg"])


def test_classify_tool(model, images, tmp_path, capsys):
    np.save(tmp_path / "inputs.npy", np.stack(images))
    out = tmp_path / "predictions.npy"
    argv = [str(tmp_path / "inputs.npy"), str(out), "--model_def", model[0], "--pretrained_model", model[1],
            "--images_dim", "32,32", "--raw_scale", "1", "--channel_swap", "", "--center_only"]
    assert classify.main(argv) == 0
    assert "Classifying 3 inputs." in capsys.readouterr().out
    clf = caffe.Classifier(*model, image_dims=(32, 32), raw_scale=1.0)
    np.testing.assert_allclose(np.load(out), clf.predict(images, oversample=False), rtol=1e-5, atol=1e-7)
    assert classify.main([str(tmp_path / "nothing"), str(out), "--model_def", model[0],
                          "--pretrained_model", model[1]]) == 1
