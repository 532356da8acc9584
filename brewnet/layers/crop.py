"""Crop (Caffe's crop_layer): cut bottom[0] to the shape of bottom[1] on every axis from `axis` on.

    y = x[..., o_a : o_a + s_a, o_{a+1} : o_{a+1} + s_{a+1}, ...]

with s the sizes of bottom[1] and o the offsets: none given means 0, one offset serves every cropped axis,
otherwise one per cropped axis.  Axes before `axis` keep bottom[0]'s sizes.  dx is dy placed back into the
crop window, zero elsewhere; bottom[1] only supplies a shape and gets no gradient.
"""
from ..core.layer import Layer
from ..core.registry import register_layer


@register_layer("Crop")
class CropLayer(Layer):
    exact_num_bottom_blobs = 2
    exact_num_top_blobs = 1

    def layer_setup(self, bottom, top):
        cp = self.param.crop_param
        axes = bottom[0].num_axes
        self.expect(-axes <= cp.axis < axes, f"Expect: crop axis in [{-axes}, {axes}), Actual: {cp.axis} "
                                             f"(bottom[0] shape {bottom[0].shape})")
        self.start_axis = cp.axis + axes if cp.axis < 0 else cp.axis
        self.offsets = list(cp.offset)
        cropped = axes - self.start_axis
        self.expect(len(self.offsets) <= 1 or len(self.offsets) == cropped,
                    f"Expect: 0, 1 or {cropped} offsets (one per axis from axis {self.start_axis} on), "
                    f"Actual: {len(self.offsets)}")

    def reshape(self, bottom, top):
        x, ref = bottom
        self.expect(ref.num_axes >= x.num_axes, f"Expect: bottom[1] with at least {x.num_axes} axes, "
                                                f"Actual: {ref.shape}")
        shape, self.window = [], []
        for i, size in enumerate(x.shape):
            offset, new_size = 0, size
            if i >= self.start_axis:
                new_size = ref.shape[i]
                if self.offsets:
                    offset = self.offsets[0 if len(self.offsets) == 1 else i - self.start_axis]
                self.expect(0 <= offset and offset + new_size <= size,
                            f"Expect: crop inside bottom[0] on axis {i}, Actual: offset {offset} + size "
                            f"{new_size} > {size} (bottom[0] {x.shape}, bottom[1] {ref.shape})")
            shape.append(new_size)
            self.window.append(slice(offset, offset + new_size))
        self.window = tuple(self.window)
        top[0].reshape(shape)

    def forward(self, bottom, top):
        # A copy, not a view: a later in-place layer on the top must not write into bottom[0].
        top[0].data.copy_(bottom[0].data[self.window])

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dx = bottom[0].diff          # overwritten in place: zeros outside the crop window
            dx.zero_()
            dx[self.window] = top[0].diff
