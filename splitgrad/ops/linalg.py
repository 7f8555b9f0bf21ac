"""Linear-algebra primitives: batched matmul, the fused Dense `Linear` (x·W + b), and
`DenseChain`, a stack of Dense layers as one op."""

from __future__ import annotations

import numpy as np

from .._kernels.compiled import activation_kernels
from .._kernels.thread_team import matmul
from ..tensor import Function, unbroadcast
from .activations import ReLU, Sigmoid, Tanh


# ----- linear algebra --------------------------------------------------------------------
class MatMul(Function):
    """z = a @ b (NumPy matmul rules, batched and broadcast)."""

    writes_grads = True  # 2-D operands: their gradients go straight into the buffers

    def forward(self, a, b):
        self.a, self.b = a, b
        if a.ndim == b.ndim == 2:  # on splitgrad's team inside a recurrent or conv model
            return matmul(a, b)
        return a @ b

    def backward(self, g):
        a, b = self.a, self.b
        ga = gb = None
        if a.ndim == b.ndim == 2:
            ga = matmul(g, b.T, out=self.grad_out(0, a.shape, g.dtype)) if self.needs[0] else None
            gb = matmul(a.T, g, out=self.grad_out(1, b.shape, g.dtype)) if self.needs[1] else None
            return ga, gb
        if a.ndim == 1 and b.ndim == 1:
            return (g * b if self.needs[0] else None, g * a if self.needs[1] else None)
        if self.needs[0]:
            if b.ndim == 1:
                ga = np.multiply.outer(g, b)
            else:
                ga = (g[..., None, :] if a.ndim == 1 else g) @ np.swapaxes(b, -1, -2)
                ga = unbroadcast(
                    ga.reshape(ga.shape[:-2] + ga.shape[-1:]) if a.ndim == 1 else ga, a.shape
                )
        if self.needs[1]:
            if a.ndim == 1:
                gb = np.multiply.outer(a, g) if b.ndim == 2 else a[:, None] * g[..., None, :]
                gb = unbroadcast(gb, b.shape)
            else:
                gg = g[..., None] if b.ndim == 1 else g
                gb = np.swapaxes(a, -1, -2) @ gg
                gb = unbroadcast(gb[..., 0] if b.ndim == 1 else gb, b.shape)
        return ga, gb


class Linear(Function):
    """z = x·W + b, the fused Dense primitive (x of shape (..., in), W of shape (in, out))."""

    writes_grads = True  # dW and db go straight into the optimizer's buffers (tensor.py)

    def forward(self, x, w, b=None):
        self.x, self.w = x, w
        self.bshape = None if b is None else b.shape
        # parallel.matmul: big products on splitgrad's helper threads (see parallel.py).
        out = matmul(x.reshape(-1, x.shape[-1]), w).reshape(x.shape[:-1] + (w.shape[1],))
        if b is not None:
            out += b
        return out

    def backward(self, g):
        x, w = self.x, self.w
        g2 = g.reshape(-1, g.shape[-1])
        gx = matmul(g2, w.T).reshape(x.shape) if self.needs[0] else None
        gw = gb = None
        if self.needs[1]:
            gw = matmul(x.reshape(-1, x.shape[-1]).T, g2, out=self.grad_out(1, w.shape, g.dtype))
        if len(self.needs) > 2 and self.needs[2]:
            out = self.grad_out(2, g2.shape[1:], g.dtype)
            gb = unbroadcast(np.add.reduce(g2, axis=0, out=out), self.bshape)
        return gx, gw, gb


# The inner activations DenseChain runs itself, by name: each op's own array math (forward,
# and the input gradient from the output), so the chain computes exactly what the ops do.
CHAIN_ACTIVATIONS = {"relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh}


class DenseChain(Function):
    """A stack of Dense layers as one op (layers/fusion.py): with h₀ = x,

        h_k = f_k(h_{k−1}·W_k + b_k)   (k = 1 … L; f_L is the identity)

    and backward is backpropagation through the stack written out, from the top:

        δ_L = g;  dW_k = h_{k−1}ᵀ·δ_k,  db_k = Σ_rows δ_k,  δ_{k−1} = f'_{k−1} ⊙ (δ_k·W_kᵀ)

    Inputs are x, W_1, b_1, …, W_L, b_L (a missing bias is None); `acts` names f_1 … f_{L−1}
    ("linear" or a key of CHAIN_ACTIVATIONS). Each step makes the same NumPy calls as Linear
    and the activation ops, so results are the same bits as the layers one by one; what the
    chain saves is one graph node and its Python per layer and activation (a small MLP's step
    is mostly that). The outer activation f_L stays with the last layer, so a sigmoid or softmax
    output still reaches the loss as probabilities with their logits.
    """

    writes_grads = True

    def forward(self, x, *weights, acts):
        self.x_shape, self.weights, self.acts = x.shape, weights, (*acts, "linear")
        h = x.reshape(-1, x.shape[-1])
        self.inputs, self.outputs = [], []  # h_{k−1} (each W_k's gradient) and h_k (f'_k)
        for k in range(len(weights) // 2):
            w, b = weights[2 * k], weights[2 * k + 1]
            self.inputs.append(h)
            h = _add_bias_activate(matmul(h, w), b, self.acts[k])
            self.outputs.append(h)
        return h.reshape(self.x_shape[:-1] + (h.shape[1],))

    def backward(self, g):
        weights, needs = self.weights, self.needs
        g = g.reshape(-1, g.shape[-1])
        grads = [None] * len(needs)
        for k in reversed(range(len(weights) // 2)):
            w, b = weights[2 * k], weights[2 * k + 1]
            if self.acts[k] != "linear":
                g = CHAIN_ACTIVATIONS[self.acts[k]].output_grad(g, self.outputs[k])
            if needs[1 + 2 * k]:
                out = self.grad_out(1 + 2 * k, w.shape, g.dtype)
                grads[1 + 2 * k] = matmul(self.inputs[k].T, g, out=out)
            if b is not None and needs[2 + 2 * k]:
                out = self.grad_out(2 + 2 * k, b.shape, g.dtype)
                grads[2 + 2 * k] = np.add.reduce(g, axis=0, out=out)
            if not any(needs[: 1 + 2 * k]):
                break  # nothing below this layer wants a gradient
            g = matmul(g, w.T)
        else:
            grads[0] = g.reshape(self.x_shape)
        return tuple(grads)


def _add_bias_activate(h, b, act):
    """f(h + b) for a fresh product h, in place; ReLU's in one compiled pass where it can
    (_kernels/activation_jit.py: the same bits as `h += b` then np.maximum)."""
    jit = activation_kernels(h.dtype) if act == "relu" else None
    if jit is not None and (b is None or b.dtype == h.dtype):
        jit.bias_relu(h, h[0] if b is None else b, b is not None, True)
        return h
    if b is not None:
        h += b
    return h if act == "linear" else CHAIN_ACTIVATIONS[act].on_array(h)
