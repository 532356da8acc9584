"""HDF5Data (Caffe's order: files in list order, rows in order) and HDF5Output."""
import h5py
import numpy as np
import pytest
import torch

from brewnet.core.blob import Blob
from brewnet.errors import LayerError

from ._data_helpers import check_exact_resume, layer_from_text, setup


def test_golden_solver_data_in_order(golden, monkeypatch):
    monkeypatch.chdir(golden / "solvers")
    with h5py.File("data.h5", "r") as handle:
        data, label = handle["data"][:], handle["label"][:]
    layer = layer_from_text('name: "data" type: "HDF5Data" top: "data" top: "label" '
                            'hdf5_data_param { source: "data_list.txt" batch_size: 5 }')
    top = setup(layer)
    for k in range(4):   # 12 rows, batch 5: batches wrap round the single file
        layer.Forward([], top)
        rows = [(5 * k + j) % 12 for j in range(5)]
        assert np.array_equal(top[0].data.numpy(), data[rows])
        assert np.array_equal(top[1].data.numpy(), label[rows])


def write_files(tmp_path, sizes):
    names, start = [], 0
    for i, n in enumerate(sizes):
        with h5py.File(tmp_path / f"f{i}.h5", "w") as handle:
            handle["x"] = np.arange(start, start + n, dtype=np.float64)[:, None] * [1, -1]
            handle["y"] = np.arange(start, start + n, dtype=np.float32)
        names.append(f"f{i}.h5")
        start += n
    # relative names: found beside the list file
    (tmp_path / "list.txt").write_text("\n".join(names) + "\n")
    return start


def test_several_files_in_order_and_names(tmp_path):
    total = write_files(tmp_path, [3, 2, 4])
    layer = layer_from_text(f'name: "h" type: "HDF5Data" top: "y" top: "x" '
                            f'hdf5_data_param {{ source: "{tmp_path / "list.txt"}" batch_size: 4 }}')
    top = setup(layer)
    assert top[0].shape == (4,) and top[1].shape == (4, 2)
    got = []
    for _ in range(5):
        layer.Forward([], top)
        assert torch.equal(top[1].data[:, 0], top[0].data) and torch.equal(top[1].data[:, 1], -top[0].data)
        got.extend(top[0].data.tolist())
    assert got == [float(i % total) for i in range(20)]


def test_shuffle_visits_every_row_each_pass(tmp_path):
    total = write_files(tmp_path, [3, 2, 4])
    layer = layer_from_text(f'name: "h" type: "HDF5Data" top: "y" '
                            f'hdf5_data_param {{ source: "{tmp_path / "list.txt"}" batch_size: 9 shuffle: true }}')
    top = setup(layer, 1)
    passes = []
    for _ in range(3):
        layer.Forward([], top)
        passes.append(top[0].data.tolist())
        assert sorted(passes[-1]) == [float(i) for i in range(total)]
    assert len({tuple(p) for p in passes}) > 1


def test_missing_file_in_list(tmp_path):
    write_files(tmp_path, [2])
    with open(tmp_path / "list.txt", "a") as handle:
        handle.write("gone.h5\n")
    layer = layer_from_text(f'name: "h" type: "HDF5Data" top: "y" '
                            f'hdf5_data_param {{ source: "{tmp_path / "list.txt"}" batch_size: 1 }}')
    with pytest.raises(LayerError, match="gone.h5"):
        setup(layer, 1)


def test_missing_dataset_and_transform(tmp_path):
    write_files(tmp_path, [2])
    layer = layer_from_text(f'name: "h" type: "HDF5Data" top: "z" '
                            f'hdf5_data_param {{ source: "{tmp_path / "list.txt"}" batch_size: 1 }}')
    with pytest.raises(LayerError, match="no dataset 'z'"):
        setup(layer, 1)
    layer = layer_from_text(f'name: "h" type: "HDF5Data" top: "y" transform_param {{ scale: 2 }} '
                            f'hdf5_data_param {{ source: "{tmp_path / "list.txt"}" batch_size: 1 }}')
    with pytest.raises(LayerError, match="does not transform"):
        setup(layer, 1)


def test_hdf5_output(tmp_path):
    path = tmp_path / "out.h5"
    layer = layer_from_text(f'name: "o" type: "HDF5Output" bottom: "d" bottom: "l" '
                            f'hdf5_output_param {{ file_name: "{path}" }}')
    data, label = Blob((2, 3)), Blob((2,))
    data.data.copy_(torch.tensor([[1., 2., 3.], [4., 5., 6.]]))
    label.data.copy_(torch.tensor([7., 8.]))
    layer.setup([data, label], [])
    layer.Forward([data, label], [])
    with h5py.File(path, "r") as handle:
        assert handle["data"].shape == (2, 3, 1, 1) and handle["label"].shape == (2, 1, 1, 1)
        assert handle["data"][:].ravel().tolist() == [1, 2, 3, 4, 5, 6]
        assert handle["label"][:].ravel().tolist() == [7, 8]


@pytest.mark.parametrize("k", [1, 3])
def test_exact_resume_shuffled_across_files(tmp_path, k):
    """3 files of 3, 2 and 4 rows, batch 4: the state falls inside a file; the 6 batches after it cross files
    and passes, with the file order and every row order drawn again."""
    write_files(tmp_path, [3, 2, 4])
    text = (f'name: "h" type: "HDF5Data" top: "y" top: "x" '
            f'hdf5_data_param {{ source: "{tmp_path / "list.txt"}" batch_size: 4 shuffle: true }}')
    state = check_exact_resume(lambda: layer_from_text(text), 2, k, 6)
    assert state["offset"] == 4 * k and sorted(state["file_order"]) == [0, 1, 2]
