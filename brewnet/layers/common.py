"""Common layers: Split, Silence, InnerProduct, Eltwise, Reduction, ArgMax, Embed, Parameter.

The blob-shaping layers (Flatten, Reshape, Concat, Slice, Tile) live in shape.py, the layers that pick
rows by index (BatchReindex, Filter) in indexing.py.  Every backward here is
written by hand; bottom diffs are overwritten, parameter diffs accumulated (+=), as in Caffe.
"""
import torch

from ..core import common
from ..core.blob import Blob
from ..core.filler import fill
from ..core.layer import Layer
from ..core.registry import register_layer
from ..errors import BrewnetError, LayerError
from ..proto import caffe_pb2
from ..runtime import deferred
from ..runtime.precision import lowered_call, lowered_weight


def canonical_axis(layer, blob, axis):
    """blob.canonical_axis_index(axis), but an out-of-range axis is reported as the layer's error."""
    try:
        return blob.canonical_axis_index(axis)
    except BrewnetError as e:
        raise LayerError(f"Expect: axis in [-{blob.num_axes}, {blob.num_axes}), Actual: {axis} "
                         f"(bottom shape {list(blob.shape)}): {e}", layer.name, layer.type) from None


def same_memory(a, b):
    """True when two tensors are the very same memory (a shared diff needs no copy)."""
    return a.data_ptr() == b.data_ptr() and a.numel() == b.numel()


@register_layer("Split")
class SplitLayer(Layer):
    """Split: one bottom feeding N consumers.  Every top *is* the bottom's data (shared, no copy);
    backward sums the consumers' gradients: dL/dx = sum_i dL/dtop_i.  The Net inserts these itself."""
    exact_num_bottom_blobs = 1
    min_top_blobs = 1
    aliases_top_data = True

    def reshape(self, bottom, top):
        for i, t in enumerate(top):
            if t is bottom[0]:
                raise LayerError(f"Expect: top {i} is not the bottom (Split does not work in place), "
                                 f"Actual: top '{t.name}' is the bottom", self.name, self.type)
            t.reshape_like(bottom[0])
            t.data = bottom[0].data

    def forward(self, bottom, top):
        # The bottom's tensor may have been replaced since reshape (layers may assign a fresh tensor).
        for t in top:
            t.data = bottom[0].data

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        diff = bottom[0].diff
        if len(top) == 1:
            diff.copy_(top[0].diff)
            return
        torch.add(top[0].diff, top[1].diff, out=diff)     # one pass for the common two-consumer case
        for t in top[2:]:
            diff.add_(t.diff)


@register_layer("Silence")
class SilenceLayer(Layer):
    """Silence: swallows its bottoms (no tops), so that unused outputs are not reported as net outputs.
    Backward writes zero gradients into the bottoms that ask for one."""
    min_bottom_blobs = 1
    exact_num_top_blobs = 0

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        for b, down in zip(bottom, propagate_down):
            if down:
                b.diff.zero_()


