"""Activation checkpointing: a block run without keeping its graph, and rebuilt on backward.

    z = recompute(fn, x, weights, keep)

forward: z = fn(x), computed with no graph recorded, so the activations inside the block are
freed at once; the node keeps only x (the weights live anyway).
backward: run fn(x) again, this time recording a graph, from the same inputs and the same
random and running state (`keep` puts back what the first forward saw), and backpropagate g
through it: dL/dx and dL/dθ for each weight θ, the very numbers the stored graph would give.

Memory: the activations at the block's boundary instead of every one inside it; cost: one
more forward of the block. Chen et al. 2016, "Training deep nets with sublinear memory cost";
PyTorch's torch.utils.checkpoint.
"""

from __future__ import annotations

import contextlib

from .. import tensor as _engine
from ..tensor import Function, Tensor


@contextlib.contextmanager
def _recording(flag: bool):
    """Record graphs (or not) inside the block, whatever the caller's mode."""
    previous = _engine._state.grad_enabled
    _engine._state.grad_enabled = flag
    try:
        yield
    finally:
        _engine._state.grad_enabled = previous


class RecomputeFn(Function):
    """z = fn(x) with only x kept; backward re-runs fn with a graph and backpropagates g.

    Inputs: x, then the block's trainable weights (Tensors, so their gradients come back
    through the engine like any op's). `fn` maps a Tensor to a Tensor. `keep` has `save()`,
    returning a token of the state a forward reads and may change (generator states for
    Dropout, running statistics), and `restore(token)`; the recomputation runs from the first
    forward's token, and the state is put back as it was before the recomputation after it.
    """

    def forward(self, x, *weights, fn=None, keep=None):
        self.fn, self.keep, self.x = fn, keep, x
        self.before = keep.save() if keep is not None else None
        with _recording(False):
            out = fn(Tensor(x))
        return out.data

    def backward(self, g):
        weights = self.parents[1:]
        x = Tensor(self.x, requires_grad=self.needs[0])
        # The inner backward accumulates into the weights' .grad; set the caller's gradients
        # aside so that only this block's contribution is read and handed to the engine.
        kept = [w.grad for w in weights]
        now = self.keep.save() if self.keep is not None else None
        try:
            for w in weights:
                w.grad = None
            if self.keep is not None:
                self.keep.restore(self.before)
            with _recording(True):
                out = self.fn(x)
            out.backward(g)
            grads = [w.grad if need else None for w, need in zip(weights, self.needs[1:])]
        finally:
            if self.keep is not None:
                self.keep.restore(now)
            for w, grad in zip(weights, kept):
                w.grad = grad
        return (x.grad if self.needs[0] else None, *grads)


def recompute(fn, x: Tensor, weights, keep=None) -> Tensor:
    """fn(x) through `RecomputeFn`: `weights` are the trainable tensors fn uses."""
    return RecomputeFn.apply(x, *weights, fn=fn, keep=keep)
