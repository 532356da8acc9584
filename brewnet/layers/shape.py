"""Layers that only move or copy values: Flatten, Reshape, Concat, Slice, Tile.

Flatten and Reshape do not copy: the top is a view of the bottom's data (Caffe's ShareData), re-taken every
forward because an upstream layer may hand its blob a fresh tensor.  Their backward copies the top diff
into the bottom diff unless the two already are the same memory.
"""
import torch

from ..core.layer import Layer
from ..core.registry import register_layer
from .common import canonical_axis, same_memory


class _ViewLayer(Layer):
    """Base of Flatten and Reshape: the top is the bottom's data seen with another shape."""
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1
    aliases_top_data = True

    def top_shape(self, bottom):
        raise NotImplementedError

    def reshape(self, bottom, top):
        self.expect(top[0] is not bottom[0], f"{self.type} does not work in place. Expect: a top other than "
                                             f"the bottom, Actual: top '{top[0].name}' is the bottom")
        shape = self.top_shape(bottom)
        top[0].reshape(shape)
        top[0].data = bottom[0].data.view(shape)

    def forward(self, bottom, top):
        top[0].data = bottom[0].data.view(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0] and not same_memory(top[0].diff, bottom[0].diff):
            bottom[0].diff.copy_(top[0].diff.view(bottom[0].shape))


@register_layer("Flatten")
class FlattenLayer(_ViewLayer):
    """Flatten axes axis..end_axis (default 1..-1) into one:
    (N, C, H, W) -> (N, C*H*W).  y = x seen as the new shape, dx = dy seen as the old one."""

    def top_shape(self, bottom):
        p = self.param.flatten_param
        start = canonical_axis(self, bottom[0], p.axis)
        end = canonical_axis(self, bottom[0], p.end_axis)
        shape = bottom[0].shape
        return shape[:start] + (bottom[0].count(start, end + 1),) + shape[end + 1:]


@register_layer("Reshape")
class ReshapeLayer(_ViewLayer):
    """Reshape without copying.  reshape_param.shape replaces the bottom axes [axis, axis + num_axes)
    (default: all of them); a dim of 0 copies the bottom's dim at that position, one dim of -1 is inferred
    so that the count is unchanged."""

    def layer_setup(self, bottom, top):
        dims = list(self.param.reshape_param.shape.dim)
        self.copy_axes = [i for i, d in enumerate(dims) if d == 0]
        inferred = [i for i, d in enumerate(dims) if d == -1]
        self.expect(len(inferred) <= 1, f"Expect: at most one -1 dim in the new shape, Actual: {len(inferred)} "
                                        f"in {dims}")
        bad = [d for d in dims if d < -1]
        self.expect(not bad, f"Expect: dims >= -1 in the new shape, Actual: {dims}")
        self.inferred_axis = inferred[0] if inferred else -1
        self.dims = dims

    def top_shape(self, bottom):
        p = self.param.reshape_param
        shape = bottom[0].shape
        n = len(shape)
        start = p.axis if p.axis >= 0 else n + p.axis + 1
        self.expect(0 <= start <= n, f"Expect: axis in [{-n - 1}, {n}] for the {n}-D bottom "
                                     f"{list(shape)}, Actual: {p.axis}")
        self.expect(p.num_axes >= -1, f"Expect: num_axes >= 0, or -1 for all, Actual: {p.num_axes}")
        end = n if p.num_axes == -1 else start + p.num_axes
        self.expect(end <= n, f"Expect: axis + num_axes <= {n} (bottom shape {list(shape)}), "
                              f"Actual: {start} + {p.num_axes} = {end}")
        new = list(self.dims)
        for i in self.copy_axes:
            self.expect(start + i < n, f"the new shape {self.dims} has a 0 at position {i} but the bottom "
                                       f"{list(shape)} has no axis {start + i} to copy")
            new[i] = shape[start + i]
        if self.inferred_axis >= 0:
            explicit = bottom[0].count(0, start) * bottom[0].count(end)
            for i, d in enumerate(new):
                if i != self.inferred_axis:
                    explicit *= d
            count = bottom[0].count()
            self.expect(explicit != 0 and count % explicit == 0,
                        f"cannot infer the -1 dim of {self.dims}: Expect: the bottom count ({count}, shape "
                        f"{list(shape)}) divisible by the product of the other dims, Actual: {explicit}")
            new[self.inferred_axis] = count // explicit
        result = shape[:start] + tuple(new) + shape[end:]
        count = 1
        for d in result:
            count *= d
        self.expect(count == bottom[0].count(),
                    f"output count must match input count. Expect: {bottom[0].count()} (bottom {list(shape)}), "
                    f"Actual: {count} (top {list(result)})")
        return result


def _legacy_axis(layer, bottom, param, legacy_field):
    """axis, or the legacy concat_dim / slice_dim (non-negative), as Caffe reads them."""
    has_axis, has_legacy = param.HasField("axis"), param.HasField(legacy_field)
    layer.expect(not (has_axis and has_legacy), f"Expect: either axis or {legacy_field}, Actual: both")
    if has_legacy:
        value = getattr(param, legacy_field)
        layer.expect(value < bottom.num_axes, f"Expect: {legacy_field} < {bottom.num_axes} (bottom shape "
                                              f"{list(bottom.shape)}), Actual: {value}")
        return value
    return canonical_axis(layer, bottom, param.axis)


