"""Layer types registered for the capability tests (core/layer.py: not_recordable, fusion,
keeps_running_statistics): the runtime must ask the layer, not match its type string."""
from brewnet.core.layer import Layer
from brewnet.core.registry import register_layer
from brewnet.layers.normalization import BatchNormLayer


@register_layer("HostCounter")
class HostCounterLayer(Layer):
    """Copies its bottom and counts its calls on the host, which a CUDA-graph replay would skip."""
    not_recordable = "it counts its calls on the host"
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1
    calls = 0

    def reshape(self, bottom, top):
        top[0].reshape_like(bottom[0])

    def forward(self, bottom, top):
        self.calls += 1
        top[0].data.copy_(bottom[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff.copy_(top[0].diff)


@register_layer("RenamedBatchNorm")
class RenamedBatchNormLayer(BatchNormLayer):
    """BatchNorm under another type string: it inherits BatchNorm's fusion partner and running statistics."""
