"""DropPath: FractalNet's join (Larsson et al. 2017) with drop-path, local and global.

Over bottoms x_0..x_{n-1} of one shape, of which the set K survives this iteration's drop-path:

    y = (1/|K|) sum_{i in K} x_i          dx_i = dy / |K| for i in K, 0 otherwise        (K empty: y = 0)

TRAIN draws K once per forward (for the whole batch):
- global, with probability global_ratio: one column c of num_columns is chosen for the whole net; K is the
  bottoms whose `column` is c (a join on no path of column c is empty, and its output is not on that path);
- local otherwise: every bottom survives with probability 1 - drop_ratio; if none does, one chosen at random.
TEST keeps every bottom (the plain mean), or, with test_column >= 0, only that column's bottoms.

All joins of a net must agree on the global column, so the draws are a function of the parameter `seed` and
the count t of this layer's TRAIN forwards (one per pass for every layer of a net): u, c from (seed, t);
local drops from (seed, t, the layer's name). No state is shared between layers, and a run is reproducible.
The decision is made on the host, so a CUDA graph could not replay it (not_recordable).
"""
import zlib

import numpy as np
import torch

from ..core.layer import Layer
from ..core.registry import register_layer
from ..errors import LayerError
from ..proto import caffe_pb2


@register_layer("DropPath")
class DropPathLayer(Layer):
    min_bottom_blobs = 1
    exact_num_top_blobs = 1
    not_recordable = "it chooses the surviving paths on the host every iteration"

    def layer_setup(self, bottom, top):
        p = self.param.drop_path_param
        self.drop_ratio, self.global_ratio, self.seed = p.drop_ratio, p.global_ratio, p.seed
        self.expect(0 <= self.drop_ratio < 1, f"Expect: 0 <= drop_ratio < 1, Actual: {self.drop_ratio}")
        self.expect(0 <= self.global_ratio <= 1, f"Expect: 0 <= global_ratio <= 1, Actual: {self.global_ratio}")
        self.columns = list(p.column) if len(p.column) else list(range(len(bottom)))
        self.expect(len(self.columns) == len(bottom),
                    f"one column per bottom. Expect: {len(bottom)} column values, Actual: {len(self.columns)}")
        self.num_columns = p.num_columns if p.HasField("num_columns") else max(self.columns) + 1
        self.expect(max(self.columns) < self.num_columns,
                    f"Expect: every column < num_columns {self.num_columns}, Actual: {max(self.columns)}")
        self.test_column = p.test_column
        self.expect(self.test_column < self.num_columns,
                    f"Expect: test_column < num_columns {self.num_columns}, Actual: {self.test_column}")
        self.salt = zlib.crc32(self.name.encode())
        self.iteration = 0
        self.kept = list(range(len(bottom)))

    def reshape(self, bottom, top):
        if any(top[0] is b for b in bottom):
            raise LayerError(f"Expect: a top of its own (DropPath does not work in place), Actual: top "
                             f"'{top[0].name}' is a bottom", self.name, self.type)
        for i, b in enumerate(bottom[1:], 1):
            if b.shape != bottom[0].shape:
                raise LayerError(f"all bottoms must have the same shape. Expect: bottom[{i}] '{b.name}' of shape "
                                 f"{bottom[0].shape_string()}, Actual: {b.shape_string()}", self.name, self.type)
        top[0].reshape_like(bottom[0])

    def global_draw(self, iteration):
        """(global or not, the column) of a TRAIN iteration: the same in every layer with this seed."""
        rng = np.random.default_rng([self.seed, iteration])
        return bool(rng.random() < self.global_ratio), int(rng.integers(self.num_columns))

    def draw(self):
        """The indices of the bottoms that survive this forward."""
        if self.phase != caffe_pb2.TRAIN:
            if self.test_column < 0:
                return list(range(len(self.columns)))
            return [i for i, c in enumerate(self.columns) if c == self.test_column]
        self.iteration += 1
        is_global, column = self.global_draw(self.iteration)
        if is_global:
            return [i for i, c in enumerate(self.columns) if c == column]
        rng = np.random.default_rng([self.seed, self.iteration, self.salt])
        kept = [i for i, u in enumerate(rng.random(len(self.columns))) if u >= self.drop_ratio]
        return kept or [int(rng.integers(len(self.columns)))]

    def forward(self, bottom, top):
        self.kept = self.draw()
        y = top[0].data
        if not self.kept:
            y.zero_()
            return
        if len(self.kept) == 1:
            y.copy_(bottom[self.kept[0]].data)
            return
        torch.add(bottom[self.kept[0]].data, bottom[self.kept[1]].data, out=y)
        for i in self.kept[2:]:
            y.add_(bottom[i].data)
        y.mul_(1.0 / len(self.kept))

    def backward(self, top, propagate_down, bottom):
        dy, scale = top[0].diff, 1.0 / max(len(self.kept), 1)
        for i, b in enumerate(bottom):
            if not propagate_down[i]:
                continue
            if i in self.kept:
                torch.mul(dy, scale, out=b.diff)
            else:
                b.diff.zero_()
