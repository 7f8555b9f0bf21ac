"""The callback protocol: `Callback` (the hooks `fit` calls), `CallbackList` (calls them all),
`History` (always on), `LambdaCallback` (a callback from plain functions), and `monitor_mode`,
the Keras rule for which way a monitored quantity should move.
"""

from __future__ import annotations


class Callback:
    """Base class: override any of the on_* hooks. `self.model` is set by fit.

    `fit` calls, in order: on_train_begin; per epoch on_epoch_begin(epoch), per batch
    on_train_batch_begin(batch) and on_train_batch_end(batch, logs), then
    on_epoch_end(epoch, logs) with the epoch's loss, metrics and val_* values; on_train_end.
    A callback may add entries to `logs`; the callbacks after it see them.
    """

    model = None

    def set_model(self, model):
        self.model = model

    def on_train_begin(self, logs=None): ...
    def on_train_end(self, logs=None): ...
    def on_epoch_begin(self, epoch, logs=None): ...
    def on_epoch_end(self, epoch, logs=None): ...
    def on_train_batch_begin(self, batch, logs=None): ...
    def on_train_batch_end(self, batch, logs=None): ...


class CallbackList(Callback):
    """Calls the same hook on every callback, in order. A callback need not subclass
    `Callback`: hooks it lacks are skipped, and it gets `.model` if it has no `set_model`."""

    def __init__(self, callbacks, model):
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if hasattr(cb, "set_model"):
                cb.set_model(model)
            else:
                cb.model = model

    def __getattribute__(self, name):
        if name.startswith("on_"):

            def call_all(*args, **kwargs):
                for cb in object.__getattribute__(self, "callbacks"):
                    hook = getattr(cb, name, None)
                    if hook is not None:
                        hook(*args, **kwargs)

            return call_all
        return object.__getattribute__(self, name)


class History(Callback):
    """Records every epoch's logs: `.history["loss"]`, `.history["val_loss"]`, ..., `.epoch`."""

    def __init__(self):
        self.history = {}
        self.epoch = []
        self.traffic = None  # filled by a way that splits training across places

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)


# Hooks Keras callbacks may define. splitgrad's loop calls the train ones; evaluate and
# predict call none, so on_test_* / on_predict_* are accepted (a Keras program runs) but idle.
_KERAS_HOOKS = {
    f"on_{stage}_{when}"
    for stage in ("train", "test", "predict", "epoch")
    for when in ("begin", "end")
} | {
    f"on_{stage}_batch_{when}"
    for stage in ("train", "test", "predict")
    for when in ("begin", "end")
}
# Keras's older names for the training-batch hooks.
_ALIASES = {"on_batch_begin": "on_train_batch_begin", "on_batch_end": "on_train_batch_end"}


class LambdaCallback(Callback):
    """A callback from plain functions: LambdaCallback(on_epoch_end=lambda epoch, logs: ...).

    Any Keras hook name is accepted; on_batch_begin / on_batch_end mean the training-batch
    hooks, as in Keras. A name Keras does not have is an error, not a hook never called."""

    def __init__(self, **hooks):
        for name, fn in hooks.items():
            target = _ALIASES.get(name, name)
            if target not in _KERAS_HOOKS:
                raise ValueError(
                    f"LambdaCallback: unknown hook {name!r}; known hooks: "
                    f"{', '.join(sorted(_KERAS_HOOKS | set(_ALIASES)))}"
                )
            setattr(self, target, fn)


def monitor_mode(monitor, mode, who="callback"):
    """'min' or 'max': which way `monitor` should move. 'auto' maximises names holding "acc"
    or "auc" (accuracy, val_auc) and minimises everything else (losses, errors)."""
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"{who}: mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        mode = "max" if ("acc" in monitor or "auc" in monitor) else "min"
    return mode
