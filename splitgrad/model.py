"""Model and Sequential: a Layer with compile / fit / evaluate / predict / save.

(Forward part only for now; the training loop lands next.)
"""

from __future__ import annotations

from .nn.layer import Layer, layer_class, register


class Model(Layer):
    """A layer that can be trained. Subclass it and write `call(x)`, or use `Sequential`."""


@register
class Sequential(Model):
    """y = layer_n(... layer_2(layer_1(x))). `Sequential([...])` or `.add(layer)`."""

    def __init__(self, layers=None, name=None, dtype="float32"):
        super().__init__(name=name, dtype=dtype)
        self.layers = list(layers or [])

    def add(self, layer):
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add expects a Layer, got {type(layer).__name__}")
        self.layers = self.layers + [layer]
        self.built = False

    def build(self, input_shape):
        for layer in self.layers:
            if layer.dtype != self.dtype:
                layer.dtype = self.dtype

    def call(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

    def get_config(self):
        return {**super().get_config(),
                "layers": [{"class": type(la).__name__, "config": la.get_config()}
                           for la in self.layers]}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        layers = [layer_class(c["class"]).from_config(c["config"]) for c in config.pop("layers")]
        return cls(layers=layers, **config)
