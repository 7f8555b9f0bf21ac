"""`GradientTape`: TensorFlow's spelling of a custom training step, on splitgrad's autograd.

    with sg.GradientTape() as tape:
        logits = model(images)
        loss = sg.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))

splitgrad records every operation on tensors that require grad, always (PyTorch's rule), so the
tape itself records nothing: `gradient` runs `loss.backward()` and hands back the gradients of
the variables asked for, leaving their `.grad` as it found them. It is the same as writing
`loss.backward()` and reading `.grad` (PyTorch's habit), for programs written the lab's way.
"""

from __future__ import annotations

from .tensor import Tensor


class GradientTape:
    """d(target)/d(source) for each source: `tape.gradient(target, sources)`.

    A non-scalar target is summed first (as TensorFlow does). A source that the target does
    not depend on gets None, as in TensorFlow. Each tape answers one `gradient` call unless
    made with `persistent=True`.
    """

    def __init__(self, persistent=False):
        self.persistent = bool(persistent)
        self._used = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def gradient(self, target, sources):
        if self._used and not self.persistent:
            raise RuntimeError(
                "GradientTape.gradient can be called once per tape; make the tape with "
                "persistent=True to ask for several gradients"
            )
        self._used = True
        if not isinstance(target, Tensor):
            raise TypeError(f"GradientTape.gradient: the target must be a Tensor, got {target!r}")
        single = isinstance(sources, Tensor)
        sources = [sources] if single else list(sources)
        saved = [s.grad for s in sources]
        for s in sources:
            s.grad = None
        try:
            (target if target.data.ndim == 0 else target.sum()).backward()
            grads = [None if s.grad is None else s.grad.copy() for s in sources]
        finally:
            for s, g in zip(sources, saved):
                s.grad = g
        return grads[0] if single else grads
