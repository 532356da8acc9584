"""Input: tops whose values the user (or the Net's caller) writes before Forward.

    input_param { shape { dim: 64 dim: 1 dim: 28 dim: 28 } shape { dim: 64 } }

`shape` is given once per top, once for all tops, or not at all (then the tops stay unshaped until someone
reshapes them).  Forward and Backward do nothing: the layer only declares blobs, like Caffe's InputLayer.
"""
from ..core.layer import Layer
from ..core.registry import register_layer


@register_layer("Input")
class InputLayer(Layer):
    not_recordable = "the host writes its tops between iterations"
    exact_num_bottom_blobs = 0
    min_top_blobs = 1

    def layer_setup(self, bottom, top):
        shapes = self.param.input_param.shape
        self.expect(len(shapes) in (0, 1, len(top)),
                    f"Expect: 'shape' given once, once per top blob, or not at all, "
                    f"Actual: {len(top)} tops vs. {len(shapes)} shapes")
        for i, blob in enumerate(top):
            if shapes:
                dims = shapes[0 if len(shapes) == 1 else i].dim
                self.expect(all(d >= 0 for d in dims),
                            f"Expect: non-negative dims in shape {i}, Actual: {list(dims)}")
                blob.reshape(tuple(int(d) for d in dims))

    def reshape(self, bottom, top):
        # The tops keep whatever shape the user gave them (net.blobs['data'].reshape(...)).
        pass

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        pass
