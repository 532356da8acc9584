import numpy as np
import pytest
import torch

from brewnet.core.blob import Blob, proto_shape, scale_all
from brewnet.errors import BrewnetError
from brewnet.proto import caffe_pb2


def test_shape_count_and_legacy_accessors():
    b = Blob((2, 3, 4, 5), name="b")
    assert b.shape == (2, 3, 4, 5) and b.count() == 120 and b.count(1) == 60 and b.count(1, 3) == 12
    assert (b.num, b.channels, b.height, b.width) == (2, 3, 4, 5)
    assert b.shape_string() == "2 3 4 5 (120)"
    v = Blob((7,))
    assert (v.num, v.channels, v.height, v.width) == (7, 1, 1, 1)
    assert b.canonical_axis_index(-1) == 3 and b.shape_at(-3) == 3
    with pytest.raises(BrewnetError, match="axis 4 out of range"):
        b.canonical_axis_index(4)
    with pytest.raises(BrewnetError, match="5 axes"):
        Blob((1, 1, 1, 1, 2)).num


def test_diff_is_lazy_zeros_and_update_subtracts():
    b = Blob((3,))
    b.data.copy_(torch.tensor([1.0, 2.0, 3.0]))
    assert b.diff.tolist() == [0.0, 0.0, 0.0]
    b.diff.copy_(torch.tensor([0.5, -1.0, 3.0]))
    b.update()
    assert b.data.tolist() == [0.5, 3.0, 0.0]
    assert b.asum_diff() == 4.5 and b.sumsq_diff() == pytest.approx(10.25)
    b.scale_data(2.0)
    assert b.asum_data() == 7.0 and b.sumsq_data() == 37.0


def test_reshape_same_count_keeps_values_new_count_allocates():
    b = Blob((2, 3))
    b.data.copy_(torch.arange(6.0).view(2, 3))
    b.reshape(3, 2)
    assert b.data.tolist() == [[0, 1], [2, 3], [4, 5]]
    b.reshape((4,))
    assert b.data.tolist() == [0, 0, 0, 0]
    with pytest.raises(BrewnetError, match="negative"):
        b.reshape(-1, 2)


def test_numpy_view_writes_reach_the_tensor():
    b = Blob((2, 2))
    b.data.numpy()[...] = 7
    assert float(b.data.sum()) == 28.0


def test_proto_round_trip_new_and_legacy_shapes():
    b = Blob((2, 3))
    b.data.copy_(torch.arange(6.0).view(2, 3))
    b.diff.fill_(0.25)
    proto = b.to_proto(write_diff=True)
    assert list(proto.shape.dim) == [2, 3] and list(proto.data) == [0, 1, 2, 3, 4, 5]
    c = Blob().from_proto(proto)
    assert c.shape == (2, 3) and torch.equal(c.data, b.data) and float(c.diff.sum()) == 1.5

    legacy = caffe_pb2.BlobProto(num=1, channels=2, height=1, width=2, data=[1, 2, 3, 4])
    assert proto_shape(legacy) == (1, 2, 1, 2)
    d = Blob().from_proto(legacy)
    assert d.shape == (1, 2, 1, 2) and d.data.flatten().tolist() == [1, 2, 3, 4]

    double = caffe_pb2.BlobProto(double_data=[0.1, 0.2])
    double.shape.dim.extend([2])
    e = Blob(dtype=torch.float64).from_proto(double)
    assert e.data.tolist() == [0.1, 0.2]
    assert list(e.to_proto(write_double=True).double_data) == [0.1, 0.2]


def test_from_proto_rejects_wrong_value_count():
    bad = caffe_pb2.BlobProto(data=[1, 2, 3])
    bad.shape.dim.extend([2, 2])
    with pytest.raises(BrewnetError, match="holds 3 data values but its shape 2 x 2 needs 4"):
        Blob(name="w").from_proto(bad)


def test_share_data_and_diff():
    owner = Blob((2, 3))
    sharer = Blob((3, 2))
    sharer.share_data(owner)
    sharer.share_diff(owner)
    owner.data.fill_(4)
    sharer.diff.fill_(1)
    assert float(sharer.data.sum()) == 24 and float(owner.diff.sum()) == 6
    with pytest.raises(BrewnetError, match="count"):
        Blob((5,)).share_data(owner)


def test_store_writes_into_the_blobs_memory_when_shapes_agree():
    b = Blob((2, 3))
    held_data, held_diff = b.data.numpy(), b.diff.numpy()       # pycaffe-style views
    b.store_data(torch.arange(6.0).view(2, 3))
    b.store_diff(torch.full((2, 3), 2.0, dtype=torch.float64))  # converted to the blob's dtype
    np.testing.assert_array_equal(held_data, np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(held_diff, np.full((2, 3), 2.0))
    assert b.diff.dtype == b.dtype
    before = b.data.data_ptr()
    b.store_data(b.data)                 # already its memory: nothing to do
    assert b.data.data_ptr() == before
    # another shape (the net reshaped to a new count): the tensor is adopted, the diff must still match
    b.store_data(torch.ones(4, 5))
    assert b.shape == (4, 5) and float(b.data.sum()) == 20
    with pytest.raises(BrewnetError, match=r"diff of shape \(2, 3\) does not match the blob's shape \(4, 5\)"):
        b.store_diff(torch.ones(2, 3))


def test_adopted_tensors_are_made_contiguous():
    b = Blob((3, 2))
    t = torch.arange(6.0).view(2, 3).t()            # a transposed view
    b.data = t
    assert b.data.is_contiguous() and torch.equal(b.data, t)
    same = torch.zeros(3, 2)
    b.data = same
    assert b.data is same                           # contiguous tensors are aliased, not copied


def test_release_data_only_when_nothing_else_holds_the_memory():
    # (results taken outside `assert`: pytest's rewriting would keep the tensor alive while it explains)
    from brewnet.core.blob import held_elsewhere
    b = Blob((2, 3))
    alone = held_elsewhere(b.data)
    assert alone is False
    held = b.data.numpy()                   # a pycaffe-style view: the memory must stay
    released = b.release_data()
    assert released is False and b.shape == (2, 3)
    del held
    other = Blob((2, 3))
    other.data = b.data                     # a second blob on the same tensor
    released = b.release_data()
    assert released is False
    other.data = torch.zeros(2, 3)
    released = b.release_data()
    assert released is True and b.count() == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scale_all_rounds_as_one_multiplication_per_tensor(dtype):
    g = torch.Generator().manual_seed(0)
    tensors = [torch.randn(n, generator=g, dtype=dtype) * 1e3 for n in (1, 7, 300)]
    expected = [t.clone().mul_(0.9) for t in tensors]      # 0.9: not exact in binary, so rounding shows
    scale_all(tensors, 0.9)
    for got, want in zip(tensors, expected):
        assert got.dtype == dtype and torch.equal(got, want)
