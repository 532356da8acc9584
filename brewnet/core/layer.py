"""Layer: the base class of every layer (book 5.4), a template method as in Caffe.

`setup(bottom, top)` checks the blob counts, calls the layer's `layer_setup` (read parameters, create
`self.blobs`) and `reshape` (shape the tops), then records loss weights.  `Forward(bottom, top)` reshapes,
runs the layer's `forward` and returns the weighted loss; `Backward(top, propagate_down, bottom)` runs the
layer's hand-written `backward`.  Subclasses implement only the lower-case hooks:

    layer_setup(bottom, top)   once, at net assembly
    reshape(bottom, top)       before every forward: shape the tops (and internal buffers)
    forward(bottom, top)       tops from bottoms
    backward(top, propagate_down, bottom)   bottom diffs (overwritten) and parameter diffs (accumulated, +=)

Capabilities the runtime (brewnet/runtime) asks a layer about; the defaults suit a layer whose forward and
backward are device work on its own blobs:

    not_recordable              None, or why a CUDA-graph replay cannot stand for the layer (-compile refuses)
    fusion                      None, or the group class that may run this layer and the next as one step:
                                its match(net, i) returns a group for layer i, or None
    keeps_running_statistics()  whether forward adds batch statistics to the layer's blobs the way BatchNorm
                                does, so that the Net may pack them with the others' (runtime/running_sums.py)

A loss weight w on top i means the net's objective includes w * sum(top[i]); like Caffe, the weight is
stored in the top's diff so that a loss layer's backward reads its own scale from `top[0].diff`.
"""
import torch

from ..errors import LayerError
from .blob import shapes_of


