"""Composite functions built from the primitives in ops.py (they need no backward of their own)."""

from __future__ import annotations

from . import ops
from .tensor import Tensor


def silu(x: Tensor) -> Tensor:
    """x·sigmoid(x) (also called swish)."""
    return x * ops.sigmoid(x)


def linear_activation(x: Tensor) -> Tensor:
    """The identity, for `activation=None` or "linear"."""
    return x


def l1_penalty(p: Tensor, rate: float) -> Tensor:
    """rate · Σ|p|."""
    return ops.abs(p).sum() * rate


def l2_penalty(p: Tensor, rate: float) -> Tensor:
    """rate · Σ p² (Keras convention: no 1/2)."""
    return (p * p).sum() * rate


def normalize(x: Tensor, axis=-1, eps=1e-12) -> Tensor:
    """x / max(||x||₂, eps) along `axis`."""
    norm = ops.sqrt((x * x).sum(axis=axis, keepdims=True))
    return x / ops.maximum(norm, eps)
