"""DataTransformer: the per-image preprocessing of Caffe's data layers (book 5.8), a whole batch at a time.

For each image x (C x H x W, uint8 or float) Caffe computes, in this order,

    crop    rows h_off .. h_off+crop_size, columns w_off .. w_off+crop_size
            (TRAIN: h_off, w_off uniform random per image; TEST: the centre, (H - crop_size) // 2)
    mirror  with `mirror: true`, each image is flipped left-right with probability 1/2
    mean    x - mean_file[c, h, w] (the mean image, indexed at the uncropped position)
            or x - mean_value[c] (one value, or one per channel)
    scale   times `scale`

in the blob's dtype: y = (x - mean) * scale.  Every step is one tensor operation over the batch; the random
crop/mirror is a gather with per-image offsets.  Random draws come from the transformer's own generator,
seeded from torch's global one (as Caffe seeds each transformer from caffe_rng).
"""
import numpy as np
import torch

from ..core.blob import proto_shape
from ..errors import DataError
from ..log import logger
from ..proto import caffe_pb2
from ..proto.io import read_binary
from . import datum as datum_mod

TRAIN = caffe_pb2.TRAIN


def load_mean_file(path):
    """A mean binaryproto (compute_image_mean's output) as a C x H x W float32 tensor."""
    proto = read_binary(path, caffe_pb2.BlobProto())
    shape = proto_shape(proto)
    values = np.asarray(proto.double_data if len(proto.double_data) else proto.data, dtype=np.float32)
    if values.size != int(np.prod(shape)):
        raise DataError(f"mean file {path}: {values.size} values for shape {shape}")
    # Caffe keeps the mean as a 1 x C x H x W blob: drop leading unit axes.
    while len(shape) > 3 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 3:
        raise DataError(f"mean file {path}: Expect: a 1 x C x H x W mean, Actual: shape {shape}")
    return torch.from_numpy(values.reshape(shape))


