"""Recurrent layers: RNN, LSTM and the LSTMUnit step they are built from (Caffe's recurrent_layer family).

Bottoms of RNN / LSTM (T time steps of N independent streams):

    x         T x N x ...    the input sequence (axes 2.. are flattened to D features)
    cont      T x N          sequence continuation: 0 starts a new sequence (the hidden state is flushed)
    x_static  N x ...        optional: an input seen at every time step (present when there is one bottom
                             more than the minimum)
    h0 (, c0) 1 x N x H      with recurrent_param.expose_hidden: the initial state(s)
Tops: the output sequence T x N x H, and with expose_hidden the final state(s) hT (, cT), 1 x N x H.

Caffe builds these by unrolling an internal Net of InnerProduct / Eltwise / TanH / LSTMUnit layers; brewnet
computes the same maths directly, batching everything that does not depend on the recurrence (the input
transform of all T steps, the RNN output layer) and looping only over time.  With h_{t-1}' = cont_t * h_{t-1}:

  RNN   params [W_xh (HxD), b_h (H), (W_xh_static (HxDs)), W_hh (HxH), W_ho (HxH), b_o (H)]
        h_t = tanh(W_xh x_t + b_h + W_xh_static x_static + W_hh h_{t-1}')
        o_t = tanh(W_ho h_t + b_o)                                   top: o
  LSTM  params [W_xc (4HxD), b_c (4H), (W_xc_static (4HxDs)), W_hc (4HxH)]
        gates_t = W_xc x_t + b_c + W_xc_static x_static + W_hc h_{t-1}'   (blocks i, f, o, g)
        (c_t, h_t) = LSTMUnit(c_{t-1}, gates_t, cont_t)              top: h

  LSTMUnit  i = sigmoid(i'), f = cont * sigmoid(f'), o = sigmoid(o'), g = tanh(g')
            c = f * c_prev + i * g,   h = o * tanh(c)

Without expose_hidden the state at the end of one Forward is the initial state of the next (Caffe's
behaviour: a stream continues across batches wherever cont_1 = 1); it starts at zero.  Gradients never cross
batches.  Backward through time is written by hand.  Caffe's quirks kept on purpose: the gradient of f' is
c_term * c_prev * f * (1 - f) with f already scaled by cont (exact for the usual binary cont), and no
gradient flows into cont.
"""
import torch

from ..core.blob import Blob
from ..core.filler import fill
from ..core.layer import Layer
from ..runtime.precision import lowered
from ..core.registry import register_layer


def lstm_unit_forward(c_prev, gates, cont):
    """One LSTM step over any leading shape: gates (..., 4H) in Caffe's order i, f, o, g; cont (...,).
    Returns c, h and the activations the backward needs."""
    hidden = c_prev.shape[-1]
    i, f, o = torch.sigmoid(gates[..., :3 * hidden]).split(hidden, dim=-1)
    # cont == 0 forgets c_prev entirely; Caffe scales the forget gate by cont (normally 0 or 1).
    f = f * cont.unsqueeze(-1)
    g = torch.tanh(gates[..., 3 * hidden:])
    c = f * c_prev + i * g
    tanh_c = torch.tanh(c)
    return c, o * tanh_c, (i, f, o, g, tanh_c)


def lstm_unit_backward(dc, dh, c_prev, acts):
    """Gradients of one LSTM step: (d c_prev, d gates) from the diffs of its outputs c and h."""
    i, f, o, g, tanh_c = acts
    c_term = dc + dh * o * (1 - tanh_c * tanh_c)
    dgates = torch.cat([c_term * g * i * (1 - i),
                        c_term * c_prev * f * (1 - f),
                        dh * tanh_c * o * (1 - o),
                        c_term * i * (1 - g * g)], dim=-1)
    return c_term * f, dgates


