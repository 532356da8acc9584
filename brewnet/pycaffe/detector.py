"""caffe.detector.Detector: classify windows (crops) of images, R-CNN style (pycaffe's detector.py).

    det = caffe.Detector('deploy.prototxt', 'weights.caffemodel', raw_scale=255, context_pad=16)
    detections = det.detect_windows([('img.jpg', [(ymin, xmin, ymax, xmax), ...])])
    # [{'filename': 'img.jpg', 'window': (ymin, xmin, ymax, xmax), 'prediction': array}, ...]

Each window is cut out (with `context_pad` pixels of surrounding context in net-input scale, the part outside
the image filled with the mean), warped to the net's input size and classified.  Selective-search proposals
(pycaffe's detect_selective_search) need the MATLAB selective_search_ijcv_with_python package, which is not
part of brewnet; give your own windows to detect_windows.
"""
import numpy as np

from ..errors import BrewnetError
from ..proto import caffe_pb2
from . import io as caffe_io
from .classifier import configure_transformer
from .net import Net


class Detector(Net):
    def __init__(self, model_file, pretrained_file, mean=None, input_scale=None, raw_scale=None,
                 channel_swap=None, context_pad=None):
        Net.__init__(self, model_file, caffe_pb2.TEST, weights=pretrained_file)
        self.transformer = configure_transformer(self, mean, input_scale, raw_scale, channel_swap)
        self.configure_crop(context_pad)

    def detect_windows(self, images_windows):
        """images_windows: iterable of (image filename or H x W x K array, list of windows); a window is
        (ymin, xmin, ymax, xmax) in pixels, max exclusive.  Returns one dict per window, in order."""
        images_windows = [(image, [np.asarray(w, dtype=int) for w in windows])
                          for image, windows in images_windows]
        crops = []
        for image, windows in images_windows:
            array = caffe_io.load_image(image) if isinstance(image, str) else np.asarray(image, np.float32)
            crops.extend(self.crop(array, window) for window in windows)
        if not crops:
            return []
        in_ = self.inputs[0]
        caffe_in = np.stack([self.transformer.preprocess(in_, crop) for crop in crops])
        predictions = self.forward_all(**{in_: caffe_in})[self.outputs[0]]
        detections, ix = [], 0
        for image, windows in images_windows:
            for window in windows:
                detections.append({"window": window, "prediction": predictions[ix],
                                   "filename": image if isinstance(image, str) else None})
                ix += 1
        return detections

    def detect_selective_search(self, image_fnames):
        raise BrewnetError("selective search proposals are not available in brewnet (they need the MATLAB "
                           "selective_search_ijcv_with_python package); compute windows and call "
                           "detect_windows([(filename, windows), ...])")

    def crop(self, im, window):
        """The window (ymin, xmin, ymax, xmax) of H x W x K image `im`, with context padding if configured."""
        window = np.asarray(window, dtype=int)
        if not self.context_pad:
            crop = im[window[0]:window[2], window[1]:window[3]]
            if crop.size == 0:
                raise BrewnetError(f"window {tuple(window)} is empty inside the {im.shape[0]} x {im.shape[1]} image")
            return crop
        # Grow the box so that after warping to crop_size, context_pad pixels of it are context.
        crop_size = self.blobs[self.inputs[0]].width       # square inputs, as in R-CNN
        scale = crop_size / (1.0 * crop_size - self.context_pad * 2)
        half_h = (window[2] - window[0] + 1) / 2.0
        half_w = (window[3] - window[1] + 1) / 2.0
        center = (window[0] + half_h, window[1] + half_w)
        box = np.round(np.tile(center, 2) + scale * np.array((-half_h, -half_w, half_h, half_w)))
        full_h, full_w = box[2] - box[0] + 1, box[3] - box[1] + 1
        scale_h, scale_w = crop_size / full_h, crop_size / full_w
        pad_y = int(round(max(0, -box[0]) * scale_h))      # how much of the box lies outside the image
        pad_x = int(round(max(0, -box[1]) * scale_w))
        im_h, im_w = im.shape[:2]
        box = np.clip(box, 0.0, [im_h, im_w, im_h, im_w]).astype(int)
        clip_h, clip_w = box[2] - box[0] + 1, box[3] - box[1] + 1
        if clip_h <= 0 or clip_w <= 0:
            raise BrewnetError(f"window {tuple(window)} lies outside the {im_h} x {im_w} image")
        crop_h = min(int(round(clip_h * scale_h)), crop_size - pad_y)
        crop_w = min(int(round(clip_w * scale_w)), crop_size - pad_x)
        context = caffe_io.resize_image(im[box[0]:box[2], box[1]:box[3]], (crop_h, crop_w))
        crop = np.ones(self.crop_dims, dtype=np.float32) * self.crop_mean
        crop[pad_y:pad_y + crop_h, pad_x:pad_x + crop_w] = context
        return crop

    def configure_crop(self, context_pad):
        """Crop size (H x W x K, the net input untransposed) and the mean to fill context padding with."""
        in_ = self.inputs[0]
        transpose = self.transformer.transpose[in_]
        inverse = list(np.argsort(transpose))
        self.crop_dims = np.array(self.blobs[in_].data.shape[1:])[inverse]
        self.context_pad = context_pad
        if not context_pad:
            return
        mean = self.transformer.mean.get(in_)
        if mean is None:
            self.crop_mean = np.zeros(self.crop_dims, dtype=np.float32)
            return
        # The padding is in raw image space: undo the transpose, channel swap and raw scale of the mean.
        crop_mean = np.broadcast_to(mean, self.blobs[in_].data.shape[1:]).transpose(inverse).astype(np.float32)
        channel_order = self.transformer.channel_swap.get(in_)
        if channel_order is not None:
            crop_mean = crop_mean[:, :, np.argsort(channel_order)]
        raw_scale = self.transformer.raw_scale.get(in_)
        if raw_scale is not None:
            crop_mean = crop_mean / raw_scale
        self.crop_mean = crop_mean
