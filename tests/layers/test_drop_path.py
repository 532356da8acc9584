"""DropPath (brewnet/layers/drop_path.py), FractalNet's join: the mean of the surviving bottoms, its hand-written
backward against float64 central differences and autograd, the local and global draws, and the user's errors."""
import numpy as np
import pytest
import torch

import brewnet.layers  # noqa: F401  (registers the layer types)
from brewnet.errors import LayerError
from brewnet.layers.drop_path import DropPathLayer
from brewnet.proto import caffe_pb2
from tests.layers.helpers import blob, check_layer, make_layer

A = [[1.0, 2.0], [3.0, -4.0]]
B = [[5.0, 0.0], [-1.0, 2.0]]
C = [[0.0, 4.0], [1.0, 1.0]]


def global_column(seed, iteration, columns):
    """The layer's rule written out: u then the column, from a generator seeded with (seed, iteration)."""
    rng = np.random.default_rng([seed, iteration])
    rng.random()
    return int(rng.integers(columns))


def forward(text, *xs, phase=caffe_pb2.TRAIN, passes=1):
    layer = make_layer(text)
    layer.phase = phase
    bottom = [blob(x, f"x{i}") for i, x in enumerate(xs)]
    top = [blob(0.0, "y")]
    layer.setup(bottom, top)
    kept = []
    for _ in range(passes):
        layer.Forward(bottom, top)
        kept.append(layer.kept)
    return layer, bottom, top, kept


def test_test_phase_is_the_mean_or_one_column():
    _, _, top, _ = forward('type: "DropPath"', A, B, C, phase=caffe_pb2.TEST)
    assert top[0].data.flatten().tolist() == pytest.approx([2.0, 2.0, 1.0, -1.0 / 3])
    _, _, top, _ = forward('type: "DropPath" drop_path_param { column: 0 column: 1 column: 1 test_column: 1 }',
                           A, B, C, phase=caffe_pb2.TEST)
    assert top[0].data.tolist() == [[2.5, 2.0], [0.0, 1.5]]


def test_no_drop_in_train_is_the_mean_with_gradient_over_n():
    layer, bottom, top, _ = forward('type: "DropPath" drop_path_param { drop_ratio: 0 global_ratio: 0 }', A, B)
    assert top[0].data.tolist() == [[3.0, 1.0], [1.0, -1.0]]
    top[0].diff.copy_(torch.tensor([[2.0, 4.0], [-6.0, 8.0]]))
    layer.Backward(top, [True, True], bottom)
    assert bottom[0].diff.tolist() == bottom[1].diff.tolist() == [[1.0, 2.0], [-3.0, 4.0]]


def test_global_draw_keeps_one_column_in_every_join_alike():
    text = 'type: "DropPath" drop_path_param { global_ratio: 1 column: 0 column: 1 column: 2 seed: 7 }'
    _, _, _, kept_a = forward(text, A, B, C, passes=12)
    _, _, _, kept_b = forward(text.replace("column: 2", "column: 2 num_columns: 3"), B, C, A, passes=12)
    assert kept_a == kept_b                                  # same seed, same iterations: same columns
    assert all(len(k) == 1 for k in kept_a)
    assert sorted({k[0] for k in kept_a}) == [0, 1, 2]
    columns = [global_column(7, t, 3) for t in range(1, 13)]
    assert [k[0] for k in kept_a] == columns


def test_global_draw_without_the_chosen_column_gives_zeros_and_zero_gradients():
    text = 'type: "DropPath" drop_path_param { global_ratio: 1 column: 1 column: 2 num_columns: 3 seed: 3 }'
    layer, bottom, top, kept = forward(text, A, B, passes=1)
    first = global_column(3, 1, 3)
    assert kept[0] == [[], [0], [1]][first]
    if not kept[0]:
        assert top[0].data.abs().sum().item() == 0
    for _ in range(20):                          # some iteration picks column 0, which no bottom belongs to
        layer.Forward(bottom, top)
        if not layer.kept:
            break
    assert layer.kept == [] and top[0].data.abs().sum().item() == 0
    top[0].diff.fill_(1.0)
    layer.Backward(top, [True, True], bottom)
    assert bottom[0].diff.abs().sum().item() == bottom[1].diff.abs().sum().item() == 0


def test_local_drop_rate_and_at_least_one_survivor():
    text = 'type: "DropPath" drop_path_param { drop_ratio: 0.5 global_ratio: 0 }'
    _, _, _, kept = forward(text, A, B, C, A, passes=2000)
    assert all(len(k) >= 1 for k in kept)
    kept_share = sum(len(k) for k in kept) / (4 * len(kept))
    # each bottom survives with 1/2, plus the rescue of the all-dropped case (1/16 of the passes, one bottom)
    assert kept_share == pytest.approx(0.5 + 1 / 64, abs=0.02)
    assert len({tuple(k) for k in kept}) == 15               # every non-empty subset of 4 bottoms occurs


class FixedDropPath(DropPathLayer):
    """The draw fixed to bottoms 0 and 2, so that central differences see one function."""

    def draw(self):
        return [0, 2]


def test_gradient_checks_with_paths_dropped_and_all_kept():
    xs = [torch.randn(2, 3, 4, dtype=torch.float64) for _ in range(3)]
    check_layer('type: "DropPath"', xs, [(2, 3, 4)], layer_class=FixedDropPath, record=False,
                oracle=lambda a, b, c, p: (a + c) / 2 + 0 * b)
    check_layer('type: "DropPath" drop_path_param { drop_ratio: 0 global_ratio: 0 }', xs, [(2, 3, 4)],
                record=False, oracle=lambda a, b, c, p: (a + b + c) / 3)
    check_layer('type: "DropPath"', xs[:2], [(2, 3, 4)], phase=caffe_pb2.TEST, record=False,
                oracle=lambda a, b, p: (a + b) / 2)


def test_user_errors_name_the_layer():
    with pytest.raises(LayerError, match="0 <= drop_ratio < 1, Actual: 1"):
        forward('type: "DropPath" drop_path_param { drop_ratio: 1 }', A, B)
    with pytest.raises(LayerError, match="one column per bottom. Expect: 2 column values, Actual: 1"):
        forward('type: "DropPath" drop_path_param { column: 0 }', A, B)
    with pytest.raises(LayerError, match="bottom\\[1\\] 'x1' of shape 2 2 \\(4\\), Actual: 3 \\(3\\)"):
        forward('type: "DropPath"', A, [1.0, 2.0, 3.0])
    with pytest.raises(LayerError, match="test_column < num_columns 2, Actual: 2"):
        forward('type: "DropPath" drop_path_param { test_column: 2 }', A, B)
