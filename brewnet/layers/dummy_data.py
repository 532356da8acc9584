"""DummyData: tops filled by fillers, for tests and benchmarks (Caffe's DummyDataLayer).

    dummy_data_param { shape { dim: 64 dim: 3 dim: 32 dim: 32 } shape { dim: 64 }
                       data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" } }

`shape` (or the legacy num/channels/height/width) is given once for all tops or once per top; `data_filler`
0 times (constant 0), once for all tops, or once per top.  Constant tops are filled once at setup; the
others are refilled by every Forward.
"""
from ..core.filler import fill
from ..core.registry import register_layer
from ..proto import caffe_pb2
from .base_data import BaseDataLayer


@register_layer("DummyData")
class DummyDataLayer(BaseDataLayer):
    not_recordable = "its fillers draw its tops from the host's generator every iteration"
    def layer_setup(self, bottom, top):
        param = self.param.dummy_data_param
        n = len(top)
        self.expect(len(param.data_filler) in (0, 1, n),
                    f"Expect: 0, 1 or {n} (one per top) data fillers, Actual: {len(param.data_filler)}")
        legacy = [param.num, param.channels, param.height, param.width]
        if any(len(field) for field in legacy):
            self.expect(len(param.shape) == 0, "Expect: shape or legacy num/channels/height/width, "
                                               "Actual: both were specified")
            for name, field in zip(("num", "channels", "height", "width"), legacy):
                self.expect(len(field) in (1, n), f"Expect: '{name}' once or once per top blob ({n}), "
                                                  f"Actual: {len(field)}")
            shapes = [tuple(int(f[0 if len(f) == 1 else i]) for f in legacy) for i in range(n)]
        else:
            self.expect(len(param.shape) in (1, n), f"Expect: 'shape' once or once per top blob ({n}), "
                                                    f"Actual: {len(param.shape)}")
            shapes = [tuple(int(d) for d in param.shape[0 if len(param.shape) == 1 else i].dim)
                      for i in range(n)]
        if len(param.data_filler) == 0:
            default = caffe_pb2.FillerParameter(type="constant", value=0)
            self.fillers = [default] * n
        else:
            self.fillers = [param.data_filler[0 if len(param.data_filler) == 1 else i] for i in range(n)]
        # Per top, what Forward draws: nothing (constant: filled once, below), a dense gaussian's (mean, std)
        # drawn directly on the CPU (the toy nets trained 10 000+ steps: fill() first reads the filler's
        # fields, a visible part of their step), or the filler for fill().
        self.refill = [None if f.type == "constant" else (f.mean, f.std) if f.type == "gaussian" and f.sparse < 0
                       else f for f in self.fillers]
        for blob, shape, filler in zip(top, shapes, self.fillers):
            blob.reshape(shape)
            fill(filler, blob)  # constant tops keep this; the others are drawn again in forward

    def forward(self, bottom, top):
        for blob, filler, refill in zip(top, self.fillers, self.refill):
            if refill.__class__ is tuple and blob.data.is_cpu:
                blob.data.normal_(*refill)          # what fill() does for it
            elif refill is not None:
                fill(filler, blob)
