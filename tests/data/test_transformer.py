"""DataTransformer: Caffe's crop / mirror / mean / scale, checked against a per-image reference loop."""
import numpy as np
import pytest
import torch

from brewnet.data.transformer import DataTransformer
from brewnet.errors import DataError
from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text, write_binary

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST


def param(text):
    return parse_text(text, caffe_pb2.TransformationParameter())


def batch(n=3, c=2, h=5, w=6):
    return torch.arange(n * c * h * w, dtype=torch.float32).reshape(n, c, h, w) % 251


def test_scale_and_mean_values_per_channel():
    x = batch()
    out = DataTransformer(param("scale: 0.5 mean_value: 1 mean_value: 3"), TEST)(x.to(torch.uint8))
    expected = (x - torch.tensor([1., 3.]).view(1, 2, 1, 1)) * 0.5
    assert torch.equal(out, expected)


def test_single_mean_value_applies_to_all_channels():
    x = batch(c=3)
    out = DataTransformer(param("mean_value: 7"), TEST)(x)
    assert torch.equal(out, x - 7)


def test_centre_crop_test_phase():
    x = batch(h=7, w=6)
    out = DataTransformer(param("crop_size: 3"), TEST)(x)
    # h_off = (7 - 3) // 2 = 2, w_off = (6 - 3) // 2 = 1
    assert torch.equal(out, x[:, :, 2:5, 1:4])


def test_mean_file_indexed_at_uncropped_position(tmp_path):
    mean = np.random.RandomState(0).rand(1, 2, 5, 6).astype(np.float32) * 10
    proto = caffe_pb2.BlobProto(num=1, channels=2, height=5, width=6)
    proto.data.extend(mean.ravel().tolist())
    write_binary(proto, tmp_path / "mean.binaryproto")
    x = batch()
    out = DataTransformer(param(f'crop_size: 3 scale: 2 mean_file: "{tmp_path / "mean.binaryproto"}"'), TEST)(x)
    expected = ((x - torch.from_numpy(mean)) * 2)[:, :, 1:4, 1:4]
    assert torch.allclose(out, expected)


def test_mean_file_shape_mismatch(tmp_path):
    proto = caffe_pb2.BlobProto(num=1, channels=1, height=28, width=28)
    proto.data.extend([0.0] * 784)
    write_binary(proto, tmp_path / "mean.binaryproto")
    t = DataTransformer(param(f'mean_file: "{tmp_path / "mean.binaryproto"}"'), TEST)
    with pytest.raises(DataError, match=r"Expect: mean of shape \(2, 5, 6\).*Actual: \(1, 28, 28\)"):
        t(batch())


def test_random_crop_and_mirror_match_reference():
    """TRAIN: every image gets its own offsets and flip; compare against the per-image definition."""
    x = batch(n=16, h=8, w=9)
    t = DataTransformer(param("crop_size: 4 mirror: true"), TRAIN)
    seed_state = t.generator.get_state()
    out = t(x)
    g = torch.Generator()
    g.set_state(seed_state)
    flips = torch.randint(0, 2, (16,), generator=g).bool()
    h_off = torch.randint(0, 5, (16,), generator=g)
    w_off = torch.randint(0, 6, (16,), generator=g)
    for i in range(16):
        ref = x[i, :, h_off[i]:h_off[i] + 4, w_off[i]:w_off[i] + 4]
        if flips[i]:
            ref = ref.flip(2)
        assert torch.equal(out[i], ref)
    assert 0 < flips.sum() < 16 and len(set(h_off.tolist())) > 1   # the draws really vary


def test_mirror_without_crop_in_test_phase():
    x = batch(n=20)
    out = DataTransformer(param("mirror: true"), TEST)(x)
    flipped = [torch.equal(out[i], x[i].flip(2)) for i in range(20)]
    kept = [torch.equal(out[i], x[i]) for i in range(20)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)


def test_errors():
    with pytest.raises(DataError, match="mean_file and mean_value"):
        DataTransformer(param('mean_file: "m" mean_value: 1'), TEST)
    with pytest.raises(DataError, match="force_color and force_gray"):
        DataTransformer(param("force_color: true force_gray: true"), TEST)
    with pytest.raises(DataError, match="1 mean_value or one per channel"):
        DataTransformer(param("mean_value: 1 mean_value: 2"), TEST)(batch(c=3))
    with pytest.raises(DataError, match="crop_size 9"):
        DataTransformer(param("crop_size: 9"), TEST)(batch())


def test_float64_output():
    out = DataTransformer(param("scale: 0.1"), TEST, dtype=torch.float64)(batch().to(torch.uint8))
    assert out.dtype == torch.float64


def test_input_tensor_is_not_modified():
    x = batch()
    keep = x.clone()
    DataTransformer(param("scale: 2 mean_value: 1 crop_size: 3"), TEST)(x)
    DataTransformer(param("scale: 2 mean_value: 1"), TEST)(x)
    assert torch.equal(x, keep)
