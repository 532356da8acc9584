"""HDF5Data and HDF5Output: rows of HDF5 datasets in, and blobs out (Caffe's HDF5 layers).

HDF5Data:
    hdf5_data_param { source: "train_h5_list.txt" batch_size: 64 shuffle: false }
`source` lists .h5 files, one per line (a relative name is looked up from the working directory, as Caffe
does, then next to the list file).  Each top reads the dataset of its own name: every dataset of a file has
the same number of rows, and top i is batch_size x (dataset i's shape without its first axis).  Files are
read in list order, rows in order, wrapping round to the first file; with `shuffle`, the file order is
shuffled at each pass and the rows of each file as it is loaded.  No transform_param.  In TRAIN with several
solvers, rank r of n takes rows r, r+n, ... of the stream (Caffe's Skip).  Exact resume: state_dict() holds the
file and row reached, the file order, the row order of the loaded file and the shuffling generator.

HDF5Output:
    hdf5_output_param { file_name: "out.h5" }
Writes its two bottoms as datasets "data" and "label" of `file_name` at every Forward (the file is created
afresh at setup, as Caffe truncates it).
"""
import os

import numpy as np
import torch

from ..core.layer import Layer
from ..core.registry import register_layer
from ..errors import DataError
from ..log import logger
from .base_data import BaseDataLayer, read_lines, set_generator_state, solver_share


def read_hdf5_list(source):
    names = [name for line in read_lines(source, "source file") for name in line.split()]
    if not names:
        raise DataError(f"Must have at least 1 HDF5 filename listed in {source}")
    resolved = []
    for number, name in enumerate(names, 1):
        beside = os.path.join(os.path.dirname(source), name)
        if os.path.isfile(name):
            resolved.append(name)
        elif not os.path.isabs(name) and os.path.isfile(beside):
            resolved.append(beside)
        else:
            raise DataError(f"{source}: HDF5 file '{name}' (entry {number}) does not exist")
    return resolved