@register_layer("Concat")
class ConcatLayer(Layer):
    """Concat: joins the bottoms along `axis` (default 1; legacy concat_dim); all other dims must agree.
    Backward hands each bottom its slice of the top diff."""
    min_bottom_blobs = 1
    exact_num_top_blobs = 1

    def layer_setup(self, bottom, top):
        p = self.param.concat_param
        self.expect(not (p.HasField("axis") and p.HasField("concat_dim")),
                    "Expect: either axis or concat_dim, Actual: both")

    def reshape(self, bottom, top):
        axis = _legacy_axis(self, bottom[0], self.param.concat_param, "concat_dim")
        first = bottom[0].shape
        for i, b in enumerate(bottom[1:], 1):
            self.expect(b.num_axes == len(first),
                        f"all bottoms must have the same number of axes. Expect: bottom[{i}] '{b.name}' "
                        f"with {len(first)} axes like {list(first)}, Actual: {list(b.shape)}")
            mismatch = [j for j in range(len(first)) if j != axis and b.shape[j] != first[j]]
            self.expect(not mismatch,
                        f"all bottoms must agree except on the concat axis {axis}. Expect: bottom[{i}] "
                        f"'{b.name}' of shape like {list(first)}, Actual: {list(b.shape)}")
        self.axis = axis
        self.sizes = [b.shape[axis] for b in bottom]
        shape = list(first)
        shape[axis] = sum(self.sizes)
        top[0].reshape(shape)

    def forward(self, bottom, top):
        torch.cat([b.data for b in bottom], dim=self.axis, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        for b, part, down in zip(bottom, torch.split(top[0].diff, self.sizes, dim=self.axis), propagate_down):
            if down and not same_memory(b.diff, part):
                b.diff.copy_(part)


@register_layer("Slice")
class SliceLayer(Layer):
    """Slice: cuts the bottom along `axis` (default 1; legacy slice_dim) at slice_point (one fewer than the
    tops, increasing), or into equal parts when no slice_point is given.  Backward joins the top diffs."""
    exact_num_bottom_blobs = 1
    min_top_blobs = 1

    def layer_setup(self, bottom, top):
        p = self.param.slice_param
        self.expect(not (p.HasField("axis") and p.HasField("slice_dim")),
                    "Expect: either axis or slice_dim, Actual: both")
        self.slice_points = list(p.slice_point)

    def reshape(self, bottom, top):
        axis = _legacy_axis(self, bottom[0], self.param.slice_param, "slice_dim")
        length = bottom[0].shape[axis]
        if self.slice_points:
            points = self.slice_points
            self.expect(len(points) == len(top) - 1,
                        f"Expect: {len(top) - 1} slice_point for {len(top)} tops, Actual: {len(points)}")
            self.expect(len(top) <= length,
                        f"Expect: at most {length} tops (size of axis {axis}), Actual: {len(top)}")
            bounds = [0] + points + [length]
            self.expect(all(a < b for a, b in zip(bounds, bounds[1:])),
                        f"Expect: slice_point strictly increasing within (0, {length}), Actual: {points}")
            sizes = [b - a for a, b in zip(bounds, bounds[1:])]
        else:
            self.expect(length % len(top) == 0,
                        f"Expect: the size {length} of axis {axis} divisible by the number of tops "
                        f"{len(top)}, Actual: remainder {length % len(top)}")
            sizes = [length // len(top)] * len(top)
        self.axis, self.sizes = axis, sizes
        for t, size in zip(top, sizes):
            shape = list(bottom[0].shape)
            shape[axis] = size
            t.reshape(shape)

    def forward(self, bottom, top):
        for t, part in zip(top, torch.split(bottom[0].data, self.sizes, dim=self.axis)):
            t.data.copy_(part)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            torch.cat([t.diff for t in top], dim=self.axis, out=bottom[0].diff)


@register_layer("Tile")
class TileLayer(Layer):
    """Tile: repeats the block of axes [axis, end) `tiles` times along `axis`:
    with x seen as (outer, inner), y = (outer, tiles, inner) copies; dx = sum over the tiles of dy."""
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def reshape(self, bottom, top):
        p = self.param.tile_param
        self.expect(p.HasField("tiles"), "Expect: tile_param.tiles given, Actual: missing")
        self.expect(p.tiles > 0, f"Expect: tiles > 0, Actual: {p.tiles}")
        axis = canonical_axis(self, bottom[0], p.axis)
        self.tiles = p.tiles
        self.outer, self.inner = bottom[0].count(0, axis), bottom[0].count(axis)
        shape = list(bottom[0].shape)
        shape[axis] *= self.tiles
        top[0].reshape(shape)

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.outer, 1, self.inner)
        top[0].data.view(self.outer, self.tiles, self.inner).copy_(x.expand(-1, self.tiles, -1))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dy = top[0].diff.view(self.outer, self.tiles, self.inner)
            torch.sum(dy, dim=1, out=bottom[0].diff.view(self.outer, self.inner))
