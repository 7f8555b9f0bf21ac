"""Optimizers with PyTorch's exact update rules and Keras's argument names.

`Adam(params=None, learning_rate=1e-3, ...)`: parameters may come later through `build(params)`
(Keras users create the optimizer before the model exists; `Model.compile`/`fit` build it).
Then `loss.backward(); opt.step(); opt.zero_grad()`.

PyTorch's parameter groups work too: `SGD([{"params": head, "lr": 0.1}, {"params": rest}],
lr=0.01, momentum=0.9)`; `opt.param_groups` are live views (`g["lr"] *= 0.5` applies at the
next step; groups.py). Clipping: `clipnorm` clips each variable's gradient to that norm (Keras),
`global_clipnorm` the norm of all gradients together (torch's clip_grad_norm_), `clipvalue`
each value.

The base class with its flat-buffer fast path is in base.py, the rules in sgd.py, adam.py
(Adam, AdamW) and adaptive.py (RMSprop, Adagrad, Adadelta); this module re-exports them and
holds the registry: `get` and `serialize`.
"""

from __future__ import annotations

from .. import config
from .adam import Adam as Adam
from .adam import AdamW as AdamW
from .adaptive import Adadelta as Adadelta
from .adaptive import Adagrad as Adagrad
from .adaptive import RMSprop as RMSprop
from .base import Optimizer as Optimizer
from .base import _l2 as _l2
from .base import _named_params as _named_params
from .groups import ParamGroup as ParamGroup
from .sgd import SGD as SGD

_OPTIMIZERS = {c.__name__.lower(): c for c in (SGD, Adam, AdamW, RMSprop, Adagrad, Adadelta)}


def serialize(optimizer: Optimizer) -> dict:
    """{"class_name": ..., "config": ...}, JSON-serialisable; `get` rebuilds the optimizer."""
    return config.serialize(optimizer)


def get(identifier, **kwargs):
    """An optimizer from a name ("sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta"), a
    serialised dict, a class or an instance (returned as is). `kwargs` go to the constructor."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Optimizer):
        return identifier(**kwargs)
    if isinstance(identifier, dict):
        return config.deserialize(identifier, _OPTIMIZERS, "optimizer", key=str.lower, **kwargs)
    if isinstance(identifier, str):
        cls = _OPTIMIZERS.get(identifier.lower().replace("_", ""))
        if cls is None:
            raise ValueError(
                f"unknown optimizer {identifier!r}; expected one of "
                f"{sorted(_OPTIMIZERS)} or an Optimizer instance."
            )
        return cls(**kwargs)
    raise TypeError(f"optimizer must be a name or an Optimizer, got {type(identifier).__name__}")