class RecurrentLayer(Layer):
    """What RNN and LSTM share: bottoms, parameters of the input transform, carried state, validation.

    Subclasses define `state_names` (the recurrent states, exposed in this order), `gate_multiple`
    (width of the input transform in units of num_output), `make_recurrent_params`, `recur_forward`
    and `recur_backward`."""
    state_names = ()
    gate_multiple = 1

    def __init__(self, param):
        super().__init__(param)
        self.expose_hidden = param.recurrent_param.expose_hidden
        exposed = len(self.state_names) if self.expose_hidden else 0
        # Caffe's MinBottomBlobs / MaxBottomBlobs / ExactNumTopBlobs depend on expose_hidden.
        self.min_bottom_blobs = 2 + exposed
        self.max_bottom_blobs = 3 + exposed
        self.exact_num_top_blobs = 1 + exposed
        self.carried = None        # state handed from one Forward to the next (no expose_hidden)

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1   # never into the continuation indicators

    # --- setup ---------------------------------------------------------------------------------------
    def layer_setup(self, bottom, top):
        rp = self.param.recurrent_param
        self.expect(rp.num_output > 0, f"Expect: recurrent_param.num_output > 0, Actual: {rp.num_output}")
        self.hidden = int(rp.num_output)
        x, cont = bottom[0], bottom[1]
        self.expect(x.num_axes >= 2, f"Expect: bottom[0] with at least 2 axes (#timesteps, #streams, ...), "
                                     f"Actual: shape {x.shape}")
        self.steps = x.shape[0]
        self._check_cont(x, cont)
        exposed = len(self.state_names) if self.expose_hidden else 0
        self.static_input = len(bottom) > 2 + exposed
        self.state_offset = 2 + int(self.static_input)
        if self.static_input:
            xs = bottom[2]
            self.expect(xs.num_axes >= 1 and xs.shape[0] == x.shape[1],
                        f"Expect: static input (bottom[2]) of shape N x ... with N = {x.shape[1]}, "
                        f"Actual: {xs.shape}")
        gates = self.gate_multiple * self.hidden
        shapes = [("weight", (gates, x.count(2))), ("bias", (gates,))]
        if self.static_input:
            shapes.append(("weight", (gates, bottom[2].count(1))))
        shapes += self.recurrent_param_shapes()
        self._make_params(shapes)
        self.param_propagate_down = [True] * len(self.blobs)

    def _make_params(self, shapes):
        rp = self.param.recurrent_param
        if self.blobs:
            # Weights came with the LayerParameter: check them, do not refill (Caffe's "skipping").
            self.expect(len(self.blobs) == len(shapes),
                        f"Expect: {len(shapes)} parameter blobs, Actual: {len(self.blobs)}")
            for i, ((_, shape), blob) in enumerate(zip(shapes, self.blobs)):
                self.expect(blob.shape == shape, f"Expect: parameter {i} of shape {shape}, Actual: {blob.shape}")
            return
        for i, (kind, shape) in enumerate(shapes):
            blob = Blob(shape, name=f"{self.name}.{i}")
            fill(rp.weight_filler if kind == "weight" else rp.bias_filler, blob)
            self.blobs.append(blob)

    def _check_cont(self, x, cont):
        self.expect(cont.num_axes == 2 and cont.shape == tuple(x.shape[:2]),
                    f"Expect: cont (bottom[1]) of shape (#timesteps, #streams) = {tuple(x.shape[:2])}, "
                    f"Actual: {cont.shape}")

    def reshape(self, bottom, top):
        x = bottom[0]
        self.expect(x.num_axes >= 2 and x.shape[0] == self.steps,
                    f"Expect: input with {self.steps} timesteps (fixed at setup), Actual: shape {x.shape}")
        self._check_cont(x, bottom[1])
        n = x.shape[1]
        if self.static_input:
            self.expect(bottom[2].shape[0] == n,
                        f"Expect: static input with {n} streams, Actual: shape {bottom[2].shape}")
        state_shape = (1, n, self.hidden)
        if self.expose_hidden:
            for j, name in enumerate(self.state_names):
                b = bottom[self.state_offset + j]
                self.expect(b.shape == state_shape, f"Expect: initial state {name} (bottom[{self.state_offset + j}]) "
                                                    f"of shape {state_shape}, Actual: {b.shape}")
            for j in range(len(self.state_names)):
                top[1 + j].reshape(state_shape)
        top[0].reshape(self.steps, n, self.hidden)

    # --- forward / backward ---------------------------------------------------------------------------
    def _weights(self):
        """(W_x, b, W_static or None, recurrent params...) as tensors."""
        data = [b.data for b in self.blobs]
        if self.static_input:
            return data[0], data[1], data[2], data[3:]
        return data[0], data[1], None, data[2:]

    @lowered
    def forward(self, bottom, top):
        x, cont = bottom[0].data, bottom[1].data
        steps, n = x.shape[0], x.shape[1]
        w_x, b, w_static, recur = self._weights()
        # The input transform of all time steps at once: pre_t = W_x x_t + b (+ W_static x_static).
        pre = torch.addmm(b, x.reshape(steps * n, -1), w_x.t()).view(steps, n, -1)
        if w_static is not None:
            pre += (bottom[2].data.reshape(n, -1) @ w_static.t()).unsqueeze(0)
        state0 = self._initial_state(bottom, n, x)
        outputs, final = self.recur_forward(pre, cont, state0, recur)
        top[0].data.copy_(outputs)
        if self.expose_hidden:
            for j, s in enumerate(final):
                top[1 + j].data.copy_(s.unsqueeze(0))
        else:
            self.carried = tuple(s.clone() for s in final)

    def _initial_state(self, bottom, n, like):
        if self.expose_hidden:
            return tuple(bottom[self.state_offset + j].data[0] for j in range(len(self.state_names)))
        shape = (n, self.hidden)
        if self.carried is None or self.carried[0].shape != shape or self.carried[0].dtype != like.dtype:
            self.carried = tuple(like.new_zeros(shape) for _ in self.state_names)
        return self.carried

    def reset(self):
        """Forget the carried state (Caffe's RecurrentLayer::Reset)."""
        self.carried = None

    @lowered
    def backward(self, top, propagate_down, bottom):
        self.expect(not propagate_down[1], "Expect: no backpropagation to the sequence indicators (bottom[1]), "
                                           "Actual: propagate_down[1] is true")
        x = bottom[0].data
        steps, n = x.shape[0], x.shape[1]
        w_x, _, w_static, recur = self._weights()
        dfinal = (tuple(top[1 + j].diff[0] for j in range(len(self.state_names)))
                  if self.expose_hidden else None)
        first = 3 if self.static_input else 2
        recur_diffs = [self.blobs[first + k].diff if self.param_propagate(first + k) else None
                       for k in range(len(recur))]
        dpre, dstate0 = self.recur_backward(top[0].diff, bottom[1].data, dfinal, recur, recur_diffs)
        flat = dpre.reshape(steps * n, -1)
        if self.param_propagate(0):
            self.blobs[0].diff.add_(flat.t() @ x.reshape(steps * n, -1))
        if self.param_propagate(1):
            self.blobs[1].diff.add_(flat.sum(0))
        if propagate_down[0]:
            bottom[0].diff.copy_((flat @ w_x).view(bottom[0].shape))
        if self.static_input:
            dstatic = dpre.sum(0)       # x_static feeds every time step
            xs = bottom[2].data.reshape(n, -1)
            if self.param_propagate(2):
                self.blobs[2].diff.add_(dstatic.t() @ xs)
            if propagate_down[2]:
                bottom[2].diff.copy_((dstatic @ w_static).view(bottom[2].shape))
        if self.expose_hidden:
            for j, d in enumerate(dstate0):
                if propagate_down[self.state_offset + j]:
                    bottom[self.state_offset + j].diff.copy_(d.unsqueeze(0))


