"""MemoryData: batches from arrays held in memory (Caffe's MemoryDataLayer; pycaffe's set_input_arrays).

    memory_data_param { batch_size: 64 channels: 1 height: 28 width: 28 }

`set_input_arrays(data, labels)` (alias `reset`) hands the layer N x C x H x W data and N labels, N a multiple
of batch_size; each Forward serves the next batch_size rows, wrapping round.  The arrays are used as they are
(no transform_param, as in Caffe's Reset).  `add_datum_vector` / `add_mat_vector` go through the
DataTransformer instead.  top[0] = data (batch x C x H x W), top[1] = labels (batch x 1 x 1 x 1).
Exact resume saves the row the next batch starts at, not the arrays: hand the arrays over again before the
solver restores (set_input_arrays starts again at row 0).
"""
import numpy as np
import torch

from ..core.registry import register_layer
from ..data.datum import stack_datums
from ..log import logger
from .base_data import BaseDataLayer


@register_layer("MemoryData")
class MemoryDataLayer(BaseDataLayer):
    not_recordable = "it copies the next batch of the arrays it was given on the host every iteration"
    exact_num_top_blobs = 2

    def data_layer_setup(self, bottom, top):
        param = self.param.memory_data_param
        self.batch_size = param.batch_size
        self.chw = (param.channels, param.height, param.width)
        self.expect(self.batch_size > 0 and all(d > 0 for d in self.chw),
                    f"Expect: batch_size, channels, height and width positive in memory_data_param, "
                    f"Actual: {self.batch_size}, {self.chw}")
        top[0].reshape((self.batch_size,) + self.chw)
        top[1].reshape((self.batch_size,))
        self.data = self.labels = None
        self.pos = 0
        self.has_new_data = False
        self.device, self.dtype = top[0].device, top[0].dtype

    def set_input_arrays(self, data, labels):
        """Serve these arrays from now on: data N x C x H x W, labels N (or N x 1 x 1 x 1)."""
        data = torch.as_tensor(np.asarray(data) if not isinstance(data, torch.Tensor) else data)
        labels = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
        num = data.shape[0] if data.dim() else 0
        self.expect(data.dim() == 4 and tuple(data.shape[1:]) == self.chw,
                    f"Expect: data array of shape N x {' x '.join(map(str, self.chw))}, "
                    f"Actual: {tuple(data.shape)}")
        self.expect(labels.numel() == num, f"Expect: one label per data row ({num}), Actual: {labels.numel()}")
        self.expect(num > 0 and num % self.batch_size == 0,
                    f"Expect: a number of rows that is a positive multiple of batch_size {self.batch_size}, "
                    f"Actual: {num}")
        if self.param.HasField("transform_param"):
            logger.warning("%s does not transform array data on Reset()", self.type)
        self.data = data.to(self.device, self.dtype)
        self.labels = labels.reshape(num).to(self.device, self.dtype)
        self.pos = 0

    reset = set_input_arrays

    def add_datum_vector(self, datums):
        """Transform Datums and serve them (Caffe's AddDatumVector)."""
        self._add(self.transformer(torch.from_numpy(stack_datums(datums))), [d.label for d in datums])

    def add_mat_vector(self, images, labels):
        """Transform H x W x C images and serve them (Caffe's AddMatVector)."""
        self._add(self.transformer.transform_images(images), labels)

    def _add(self, data, labels):
        self.expect(not self.has_new_data, "Can't add data until current data has been consumed.")
        self.expect(len(labels) > 0, "There is no datum to add.")
        self.expect(len(labels) % self.batch_size == 0,
                    f"Expect: the added data a multiple of the batch size {self.batch_size}, "
                    f"Actual: {len(labels)}")
        self.data, self.labels, self.pos = data.to(self.device, self.dtype), \
            torch.tensor(labels, dtype=self.dtype, device=self.device), 0
        self.has_new_data = True

    def set_batch_size(self, batch_size):
        self.expect(not self.has_new_data, "Can't change batch_size until current data has been consumed.")
        self.batch_size = int(batch_size)

    def state_dict(self):
        return {"pos": self.pos}

    def load_state_dict(self, state):
        pos = int(state["pos"])
        rows = None if self.data is None else self.data.shape[0]
        self.expect(pos >= 0 and (rows is None or pos < rows),
                    f"Expect: a saved position inside the {rows} rows held, Actual: row {pos}")
        self.pos = pos

    def forward(self, bottom, top):
        self.expect(self.data is not None, "MemoryData needs its arrays first: call set_input_arrays "
                                           "(or reset / add_datum_vector)")
        rows = slice(self.pos, self.pos + self.batch_size)
        top[0].reshape((self.batch_size,) + self.chw)
        top[1].reshape((self.batch_size, 1, 1, 1))
        top[0].data.copy_(self.data[rows])
        top[1].data.copy_(self.labels[rows].view(-1, 1, 1, 1))
        self.pos = (self.pos + self.batch_size) % self.data.shape[0]
        if self.pos == 0:
            self.has_new_data = False
