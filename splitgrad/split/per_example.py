"""Per-example clipped gradient sums for DP-SGD, vectorised over the batch where the model allows.

DP-SGD needs Σ_i clip_C(∇ℓ_i): every example's gradient, clipped to L2 norm ≤ C, then summed.
Looping over examples costs one forward and backward pass per example. For a `Sequential` of
`Dense` layers and parameter-free layers (activations, Dropout, Flatten, pooling) one batched
pass is enough, because a Dense layer's per-example gradient is an outer product:

    ∂ℓ_i/∂W = a_iᵀ δ_i,   ∂ℓ_i/∂b = Σ_t δ_i,t     (a = the layer's input, δ = ∂ℓ_i/∂(a W + b))

so ‖∂ℓ_i/∂W‖² = ‖a_i‖²·‖δ_i‖² for 2-D inputs, and Σ_{t,s} (a_t·a_s)(δ_t·δ_s) for sequences
(the "ghost norm" of Goodfellow 2015 / Li et al. 2022), and the clipped sum is one matrix
product aᵀ(c ⊙ δ) with c_i = min(1, C/(‖g_i‖ + 1e-6)). δ is read off a zero "probe" tensor
added to each Dense pre-activation: its gradient is exactly ∂loss/∂(pre-activation).

Any other model (convolutions, normalisation, regularisers, custom losses) falls back to the
per-example loop, which is exact for everything.
"""

from __future__ import annotations

import numpy as np

from .. import ops
from ..layers.core import Dense
from ..model import Model
from ..tensor import Tensor
from . import tools

EPS = 1e-6  # Opacus' factor: the clipped norm is strictly below C


def clipped_sum(model, x, y, clip):
    """(Σ_i clip_C(∇ℓ_i) as a float64 flat vector, Σ_i ℓ_i, largest clipped norm).

    `clip=None` sums the unclipped gradients. Vectorised when `vectorisable(model)`.
    """
    if len(x) == 0:
        return np.zeros(tools.count(model)), 0.0, 0.0
    if vectorisable(model):
        return _batched(model, x, y, clip)
    return _looped(model, x, y, clip)


def vectorisable(model) -> bool:
    """True for a Sequential of Dense and parameter-free layers with the standard loss."""
    layers = getattr(model, "layers", None)
    if layers is None or type(model).compute_loss is not Model.compute_loss:
        return False
    if model.regularization_losses() or getattr(model, "loss", None) is None:
        return False
    for layer in layers:
        dense = type(layer).call is Dense.call
        if layer.named_weights() and not dense:
            return False  # a layer with weights we cannot take apart per example
    covered = {id(layer.kernel) for layer in layers if type(layer).call is Dense.call}
    covered |= {id(layer.bias) for layer in layers
                if type(layer).call is Dense.call and layer.bias is not None}
    return all(id(p) in covered for p in model.parameters())


def _looped(model, x, y, clip):
    total, loss_sum, largest = None, 0.0, 0.0
    for i in range(len(x)):
        loss_sum += tools.backward(model, x[i:i + 1], y[i:i + 1])
        g = tools.get_flat_grad(model).astype(np.float64)
        norm = float(np.sqrt(np.dot(g, g)))
        if clip is not None:
            g *= min(1.0, clip / (norm + EPS))
        largest = max(largest, float(np.sqrt(np.dot(g, g))))
        total = g if total is None else total + g
    return total, loss_sum, largest


def _batched(model, x, y, clip):
    tools.zero_grad(model)
    if not model.training:
        model.train()
    n = len(x)
    h = model.to_tensor(x)
    probes = []  # (layer, input array, probe tensor)
    for layer in model.layers:
        if type(layer).call is Dense.call:
            h = layer.to_tensor(h)
            layer.expect_last_dim(h, layer.kernel.shape[0])
            pre = ops.linear(h, layer.kernel, layer.bias)
            probe = Tensor(np.zeros(pre.shape, pre.dtype), requires_grad=True)
            probes.append((layer, h.data, probe))
            h = layer.activation(pre + probe)
        else:
            h = layer(h)
    loss = model.loss(h, y)
    loss.backward()
    # The loss is a mean over the n examples, so ∂ℓ_i/∂pre_i = n · probe.grad[i].
    parts, sq = [], np.zeros(n)
    for layer, a, probe in probes:
        a64 = a.reshape(n, -1, a.shape[-1]).astype(np.float64)
        d64 = probe.grad.reshape(n, -1, probe.shape[-1]).astype(np.float64) * n
        parts.append((layer, a64, d64))
        if a64.shape[1] == 1:  # one position per example: the outer product's norm factorises
            sq += np.einsum("bti,bti->b", a64, a64) * np.einsum("bto,bto->b", d64, d64)
        else:
            gram_a = np.einsum("bti,bsi->bts", a64, a64)
            gram_d = np.einsum("bto,bso->bts", d64, d64)
            sq += np.einsum("bts,bts->b", gram_a, gram_d)
        if layer.bias is not None:
            db = d64.sum(axis=1)
            sq += np.einsum("bo,bo->b", db, db)
    norms = np.sqrt(sq)
    scale = np.ones(n) if clip is None else np.minimum(1.0, clip / (norms + EPS))
    grads = {}
    for layer, a64, d64 in parts:
        weighted = d64 * scale[:, None, None]
        grads[id(layer.kernel)] = np.einsum("bti,bto->io", a64, weighted)
        if layer.bias is not None:
            grads[id(layer.bias)] = weighted.sum(axis=(0, 1))
    total = np.concatenate([grads[id(p)].ravel() for p in model.parameters()])
    tools.zero_grad(model)  # the batched pass left mean gradients behind; nobody may use them
    return total, float(loss.data) * n, float(np.max(norms * scale))