@register_layer("RNN")
class RNNLayer(RecurrentLayer):
    """Elman RNN with a tanh output layer (see the module docstring)."""
    state_names = ("h",)

    def recurrent_param_shapes(self):
        h = self.hidden
        return [("weight", (h, h)), ("weight", (h, h)), ("bias", (h,))]     # W_hh, W_ho, b_o

    def recur_forward(self, pre, cont, state0, recur):
        w_hh, w_ho, b_o = recur
        steps, n, hidden = pre.shape
        hs = pre.new_empty(steps, n, hidden)        # h_t
        h_conted = pre.new_empty(steps, n, hidden)  # cont_t * h_{t-1}, the input of W_hh at step t
        h = state0[0]
        for t in range(steps):
            torch.mul(h, cont[t].unsqueeze(1), out=h_conted[t])
            h = torch.tanh(torch.addmm(pre[t], h_conted[t], w_hh.t()))
            hs[t] = h
        out = torch.tanh(torch.addmm(b_o, hs.view(steps * n, hidden), w_ho.t())).view(steps, n, hidden)
        self.saved = (hs, h_conted, out)
        return out, (hs[-1],)

    def recur_backward(self, dout, cont, dfinal, recur, diffs):
        w_hh, w_ho, _ = recur
        hs, h_conted, out = self.saved
        steps, n, hidden = hs.shape
        dz = (dout * (1 - out * out)).view(steps * n, hidden)      # through o = tanh(z)
        if diffs[1] is not None:
            diffs[1].add_(dz.t() @ hs.view(steps * n, hidden))
        if diffs[2] is not None:
            diffs[2].add_(dz.sum(0))
        dh_out = (dz @ w_ho).view(steps, n, hidden)
        da = torch.empty_like(hs)
        dh_next = dfinal[0].clone() if dfinal is not None else hs.new_zeros(n, hidden)
        for t in range(steps - 1, -1, -1):
            torch.mul(dh_out[t] + dh_next, 1 - hs[t] * hs[t], out=da[t])
            dh_next = (da[t] @ w_hh) * cont[t].unsqueeze(1)
        if diffs[0] is not None:
            diffs[0].add_(da.view(steps * n, hidden).t() @ h_conted.view(steps * n, hidden))
        return da, (dh_next,)