@register_layer("InnerProduct")
class InnerProductLayer(Layer):
    """InnerProduct (fully connected): the bottom is flattened from `axis` on into rows x of length K,

        y = x W^T + b        W: (N, K)   (transpose: W stored as (K, N) and y = x W)

    top shape = bottom.shape[:axis] + (N,).  Gradients, with dy of shape (M, N):
        dW += dy^T x  (transpose: x^T dy),   db += sum_rows dy,   dx = dy W  (transpose: dy W^T).
    """
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def layer_setup(self, bottom, top):
        p = self.param.inner_product_param
        self.num_output = p.num_output
        self.bias_term = p.bias_term
        self.transpose = p.transpose
        self.expect(self.num_output > 0, f"Expect: num_output > 0, Actual: {self.num_output}")
        axis = canonical_axis(self, bottom[0], p.axis)
        self.K = bottom[0].count(axis)
        if self.blobs:
            return  # weights given (caffemodel / LayerParameter.blobs): Caffe skips initialization
        N, K = self.num_output, self.K
        dtype, device = bottom[0].data.dtype, bottom[0].data.device
        self.blobs = [Blob((K, N) if self.transpose else (N, K), dtype=dtype, device=device,
                           name=f"{self.name}.0")]
        fill(p.weight_filler, self.blobs[0])
        if self.bias_term:
            self.blobs.append(Blob((N,), dtype=dtype, device=device, name=f"{self.name}.1"))
            fill(p.bias_filler, self.blobs[1])

    def reshape(self, bottom, top):
        if self.shapes_unchanged(bottom, top):
            return
        axis = canonical_axis(self, bottom[0], self.param.inner_product_param.axis)
        K = bottom[0].count(axis)
        self.expect(K == self.K, f"Input size incompatible with inner product parameters. Expect: "
                                 f"{self.K} inputs per row (count from axis {axis}), Actual: {K} "
                                 f"(bottom shape {list(bottom[0].shape)})")
        self.M = bottom[0].count(0, axis)
        top[0].reshape(bottom[0].shape[:axis] + (self.num_output,))
        self.remember_shapes(bottom, top)

    def _weight_nk(self):
        w = lowered_weight(self.blobs[0].data)
        return self._t(w) if self.transpose else w

    def _weight_kn(self):
        w = lowered_weight(self.blobs[0].data)
        return w if self.transpose else self._t(w)

    def _t(self, tensor):
        """tensor.t(), kept while the same tensor object comes back (the weight; top[0].diff): a view costs
        about a microsecond, as much as a tiny net's kernel.  Two slots, weight and top diff."""
        kept = self._transposes
        if kept is None:
            kept = self._transposes = {}
        entry = kept.get(id(tensor))
        if entry is None or entry[0] is not tensor:
            if len(kept) > 2:
                kept.clear()
            entry = kept[id(tensor)] = (tensor, tensor.t())
        return entry[1]

    _transposes = None

    def forward(self, bottom, top):
        x = _matrix(bottom[0].data, self.M, self.K)
        y = _matrix(top[0].data, self.M, self.num_output, view=True)
        if self.bias_term:
            lowered_call(torch.addmm, self.blobs[1].data, x, self._weight_kn(), out=y)
        else:
            lowered_call(torch.mm, x, self._weight_kn(), out=y)

    def backward(self, top, propagate_down, bottom):
        dy = _matrix(top[0].diff, self.M, self.num_output, view=True)
        x = _matrix(bottom[0].data, self.M, self.K)
        if self.param_propagate(0):
            a, b = (x.t(), dy) if self.transpose else (self._t(dy), x)
            weight = self.blobs[0]
            if weight.diff_released():
                # Cleared for this iteration (Net.clear_param_diffs): the product becomes the diff.
                deferred.add_to_diff(weight, lowered_call(torch.mm, a, b))
            else:
                lowered_call(torch.Tensor.addmm_, weight.diff, a, b)    # accumulate in the one kernel
        if self.bias_term and self.param_propagate(1):
            deferred.add_to_diff(self.blobs[1], dy.sum(0))
        if propagate_down[0]:
            dx = _matrix(bottom[0].diff, self.M, self.K, view=True)
            lowered_call(torch.mm, dy, self._weight_nk(), out=dx)


def _matrix(tensor, rows, columns, view=False):
    """`tensor` as the (rows, columns) matrix InnerProduct computes with: itself when it is that already
    (a 2-D blob), else tensor.reshape (view=True: tensor.view, for the memory a kernel writes into).  A view
    costs as much as a tiny net's kernel."""
    if tensor.dim() == 2 and tensor.shape[0] == rows:
        return tensor
    return tensor.view(rows, columns) if view else tensor.reshape(rows, columns)


EltwiseOp = caffe_pb2.EltwiseParameter


