"""PyBlob / PyBlobVec: NumPy views of blobs that pycaffe-style code reads and writes."""
import numpy as np
import torch

from brewnet.core.blob import Blob
from brewnet.pycaffe.blob import PyBlob, PyBlobVec


def test_data_and_diff_share_memory():
    blob = Blob((2, 3, 4, 5))
    view = PyBlob(blob)
    view.data[...] = np.arange(120).reshape(2, 3, 4, 5)
    view.diff[0, 1] = 7.0
    assert float(blob.data[1, 2, 3, 4]) == 119.0
    assert float(blob.diff[0, 1].sum()) == 7.0 * 20
    blob.data.mul_(2)                              # and torch writes show through the view
    assert view.data[1, 2, 3, 4] == 238.0
    assert view.data.dtype == np.float32
    assert (view.shape, view.count, view.num, view.channels, view.height, view.width) == ((2, 3, 4, 5), 120, 2, 3, 4, 5)


def test_reshape_and_setters():
    blob = Blob((2, 3))
    view = PyBlob(blob)
    view.reshape(4, 5)
    assert blob.shape == (4, 5) and view.data.shape == (4, 5)
    view.reshape((1,))
    view.data = 3.5                                # assignment writes into the blob, it does not rebind
    assert blob.data.tolist() == [3.5]
    view.diff = [2.0]
    assert blob.diff.tolist() == [2.0]
    # A tensor replaced behind the view is seen at the next access.
    blob.data = torch.tensor([9.0])
    assert view.data.tolist() == [9.0]


def test_blob_vec_add_blob_and_live_list():
    blobs = []
    vec = PyBlobVec(blobs, name_prefix="layer")
    first = vec.add_blob(2, 3)
    vec.add_blob(4)
    assert [b.shape for b in blobs] == [(2, 3), (4,)] and blobs[1].name == "layer.1"
    first.data[...] = 1.0
    assert float(blobs[0].data.sum()) == 6.0
    assert len(vec) == 2 and [v.shape for v in vec] == [(2, 3), (4,)]
    assert vec[0] is first                        # one view per blob
    replacement = Blob((4,))
    blobs[1] = replacement                        # parameter sharing replaces the list entry
    assert vec[1].blob is replacement
    vec[0] = PyBlob(replacement)
    assert blobs[0] is replacement
