"""Merge layers: several tensors in, one out (Keras's Concatenate, Add, Subtract, Multiply,
Average). They join the branches of a functional model: `Concatenate()([a, b])`."""

from __future__ import annotations

from .. import ops
from .layer import Layer, register


class _Merge(Layer):
    """Shared input handling: a list of at least two tensors of one shape (Concatenate:
    equal but for `axis`)."""

    minimum = 2

    def _tensors(self, x):
        if not isinstance(x, (list, tuple)) or len(x) < self.minimum:
            raise ValueError(
                f"layer {self.name!r} ({type(self).__name__}) takes a list of at least "
                f"{self.minimum} tensors, e.g. {type(self).__name__}()([a, b]); got "
                f"{type(x).__name__}"
            )
        return [self.to_tensor(t) for t in x]

    def _same_shapes(self, xs):
        shapes = {tuple(t.shape) for t in xs}
        if len(shapes) > 1:
            raise ValueError(
                f"layer {self.name!r} ({type(self).__name__}) needs inputs of one shape, got "
                f"{[tuple(t.shape) for t in xs]}"
            )


@register
class Concatenate(_Merge):
    """y = [x_1, x_2, ...] joined along `axis` (the last by default)."""

    def __init__(self, axis=-1, name=None, dtype="float32"):
        super().__init__(name=name, dtype=dtype)
        self.axis = int(axis)

    def call(self, x):
        xs = self._tensors(x)
        rest = {tuple(s for i, s in enumerate(t.shape) if i != self.axis % t.ndim) for t in xs}
        if len({t.ndim for t in xs}) > 1 or len(rest) > 1:
            raise ValueError(
                f"layer {self.name!r} (Concatenate) joins along axis {self.axis}; the other "
                f"axes must agree, got shapes {[tuple(t.shape) for t in xs]}"
            )
        return ops.concatenate(xs, axis=self.axis)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


@register
class Add(_Merge):
    """y = x_1 + x_2 + ..."""

    def call(self, x):
        xs = self._tensors(x)
        self._same_shapes(xs)
        return _sum(xs)


@register
class Subtract(_Merge):
    """y = x_1 − x_2 (exactly two inputs)."""

    def call(self, x):
        xs = self._tensors(x)
        if len(xs) != 2:
            raise ValueError(
                f"layer {self.name!r} (Subtract) takes exactly 2 tensors, got {len(xs)}"
            )
        self._same_shapes(xs)
        return xs[0] - xs[1]


@register
class Multiply(_Merge):
    """y = x_1 · x_2 · ... (elementwise)."""

    def call(self, x):
        xs = self._tensors(x)
        self._same_shapes(xs)
        out = xs[0]
        for t in xs[1:]:
            out = out * t
        return out


@register
class Average(_Merge):
    """y = (x_1 + ... + x_n) / n."""

    def call(self, x):
        xs = self._tensors(x)
        self._same_shapes(xs)
        return _sum(xs) * (1.0 / len(xs))


def _sum(xs):
    out = xs[0]
    for t in xs[1:]:
        out = out + t
    return out