@register_layer("Eltwise")
class EltwiseLayer(Layer):
    """Eltwise over bottoms x_0..x_{n-1} of one shape:

        SUM:  y = sum_i c_i x_i        dx_i = c_i dy             (coeff: one per bottom, default 1)
        PROD: y = prod_i x_i           dx_i = dy prod_{j!=i} x_j (stable_prod_grad) or dy y / x_i
        MAX:  y = max_i x_i            dx_i = dy where bottom i won, else 0

    MAX ties go as in Caffe: between x_0 and x_1 to x_1, afterwards to the earlier bottom.
    """
    min_bottom_blobs = 2
    exact_num_top_blobs = 1

    def layer_setup(self, bottom, top):
        p = self.param.eltwise_param
        self.op = p.operation
        self.expect(len(p.coeff) in (0, len(bottom)),
                    f"Eltwise takes one coefficient per bottom blob. Expect: 0 or {len(bottom)} coeff, "
                    f"Actual: {len(p.coeff)}")
        self.expect(not (self.op == EltwiseOp.PROD and len(p.coeff)),
                    "Eltwise only takes coefficients for summation (operation SUM). Expect: no coeff with "
                    f"operation PROD, Actual: {len(p.coeff)} coeff")
        self.expect(self.op in (EltwiseOp.PROD, EltwiseOp.SUM, EltwiseOp.MAX),
                    f"unknown elementwise operation {self.op}")
        self.coeffs = list(p.coeff) if len(p.coeff) else [1.0] * len(bottom)
        self.stable_prod_grad = p.stable_prod_grad

    def reshape(self, bottom, top):
        if self.shapes_unchanged(bottom, top):
            return
        for i, b in enumerate(bottom[1:], 1):
            if b.shape != bottom[0].shape:
                raise LayerError(f"all bottoms must have the same shape. Expect: bottom[{i}] '{b.name}' of shape "
                                 f"{bottom[0].shape_string()} like bottom[0] '{bottom[0].name}', "
                                 f"Actual: {b.shape_string()}", self.name, self.type)
        top[0].reshape_like(bottom[0])
        self.remember_shapes(bottom, top)

    def forward(self, bottom, top):
        y = top[0].data
        if self.op == EltwiseOp.PROD:
            torch.mul(bottom[0].data, bottom[1].data, out=y)
            for b in bottom[2:]:
                y.mul_(b.data)
        elif self.op == EltwiseOp.SUM:
            if self.coeffs[0] == 1:
                # x0 + c1 x1 in one pass (x0 * 1 is x0 exactly, so the sum is the same).
                torch.add(bottom[0].data, bottom[1].data, alpha=self.coeffs[1], out=y)
            else:
                torch.mul(bottom[0].data, self.coeffs[0], out=y)
                y.add_(bottom[1].data, alpha=self.coeffs[1])
            for b, c in zip(bottom[2:], self.coeffs[2:]):
                y.add_(b.data, alpha=c)
        else:
            a, b = bottom[0].data, bottom[1].data
            winner_is_a = a > b
            self.max_idx = (~winner_is_a).to(torch.int64)      # ties between the first two go to bottom 1
            torch.where(winner_is_a, a, b, out=y)
            for i, b in enumerate(bottom[2:], 2):
                better = b.data > y                              # later ties keep the earlier winner
                self.max_idx.masked_fill_(better, i)
                torch.where(better, b.data, y, out=y)

    def backward(self, top, propagate_down, bottom):
        dy, y = top[0].diff, top[0].data
        # In place (top is bottom 0), writing bottom 0's diff overwrites dy: do that bottom last.
        order = sorted(range(len(bottom)), key=lambda i: bottom[i] is top[0])
        for i in order:
            b = bottom[i]
            if not propagate_down[i]:
                continue
            if self.op == EltwiseOp.PROD:
                if self.stable_prod_grad:
                    others = [o.data for j, o in enumerate(bottom) if j != i]
                    grad = others[0].clone()
                    for o in others[1:]:
                        grad.mul_(o)
                else:
                    grad = y / b.data
                torch.mul(grad, dy, out=b.diff)
            elif self.op == EltwiseOp.SUM:
                if self.coeffs[i] == 1:
                    b.diff.copy_(dy)
                else:
                    torch.mul(dy, self.coeffs[i], out=b.diff)
            else:
                torch.where(self.max_idx == i, dy, torch.zeros((), dtype=dy.dtype, device=dy.device),
                            out=b.diff)


ReductionOp = caffe_pb2.ReductionParameter