@register_layer("HDF5Data")
class HDF5DataLayer(BaseDataLayer):
    not_recordable = "it reads the next rows of its HDF5 files on the host every iteration"
    def layer_setup(self, bottom, top):
        self.expect(not self.param.HasField("transform_param"), f"{self.type} does not transform data.")
        param = self.param.hdf5_data_param
        self.expect(param.batch_size > 0, f"Expect: batch_size > 0, Actual: {param.batch_size}")
        self.expect(len(self.param.top) == len(top),
                    f"Expect: one top name per top blob (the dataset names), Actual: {list(self.param.top)}")
        logger.info("Loading list of HDF5 filenames from: %s", param.source)
        try:
            self.files = read_hdf5_list(param.source)
        except DataError as exc:
            self.expect(False, str(exc))
        logger.info("Number of HDF5 files: %d", len(self.files))
        self.device, self.dtype = top[0].device, top[0].dtype
        self.generator = torch.Generator().manual_seed(int(torch.randint(0, 2 ** 62, ())))
        self.file_order = self._permutation(len(self.files))
        self.current_file, self.current_row, self.offset = 0, 0, 0
        self.rank, self.num_ranks = solver_share(self.phase)
        self._load(self.files[self.file_order[0]])
        for blob, dataset in zip(top, self.datasets):
            blob.reshape((param.batch_size,) + tuple(dataset.shape[1:]))

    def _permutation(self, n):
        if self.param.hdf5_data_param.shuffle:
            return torch.randperm(n, generator=self.generator).tolist()
        return list(range(n))

    def _load(self, path):
        import h5py
        try:
            with h5py.File(path, "r") as handle:
                arrays = []
                for name in self.param.top:
                    self.expect(name in handle, f"HDF5 file {path} has no dataset '{name}' "
                                                f"(it has: {', '.join(sorted(handle.keys()))})")
                    arrays.append(np.asarray(handle[name]))
        except OSError as exc:
            self.expect(False, f"Failed opening HDF5 file {path}: {exc}")
        self.expect(arrays[0].ndim >= 1, f"{path}: Input must have at least 1 axis.")
        rows = arrays[0].shape[0]
        for name, array in zip(self.param.top, arrays):
            self.expect(array.ndim >= 1 and array.shape[0] == rows,
                        f"{path}: Expect: dataset '{name}' with {rows} rows (as '{self.param.top[0]}'), "
                        f"Actual: shape {array.shape}")
        self.datasets = [torch.from_numpy(np.ascontiguousarray(a)).to(self.device, self.dtype) for a in arrays]
        self.rows, self.loaded = rows, path
        self.row_order = torch.tensor(self._permutation(rows), device=self.device)
        logger.debug("Successfully loaded %d rows from %s", rows, path)

    def state_dict(self):
        return {"current_file": self.current_file, "current_row": self.current_row, "offset": self.offset,
                "file_order": list(self.file_order), "row_order": self.row_order.cpu().numpy(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state):
        file_order, row_order = [int(i) for i in state["file_order"]], np.asarray(state["row_order"])
        self.expect(sorted(file_order) == list(range(len(self.files))),
                    f"Expect: a saved file order over the {len(self.files)} files of the list, Actual: {file_order}")
        path = self.files[file_order[state["current_file"]]]
        if path != self.loaded:
            self._load(path)
        self.expect(len(row_order) == self.rows and 0 <= state["current_row"] < self.rows,
                    f"Expect: a saved row order over the {self.rows} rows of {path}, Actual: {len(row_order)} rows, "
                    f"row {state['current_row']}")
        self.file_order, self.current_file = file_order, int(state["current_file"])
        self.current_row, self.offset = int(state["current_row"]), int(state["offset"])
        self.row_order = torch.from_numpy(row_order.astype(np.int64)).to(self.device)
        # after _load, which draws a permutation of its own
        set_generator_state(self.generator, state["generator"])

    def _next(self):
        self.current_row += 1
        if self.current_row == self.rows:
            if len(self.files) > 1:
                self.current_file += 1
                if self.current_file == len(self.files):
                    self.current_file = 0
                    self.file_order = self._permutation(len(self.files))
                self._load(self.files[self.file_order[self.current_file]])
            self.current_row = 0
            if self.param.hdf5_data_param.shuffle:
                self.row_order = torch.tensor(self._permutation(self.rows), device=self.device)
        self.offset += 1

    def forward(self, bottom, top):
        batch_size = self.param.hdf5_data_param.batch_size
        pieces = [[] for _ in top]  # slices of rows, one run per loaded file
        rows = []
        for _ in range(batch_size):
            while self.offset % self.num_ranks != self.rank:
                self._next()
            rows.append(self.current_row)
            if self.current_row + 1 == self.rows:  # the file may change in _next: gather its rows now
                self._gather(rows, pieces)
                rows = []
            self._next()
        if rows:
            self._gather(rows, pieces)
        for blob, parts in zip(top, pieces):
            blob.reshape((batch_size,) + tuple(parts[0].shape[1:]))
            blob.data.copy_(torch.cat(parts))

    def _gather(self, rows, pieces):
        index = self.row_order[torch.tensor(rows, device=self.device)]
        for out, dataset in zip(pieces, self.datasets):
            out.append(dataset.index_select(0, index))


@register_layer("HDF5Output")
class HDF5OutputLayer(Layer):
    not_recordable = "it writes its bottoms to an HDF5 file on the host every iteration"
    exact_num_bottom_blobs = 2
    exact_num_top_blobs = 0

    def layer_setup(self, bottom, top):
        import h5py
        self.file_name = self.param.hdf5_output_param.file_name
        try:
            h5py.File(self.file_name, "w").close()
        except OSError as exc:
            self.expect(False, f"Failed to open HDF5 file {self.file_name}: {exc}")

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        import h5py
        self.expect(bottom[0].shape[0] == bottom[1].shape[0],
                    f"Expect: data and label with the same batch size, Actual: {bottom[0].shape[0]} and "
                    f"{bottom[1].shape[0]}")
        logger.info("Saving HDF5 file %s", self.file_name)
        with h5py.File(self.file_name, "a") as handle:
            for name, blob in (("data", bottom[0]), ("label", bottom[1])):
                if name in handle:
                    del handle[name]
                # Caffe saves 4-D (num, channels, height, width) datasets.
                shape = (blob.num, blob.channels, blob.height, blob.width) if blob.num_axes <= 4 else blob.shape
                handle.create_dataset(name, data=blob.data.detach().cpu().numpy().reshape(shape))
        logger.info("Successfully saved %d rows", bottom[0].shape[0])

    def backward(self, top, propagate_down, bottom):
        pass