class Layer:
    type = None                 # set by @register_layer
    exact_num_bottom_blobs = -1
    min_bottom_blobs = -1
    max_bottom_blobs = -1
    exact_num_top_blobs = -1
    min_top_blobs = -1
    max_top_blobs = -1
    equal_num_bottom_top_blobs = False
    auto_top_blobs = False      # the net may create anonymous tops up to the minimum count
    # Whether Backward may run after a Forward.  The Net sets it from its backward analysis (False: it never
    # calls this layer's Backward), so that a layer can skip what only backward needs (MAX pooling's argmax).
    # A layer used on its own keeps True.
    need_backward = True
    # Whether nothing writes this layer's tops between its Forward and its Backward (no later layer works in
    # place on them or on a view of them).  The Net sets it; then backward may read the tops instead of
    # keeping a copy (ReLU).  False for a layer used on its own: nothing is known about later writers.
    top_data_kept = False
    # Layers whose tops are views of the bottom's data (Split, Flatten, Reshape): writing such a top in place
    # writes the bottom.
    aliases_top_data = False
    # Capabilities (module doc): most layers are recorded, run alone, and keep no running statistics.
    not_recordable = None
    fusion = None

    def keeps_running_statistics(self):
        return False

    def __init__(self, param):
        self.layer_param = param
        self.param = param       # short alias used by the layer implementations
        self.name = param.name
        self.phase = param.phase
        self.blobs = []
        self.param_propagate_down = []
        self.loss_weights = []
        if len(param.blobs):
            # Weights embedded in the LayerParameter (a caffemodel, or a test fixture) are the initial values.
            from .blob import Blob
            self.blobs = [Blob(name=f"{self.name}.{i}").from_proto(b, source=f"layer '{self.name}'")
                          for i, b in enumerate(param.blobs)]

    # --- template methods --------------------------------------------------------------------------------
    def setup(self, bottom, top):
        self.check_blob_counts(bottom, top)
        self.layer_setup(bottom, top)
        self.reshape(bottom, top)
        self.set_loss_weights(top)

    def Forward(self, bottom, top):
        """Reshape, compute the tops, and return the loss: sum over weighted tops of w * sum(top)."""
        return float(self.forward_loss(bottom, top))

    def forward_loss(self, bottom, top):
        """Forward, returning the loss as a 0-d tensor (0.0 for a layer without loss weights): the Net adds
        them up and converts once, instead of a host sync per loss layer.  A loss layer's 0-d top of weight
        1 is returned as it is (its own sum; the next Forward overwrites it)."""
        self.reshape(bottom, top)
        self.forward(bottom, top)
        loss = None
        for blob, weight in zip(top, self.loss_weights):
            if weight:
                blob.diff.fill_(weight)
                # sum(top * weight), as Caffe's dot with the diff; weight 1 (nearly always) needs no product.
                data = blob.data
                if weight != 1:
                    term = torch.sum(data * blob.diff)
                else:
                    term = data if data.dim() == 0 else data.sum()
                loss = term if loss is None else loss + term
        return 0.0 if loss is None else loss

    def Backward(self, top, propagate_down, bottom):
        self.backward(top, propagate_down, bottom)

    # --- hooks ---------------------------------------------------------------------------------------------
    def layer_setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        raise NotImplementedError(f"{type(self).__name__} must implement reshape")

    def forward(self, bottom, top):
        raise NotImplementedError(f"{type(self).__name__} must implement forward")

    def backward(self, top, propagate_down, bottom):
        # Layers without a gradient (data layers, Accuracy, ArgMax...) inherit this: asking them to
        # propagate is a user error Caffe reports the same way.
        if any(propagate_down):
            raise LayerError("this layer cannot backpropagate to its bottoms", self.name, self.type)

    # --- properties the Net asks about ---------------------------------------------------------------------
    def allow_force_backward(self, bottom_index):
        return True

    def loss(self, top_index):
        return self.loss_weights[top_index] if top_index < len(self.loss_weights) else 0.0

    def param_propagate(self, index):
        return self.param_propagate_down[index] if index < len(self.param_propagate_down) else True

    def set_param_propagate_down(self, index, value):
        while len(self.param_propagate_down) <= index:
            self.param_propagate_down.append(True)
        self.param_propagate_down[index] = value

    def check_blob_counts(self, bottom, top):
        def fail(what, expected, actual):
            raise LayerError(f"Expect: {what} {expected}, Actual: {actual}", self.name, self.type)
        nb, nt = len(bottom), len(top)
        if self.exact_num_bottom_blobs >= 0 and nb != self.exact_num_bottom_blobs:
            fail("number of bottom blobs ==", self.exact_num_bottom_blobs, nb)
        if self.min_bottom_blobs >= 0 and nb < self.min_bottom_blobs:
            fail("number of bottom blobs >=", self.min_bottom_blobs, nb)
        if self.max_bottom_blobs >= 0 and nb > self.max_bottom_blobs:
            fail("number of bottom blobs <=", self.max_bottom_blobs, nb)
        if self.exact_num_top_blobs >= 0 and nt != self.exact_num_top_blobs:
            fail("number of top blobs ==", self.exact_num_top_blobs, nt)
        if self.min_top_blobs >= 0 and nt < self.min_top_blobs:
            fail("number of top blobs >=", self.min_top_blobs, nt)
        if self.max_top_blobs >= 0 and nt > self.max_top_blobs:
            fail("number of top blobs <=", self.max_top_blobs, nt)
        if self.equal_num_bottom_top_blobs and nb != nt:
            fail("as many top blobs as bottom blobs:", nb, nt)

    def set_loss_weights(self, top):
        weights = list(self.layer_param.loss_weight)
        if weights and len(weights) != len(top):
            raise LayerError(f"loss_weight must be given once per top blob: {len(weights)} weights, "
                             f"{len(top)} tops", self.name, self.type)
        if not weights:
            weights = [self.default_loss_weight(i) for i in range(len(top))]
        self.loss_weights = [float(w) for w in weights]
        for blob, weight in zip(top, self.loss_weights):
            if weight:
                blob.diff.fill_(weight)

    def default_loss_weight(self, top_index):
        """Loss layers put weight 1 on their first top (LossLayer overrides this)."""
        return 0.0

    # Reshape runs before every forward, but bottoms rarely change shape: layers whose reshape only checks
    # the bottoms and shapes the tops (from their own parameters) skip the repeated checks with these.
    _shapes_after_reshape = None

    def shapes_unchanged(self, bottom, top):
        """Whether bottoms and tops still have the shapes they had when `remember_shapes` last ran."""
        return self._shapes_after_reshape == shapes_of(bottom, top)

    def remember_shapes(self, bottom, top):
        self._shapes_after_reshape = shapes_of(bottom, top)

    def expect(self, condition, message):
        """Caffe's CHECK for user-caused conditions: raise a LayerError naming this layer."""
        if not condition:
            raise LayerError(message, self.name, self.type)

    def __repr__(self):
        return f"<{type(self).__name__} '{self.name}'>"