@register_layer("Reduction")
class ReductionLayer(Layer):
    """Reduction of all axes from `axis` on, one value per leading index (top shape = bottom.shape[:axis]):

        SUM: c sum x    ASUM: c sum |x|    SUMSQ: c sum x^2    MEAN: c/D sum x      (D = count(axis))
    Gradients: SUM c dy, MEAN c/D dy, ASUM c dy sign(x), SUMSQ 2 c dy x.
    """
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def layer_setup(self, bottom, top):
        self.op = self.param.reduction_param.operation
        self.expect(self.op in (ReductionOp.SUM, ReductionOp.ASUM, ReductionOp.SUMSQ, ReductionOp.MEAN),
                    f"unknown reduction operation {self.op}")

    def reshape(self, bottom, top):
        axis = canonical_axis(self, bottom[0], self.param.reduction_param.axis)
        top[0].reshape(bottom[0].shape[:axis])
        self.num, self.dim = bottom[0].count(0, axis), bottom[0].count(axis)
        self.coeff = self.param.reduction_param.coeff
        if self.op == ReductionOp.MEAN:
            self.coeff /= self.dim

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.num, self.dim)
        if self.op in (ReductionOp.SUM, ReductionOp.MEAN):
            r = x.sum(1)
        elif self.op == ReductionOp.ASUM:
            r = x.abs().sum(1)
        else:
            r = (x * x).sum(1)
        top[0].data.view(self.num).copy_(r.mul_(self.coeff))

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        scale = (top[0].diff.reshape(self.num, 1) * self.coeff)
        dx = bottom[0].diff.view(self.num, self.dim)
        if self.op in (ReductionOp.SUM, ReductionOp.MEAN):
            dx.copy_(scale.expand(self.num, self.dim))
        elif self.op == ReductionOp.ASUM:
            torch.mul(torch.sign(bottom[0].data.reshape(self.num, self.dim)), scale, out=dx)
        else:
            torch.mul(bottom[0].data.reshape(self.num, self.dim), 2 * scale, out=dx)


@register_layer("ArgMax")
class ArgMaxLayer(Layer):
    """ArgMax: indices (and optionally values) of the top_k largest entries.

    Without `axis`, over each item's flattened count(1) values: top shape (N, 1, top_k) — or (N, 2, top_k) with
    out_max_val, indices in row 0 and values in row 1 (padded with 1s to the bottom's rank when > 3).
    With `axis`, along that axis: top shape = bottom shape with axis -> top_k, holding indices, or values only
    when out_max_val.  Ties rank the larger index first, as Caffe's sort of (value, index) pairs does.
    No backward.
    """
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def layer_setup(self, bottom, top):
        p = self.param.argmax_param
        self.top_k, self.out_max_val, self.has_axis = p.top_k, p.out_max_val, p.HasField("axis")
        self.expect(self.top_k >= 1, f"Expect: top_k >= 1, Actual: {self.top_k}")
        if self.has_axis:
            self.axis = canonical_axis(self, bottom[0], p.axis)
            self.expect(self.top_k <= bottom[0].shape[self.axis],
                        f"Expect: top_k <= the dimension of axis {self.axis} ({bottom[0].shape[self.axis]}), "
                        f"Actual: {self.top_k}")
        else:
            self.expect(self.top_k <= bottom[0].count(1),
                        f"Expect: top_k <= the flattened size of one item ({bottom[0].count(1)}), "
                        f"Actual: {self.top_k}")

    def reshape(self, bottom, top):
        if self.has_axis:
            shape = list(bottom[0].shape)
            shape[self.axis] = self.top_k
        else:
            shape = [1] * max(bottom[0].num_axes, 3)
            shape[0], shape[1], shape[2] = bottom[0].shape[0], 2 if self.out_max_val else 1, self.top_k
        top[0].reshape(shape)

    @staticmethod
    def _top_k(x, k):
        """Top k along the last dim; among equal values the larger index first (flip + stable sort)."""
        n = x.shape[-1]
        values, order = torch.sort(x.flip(-1), dim=-1, descending=True, stable=True)
        return values[..., :k], (n - 1 - order[..., :k])

    def forward(self, bottom, top):
        x = bottom[0].data
        if self.has_axis:
            values, index = self._top_k(x.movedim(self.axis, -1), self.top_k)
            result = values if self.out_max_val else index.to(x.dtype)
            top[0].data.copy_(result.movedim(-1, self.axis))
        else:
            values, index = self._top_k(x.reshape(x.shape[0], -1), self.top_k)
            out = top[0].data.view(x.shape[0], -1, self.top_k)
            out[:, 0].copy_(index)
            if self.out_max_val:
                out[:, 1].copy_(values)


