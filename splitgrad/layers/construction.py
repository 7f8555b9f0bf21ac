"""What every Layer subclass gets when its class is made (Layer.__init_subclass__): Keras's
constructor keywords, a `build` that leaves the layer built when called directly, and a config
made from the constructor's arguments for classes that write no get_config of their own.

    class OurDenseLayer(nn.Layer):                # the MIT 6.S191 lab 1 layer
        def __init__(self, n_output_nodes): ...
    OurDenseLayer(3, input_shape=(2,))             # input_shape= without a **kwargs of its own
    OurDenseLayer(3).get_config()                  # {"n_output_nodes": 3, "name": ..., ...}
"""

from __future__ import annotations

import functools
import inspect


def keras_init(init):
    """Wrap a subclass's __init__ so that it also takes Keras's `input_shape=`, `input_dim=`,
    `batch_input_shape=` and `trainable=` keywords (unless it names them itself), and records
    the arguments of the outermost call (what a generic `get_config` saves)."""
    own = inspect.signature(init).parameters
    keys = [
        k for k in ("input_shape", "input_dim", "batch_input_shape", "trainable") if k not in own
    ]

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        extra = {k: kwargs.pop(k) for k in keys if k in kwargs}
        outer = "_init_args" not in self.__dict__
        if outer:
            object.__setattr__(self, "_init_args", (init, args, dict(kwargs)))
        init(self, *args, **kwargs)
        shape = extra.get("batch_input_shape")
        if extra.get("input_shape") is not None:
            shape = (None, *tuple(extra["input_shape"]))
        elif extra.get("input_dim") is not None:
            shape = (None, int(extra["input_dim"]))
        if shape is not None:
            self.declared_input_shape = tuple(None if s is None else int(s) for s in shape)
        if extra.get("trainable") is False:
            self.trainable = False

    return __init__


def marks_built(build):
    """Wrap a subclass's build so that calling it directly (the lab's `layer.build((1, 2))`
    before `layer.call(x)`) leaves the layer built, and a later call does not build again."""

    @functools.wraps(build)
    def wrapper(self, input_shape=None, *args, **kwargs):
        out = build(self, input_shape, *args, **kwargs)
        if self.input_shape is None and input_shape is not None:
            self.input_shape = as_shape(input_shape)
        self.built = True
        return out

    return wrapper


def as_shape(shape):
    if isinstance(shape, dict):
        return {k: as_shape(v) for k, v in shape.items()}
    if isinstance(shape, (list, tuple)) and shape and isinstance(shape[0], (list, tuple)):
        return [as_shape(s) for s in shape]
    return tuple(None if s is None else int(s) for s in shape)


def generic_config(cls) -> bool:
    """True when the first class (in `cls`'s MRO) with a get_config is Layer's or Model's."""
    for klass in cls.__mro__:
        if "get_config" in klass.__dict__:
            return bool(klass.__dict__.get("_generic_config", False))
    return False


def init_arguments(layer) -> dict:
    """{argument: value} of the call that made `layer` (less name and dtype)."""
    init, args, kwargs = layer.__dict__.get("_init_args", (None, (), {}))
    if init is None:
        return {}
    try:
        bound = inspect.signature(init).bind(layer, *args, **kwargs)
    except TypeError:
        return {}
    out = {}
    for key, value in list(bound.arguments.items())[1:]:
        kind = inspect.signature(init).parameters[key].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            out.update(value)
        elif kind is not inspect.Parameter.VAR_POSITIONAL:
            out[key] = list(value) if isinstance(value, tuple) else value
    for key in ("name", "dtype"):
        out.pop(key, None)
    return out


def takes(cls, key) -> bool:
    """True when cls(...) accepts the keyword `key`."""
    params = inspect.signature(cls.__init__).parameters
    return key in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