class DataTransformer:
    def __init__(self, param, phase, device=None, dtype=torch.float32):
        self.param, self.phase = param, phase
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype
        self.crop_size, self.scale, self.mirror = param.crop_size, param.scale, param.mirror
        if param.force_color and param.force_gray:
            raise DataError("transform_param: cannot set both force_color and force_gray")
        if param.HasField("mean_file") and len(param.mean_value):
            raise DataError("transform_param: cannot specify mean_file and mean_value at the same time")
        self.mean = None
        if param.HasField("mean_file"):
            logger.info("Loading mean file from: %s", param.mean_file)
            self.mean_path = param.mean_file
            self.mean = load_mean_file(param.mean_file).to(self.device, dtype)
        self.mean_values = torch.tensor(list(param.mean_value), dtype=dtype, device=self.device)
        self.generator = None
        if self.mirror or (phase == TRAIN and self.crop_size):
            self.generator = torch.Generator().manual_seed(int(torch.randint(0, 2 ** 62, ())))

    # --- shapes --------------------------------------------------------------------------------------------
    def output_shape(self, shape):
        """The C x H x W an image of shape C x H x W becomes (Caffe's InferBlobShape)."""
        channels, height, width = shape
        if channels <= 0:
            raise DataError(f"transform: Expect: channels > 0, Actual: image shape {tuple(shape)}")
        if self.crop_size:
            if height < self.crop_size or width < self.crop_size:
                raise DataError(f"transform: Expect: image at least crop_size {self.crop_size} high and wide, "
                                f"Actual: {height} x {width}")
            return channels, self.crop_size, self.crop_size
        return channels, height, width

    def infer_shape(self, datum):
        """Output shape for a Datum (decoding an encoded one with force_color/force_gray)."""
        if datum.encoded:
            image = datum_mod.datum_to_array(datum, self.param.force_color, self.param.force_gray)
            return self.output_shape(image.shape)
        return self.output_shape((datum.channels, datum.height, datum.width))

    # --- batch transforms ----------------------------------------------------------------------------------
    def transform_datums(self, datums, keys=None, expected=None):
        """Datums (one shape) -> transformed N x C x h x w tensor.  `expected`: the C x H x W the records
        should have (the layer's first record), which settles which record is the odd one in a batch."""
        if not any(d.encoded for d in datums) and (self.param.force_color or self.param.force_gray):
            logger.error("force_color and force_gray only for encoded datum")
        if all(not d.encoded for d in datums):
            array = datum_mod.stack_datums(datums, keys=keys, expected=expected)
            return self(torch.from_numpy(array))
        arrays = datum_mod.decode_datums(datums, self.param.force_color, self.param.force_gray, keys)
        return self._transform_arrays(arrays, keys)

    def _transform_arrays(self, arrays, keys=None):
        """C x H x W arrays: one batched transform when they share a size, else one by one (a crop may
        still bring images of different sizes to one output size, as in Caffe)."""
        if all(a.shape == arrays[0].shape for a in arrays):
            return self(torch.from_numpy(np.stack(arrays)))
        outputs = [self(torch.from_numpy(np.ascontiguousarray(a[np.newaxis]))) for a in arrays]
        for i, out in enumerate(outputs):
            if out.shape != outputs[0].shape:
                datum_mod.size_mismatch(keys, i, arrays[i].shape, arrays[0].shape)
        return torch.cat(outputs)

    def transform_images(self, images, keys=None):
        """H x W x C images (OpenCV layout, all of one size) -> transformed N x C x h x w tensor."""
        return self._transform_arrays([image.transpose(2, 0, 1) for image in images], keys)

    def __call__(self, batch):
        """Transform an N x C x H x W tensor (uint8 or float) into a new tensor of the layer's dtype."""
        if batch.dim() != 4:
            raise DataError(f"transform: Expect: an N x C x H x W batch, Actual: shape {tuple(batch.shape)}")
        num, channels, height, width = batch.shape
        _, out_h, out_w = self.output_shape((channels, height, width))
        x = batch.to(self.device, non_blocking=True)
        if self.mean is not None:
            if tuple(self.mean.shape) != (channels, height, width):
                raise DataError(f"mean file {self.mean_path}: Expect: mean of shape {(channels, height, width)} "
                                f"(the data's), Actual: {tuple(self.mean.shape)}")
            # the mean image is indexed at the uncropped position: subtract before cropping
            x = self._crop_and_mirror(x.to(self.dtype) - self.mean, out_h, out_w)
        else:
            # crop the (uint8) input first: the float work then covers only the output pixels
            x = self._crop_and_mirror(x, out_h, out_w).to(self.dtype)
            if x.untyped_storage().data_ptr() == batch.untyped_storage().data_ptr():
                x = x.clone()   # the in-place steps below must never write into the caller's tensor
            if len(self.mean_values):
                if len(self.mean_values) not in (1, channels):
                    raise DataError(f"transform_param: Expect: 1 mean_value or one per channel ({channels}), "
                                    f"Actual: {len(self.mean_values)}")
                x.sub_(self.mean_values.view(1, -1, 1, 1))
        if self.scale != 1:
            x.mul_(self.scale)
        return x.contiguous()

    def _crop_and_mirror(self, x, out_h, out_w):
        num, _, height, width = x.shape
        flips = None
        if self.mirror:  # drawn before the crop offsets, as in Caffe
            flips = torch.randint(0, 2, (num,), generator=self.generator).bool()
        if self.crop_size and self.phase == TRAIN:
            h_off = torch.randint(0, height - out_h + 1, (num,), generator=self.generator)
            w_off = torch.randint(0, width - out_w + 1, (num,), generator=self.generator)
            rows = h_off[:, None] + torch.arange(out_h)
            cols = w_off[:, None] + torch.arange(out_w)
            if flips is not None:
                cols = torch.where(flips[:, None], cols.flip(1), cols)
            rows, cols = rows.to(x.device), cols.to(x.device)
            # two gathers along one axis each (rows, then columns): per-image offsets and flips in one go
            x = torch.gather(x, 2, rows[:, None, :, None].expand(num, x.shape[1], out_h, width))
            return torch.gather(x, 3, cols[:, None, None, :].expand(num, x.shape[1], out_h, out_w))
        h_off, w_off = (height - out_h) // 2, (width - out_w) // 2
        x = x[:, :, h_off:h_off + out_h, w_off:w_off + out_w]
        if flips is not None and bool(flips.any()):
            flips = flips.to(x.device)[:, None, None, None]
            x = torch.where(flips, x.flip(3), x)
        return x