@register_layer("Embed")
class EmbedLayer(Layer):
    """Embed: a lookup table.  Each bottom value is an integer index i in [0, input_dim):

        y[..., :] = W[i, :] + b          W: (input_dim, num_output), top shape = bottom shape + (num_output,)
    Gradients go to the parameters only: dW[i] += dy (summed over repeats), db += sum dy.
    """
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def layer_setup(self, bottom, top):
        p = self.param.embed_param
        self.N, self.K, self.bias_term = p.num_output, p.input_dim, p.bias_term
        self.expect(self.N > 0, f"Expect: num_output > 0, Actual: {self.N}")
        self.expect(self.K > 0, f"Expect: input_dim > 0, Actual: {self.K}")
        if self.blobs:
            return
        dtype, device = bottom[0].data.dtype, bottom[0].data.device
        self.blobs = [Blob((self.K, self.N), dtype=dtype, device=device, name=f"{self.name}.0")]
        fill(p.weight_filler, self.blobs[0])
        if self.bias_term:
            self.blobs.append(Blob((self.N,), dtype=dtype, device=device, name=f"{self.name}.1"))
            fill(p.bias_filler, self.blobs[1])

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape + (self.N,))

    def _indices(self, bottom):
        x = bottom[0].data.reshape(-1)
        index = x.long()                                   # truncation, like Caffe's static_cast<int>
        if index.numel() and not common.capturing():      # a recording skips the host check (capture.py)
            lo, hi = int(index.min()), int(index.max())
            if lo < 0 or hi >= self.K:
                bad = lo if lo < 0 else hi
                raise LayerError(f"Expect: indices in [0, {self.K}) (input_dim), Actual: {bad}",
                                 self.name, self.type)
        return index

    def forward(self, bottom, top):
        index = self._indices(bottom)
        y = top[0].data.view(-1, self.N)
        torch.index_select(self.blobs[0].data, 0, index, out=y)
        if self.bias_term:
            y.add_(self.blobs[1].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            raise LayerError("cannot backpropagate to the Embed layer's input (indices)", self.name, self.type)
        dy = top[0].diff.view(-1, self.N)
        if self.param_propagate(0):
            self.blobs[0].diff.index_add_(0, self._indices(bottom), dy)
        if self.bias_term and self.param_propagate(1):
            self.blobs[1].diff.add_(dy.sum(0))


@register_layer("Parameter")
class ParameterLayer(Layer):
    """Parameter: exposes one learnable blob (shape from parameter_param.shape, zeros) as its top.  From the
    first Forward on, the top shares the blob's data and diff, so whatever the consumers write into the top's
    diff is the gradient.  As in Caffe, setup only shapes the top: values written into the top before the
    first Forward are replaced by the parameter's (Caffe's golden cases depend on this)."""
    exact_num_bottom_blobs = 0
    exact_num_top_blobs = 1

    def layer_setup(self, bottom, top):
        shape = tuple(self.param.parameter_param.shape.dim)
        if not self.blobs:
            self.blobs = [Blob(shape, name=f"{self.name}.0")]
        top[0].reshape(shape)

    def _share(self, top):
        top[0].reshape(self.blobs[0].shape)
        top[0].data = self.blobs[0].data
        top[0].diff = self.blobs[0].diff

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        # Re-share: loading weights or a solver may have handed the blob fresh tensors.
        self._share(top)

    def backward(self, top, propagate_down, bottom):
        # The consumers may have replaced the top's diff tensor instead of writing into it.
        if not same_memory(top[0].diff, self.blobs[0].diff):
            self.blobs[0].diff.copy_(top[0].diff.view(self.blobs[0].shape))
