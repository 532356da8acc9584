"""caffe.classifier.Classifier: a Net that classifies H x W x K images (pycaffe's classifier.py).

    clf = caffe.Classifier('deploy.prototxt', 'weights.caffemodel', image_dims=(256, 256),
                           mean=mean_kxhxw, raw_scale=255, channel_swap=(2, 1, 0))
    probabilities = clf.predict([caffe.io.load_image('cat.jpg')])          # N x classes

predict() resizes every image to `image_dims`, then takes either the ten oversampled crops (four corners,
centre and their mirrors; their predictions are averaged) or the centre crop of the net's input size, runs
them through Transformer.preprocess and forward_all, and returns the first output blob.
"""
import numpy as np

from ..errors import BrewnetError
from ..proto import caffe_pb2
from . import io as caffe_io
from .net import Net


def configure_transformer(net, mean=None, input_scale=None, raw_scale=None, channel_swap=None):
    """A Transformer for the net's first input: H x W x K images in, K x H x W out, with the options set."""
    in_ = net.inputs[0] if net.inputs else None
    if in_ is None:
        raise BrewnetError(f"net '{net.name}' has no input blobs (Input layers) to classify with")
    transformer = caffe_io.Transformer({in_: net.blobs[in_].data.shape})
    transformer.set_transpose(in_, (2, 0, 1))
    if mean is not None:
        transformer.set_mean(in_, mean)
    if input_scale is not None:
        transformer.set_input_scale(in_, input_scale)
    if raw_scale is not None:
        transformer.set_raw_scale(in_, raw_scale)
    if channel_swap is not None:
        transformer.set_channel_swap(in_, channel_swap)
    return transformer


class Classifier(Net):
    """image_dims: the size images are scaled to before cropping (default: the net's input size)."""

    def __init__(self, model_file, pretrained_file, image_dims=None, mean=None, input_scale=None,
                 raw_scale=None, channel_swap=None):
        Net.__init__(self, model_file, caffe_pb2.TEST, weights=pretrained_file)
        self.transformer = configure_transformer(self, mean, input_scale, raw_scale, channel_swap)
        in_ = self.inputs[0]
        self.crop_dims = np.array(self.blobs[in_].data.shape[2:])
        self.image_dims = np.array(image_dims if image_dims is not None and len(image_dims) else self.crop_dims)

    def predict(self, inputs, oversample=True):
        """(N x classes) predictions for N H x W x K images; oversample averages the ten crops' predictions,
        otherwise the centre crop alone is used."""
        if len(inputs) == 0:
            raise BrewnetError("predict: no images given")
        if np.any(self.image_dims < self.crop_dims):
            raise BrewnetError(f"predict: image_dims {tuple(int(d) for d in self.image_dims)} smaller than the "
                               f"net's input {tuple(int(d) for d in self.crop_dims)}")
        h, w = (int(d) for d in self.image_dims)
        images = np.zeros((len(inputs), h, w, inputs[0].shape[2]), dtype=np.float32)
        for ix, image in enumerate(inputs):
            images[ix] = caffe_io.resize_image(image, (h, w))
        if oversample:
            images = caffe_io.oversample(images, self.crop_dims)
        else:
            top, left = ((self.image_dims - self.crop_dims) / 2.0).astype(int)
            ch, cw = self.crop_dims
            images = images[:, top:top + ch, left:left + cw, :]
        in_ = self.inputs[0]
        caffe_in = np.stack([self.transformer.preprocess(in_, image) for image in images])
        predictions = self.forward_all(**{in_: caffe_in})[self.outputs[0]]
        if oversample:
            predictions = predictions.reshape((len(predictions) // 10, 10, -1)).mean(axis=1)
        return predictions