@register_layer("LSTM")
class LSTMLayer(RecurrentLayer):
    """Long short-term memory over LSTMUnit steps (see the module docstring)."""
    state_names = ("h", "c")
    gate_multiple = 4

    def recurrent_param_shapes(self):
        return [("weight", (4 * self.hidden, self.hidden))]               # W_hc

    def recur_forward(self, pre, cont, state0, recur):
        (w_hc,) = recur
        steps, n, _ = pre.shape
        hidden = self.hidden
        hs = pre.new_empty(steps, n, hidden)
        cs = pre.new_empty(steps + 1, n, hidden)    # cs[t] = c_{t-1} of step t; cs[-1] = c_T
        h_conted = pre.new_empty(steps, n, hidden)
        acts = [pre.new_empty(steps, n, hidden) for _ in range(5)]     # i, f, o, g, tanh(c)
        h, cs[0] = state0
        for t in range(steps):
            torch.mul(h, cont[t].unsqueeze(1), out=h_conted[t])
            gates = torch.addmm(pre[t], h_conted[t], w_hc.t())
            c, h, step_acts = lstm_unit_forward(cs[t], gates, cont[t])
            cs[t + 1], hs[t] = c, h
            for store, a in zip(acts, step_acts):
                store[t] = a
        self.saved = (hs, cs, h_conted, acts)
        return hs, (hs[-1], cs[-1])

    def recur_backward(self, dout, cont, dfinal, recur, diffs):
        (w_hc,) = recur
        hs, cs, h_conted, acts = self.saved
        steps, n, hidden = hs.shape
        dgates = hs.new_empty(steps, n, 4 * hidden)
        if dfinal is not None:
            dh_next, dc_next = dfinal[0].clone(), dfinal[1].clone()
        else:
            dh_next, dc_next = hs.new_zeros(n, hidden), hs.new_zeros(n, hidden)
        for t in range(steps - 1, -1, -1):
            dc_next, dgates[t] = lstm_unit_backward(dc_next, dout[t] + dh_next, cs[t], [a[t] for a in acts])
            dh_next = (dgates[t] @ w_hc) * cont[t].unsqueeze(1)
        if diffs[0] is not None:
            diffs[0].add_(dgates.view(steps * n, -1).t() @ h_conted.view(steps * n, hidden))
        return dgates, (dh_next, dc_next)


@register_layer("LSTMUnit")
class LSTMUnitLayer(Layer):
    """One LSTM time step.  Bottoms c_prev (1 x N x H), gates (1 x N x 4H, blocks i f o g), cont (1 x N);
    tops c and h (1 x N x H).  Maths in the module docstring."""
    exact_num_bottom_blobs = 3
    exact_num_top_blobs = 2

    def allow_force_backward(self, bottom_index):
        return bottom_index != 2

    def reshape(self, bottom, top):
        c_prev, gates, cont = bottom
        n = c_prev.shape[1] if c_prev.num_axes >= 2 else -1
        for i, (b, axes) in enumerate(((c_prev, 3), (gates, 3), (cont, 2))):
            self.expect(b.num_axes == axes and b.shape[0] == 1 and b.shape[1] == n,
                        f"Expect: bottom[{i}] with {axes} axes, shape (1, {n}, ...), Actual: {b.shape}")
        self.hidden = c_prev.shape[2]
        self.expect(gates.shape[2] == 4 * self.hidden,
                    f"Expect: gate input (bottom[1]) with 4 * {self.hidden} = {4 * self.hidden} channels, "
                    f"Actual: {gates.shape[2]}")
        top[0].reshape_like(c_prev)
        top[1].reshape_like(c_prev)

    def forward(self, bottom, top):
        c, h, _ = lstm_unit_forward(bottom[0].data, bottom[1].data, bottom[2].data)
        top[0].data.copy_(c)
        top[1].data.copy_(h)

    def backward(self, top, propagate_down, bottom):
        self.expect(not propagate_down[2], "Expect: no backpropagation to the sequence indicators (bottom[2]), "
                                           "Actual: propagate_down[2] is true")
        if not (propagate_down[0] or propagate_down[1]):
            return
        c_prev = bottom[0].data
        # Recompute the activations from the bottoms, as Caffe does, rather than keeping them from forward.
        _, _, acts = lstm_unit_forward(c_prev, bottom[1].data, bottom[2].data)
        dc_prev, dgates = lstm_unit_backward(top[0].diff, top[1].diff, c_prev, acts)
        if propagate_down[0]:
            bottom[0].diff.copy_(dc_prev)
        if propagate_down[1]:
            bottom[1].diff.copy_(dgates)
