"""Learning-rate schedules: `lr = schedule(step)`, where step counts the optimizer's finished steps.

An optimizer whose `learning_rate` is a schedule evaluates it before every update, at its own
`iterations` (0 for the first update), as Keras does. Every schedule is a small pure function of
the step with a JSON config (`serialize` / `get`), so a checkpoint can store it.
"""

from __future__ import annotations

import math

from . import config
from .config import Configurable


class LearningRateSchedule(Configurable):
    """Base class: `__call__(step) -> float`; `get_config()` holds the constructor arguments."""

    def __call__(self, step: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def get_config(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError


def _positive(cls_name, arg, value):
    if not value > 0:
        raise ValueError(f"{cls_name}: {arg} must be positive, got {value!r}")
    return value


class StepDecay(LearningRateSchedule):
    """lr = initial_learning_rate · gamma^⌊step / step_size⌋ (PyTorch's StepLR, counted in
    steps)."""

    def __init__(self, initial_learning_rate, step_size, gamma=0.1):
        self.initial_learning_rate = float(initial_learning_rate)
        self.step_size = int(_positive("StepDecay", "step_size", step_size))
        self.gamma = float(gamma)

    def __call__(self, step):
        return self.initial_learning_rate * self.gamma ** (int(step) // self.step_size)

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "step_size": self.step_size,
            "gamma": self.gamma,
        }


class ExponentialDecay(LearningRateSchedule):
    """lr = initial_learning_rate · decay_rate^(step / decay_steps); staircase floors the power."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False):
        self.initial_learning_rate = float(initial_learning_rate)
        self.decay_steps = int(_positive("ExponentialDecay", "decay_steps", decay_steps))
        self.decay_rate = float(decay_rate)
        self.staircase = bool(staircase)

    def __call__(self, step):
        power = int(step) / self.decay_steps
        if self.staircase:
            power = math.floor(power)
        return self.initial_learning_rate * self.decay_rate**power

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "decay_rate": self.decay_rate,
            "staircase": self.staircase,
        }


class CosineDecay(LearningRateSchedule):
    """Cosine decay from peak to alpha·peak over decay_steps: peak·((1−α)·½(1 + cos(π·s/D)) + α).

    With warmup_target set, lr first rises linearly from initial_learning_rate to warmup_target
    over warmup_steps, and warmup_target is the peak (Keras's CosineDecay).
    """

    def __init__(
        self, initial_learning_rate, decay_steps, alpha=0.0, warmup_steps=0, warmup_target=None
    ):
        self.initial_learning_rate = float(initial_learning_rate)
        self.decay_steps = int(_positive("CosineDecay", "decay_steps", decay_steps))
        self.alpha = float(alpha)
        self.warmup_steps = int(warmup_steps)
        self.warmup_target = None if warmup_target is None else float(warmup_target)
        if self.warmup_steps < 0:
            raise ValueError(f"CosineDecay: warmup_steps must be ≥ 0, got {warmup_steps!r}")

    def __call__(self, step):
        step = int(step)
        peak = self.initial_learning_rate
        if self.warmup_target is not None:
            peak = self.warmup_target
            if step < self.warmup_steps:
                frac = step / self.warmup_steps
                return self.initial_learning_rate + (peak - self.initial_learning_rate) * frac
            step -= self.warmup_steps
        frac = min(step, self.decay_steps) / self.decay_steps
        return peak * ((1 - self.alpha) * 0.5 * (1 + math.cos(math.pi * frac)) + self.alpha)

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "alpha": self.alpha,
            "warmup_steps": self.warmup_steps,
            "warmup_target": self.warmup_target,
        }


class LinearWarmup(LearningRateSchedule):
    """Linear ramp from initial_learning_rate to lr(0) over warmup_steps, then lr(step − warmup).

    `learning_rate` is a float (constant afterwards) or another schedule that takes over.
    """

    def __init__(self, learning_rate, warmup_steps, initial_learning_rate=0.0):
        self.after = get(learning_rate)
        self.warmup_steps = int(_positive("LinearWarmup", "warmup_steps", warmup_steps))
        self.initial_learning_rate = float(initial_learning_rate)

    def _after(self, step):
        return self.after(step) if callable(self.after) else self.after

    def __call__(self, step):
        step = int(step)
        if step >= self.warmup_steps:
            return self._after(step - self.warmup_steps)
        target = self._after(0)
        frac = step / self.warmup_steps
        return self.initial_learning_rate + (target - self.initial_learning_rate) * frac

    def get_config(self):
        after = serialize(self.after) if callable(self.after) else self.after
        return {
            "learning_rate": after,
            "warmup_steps": self.warmup_steps,
            "initial_learning_rate": self.initial_learning_rate,
        }


_SCHEDULES = {c.__name__: c for c in (StepDecay, ExponentialDecay, CosineDecay, LinearWarmup)}


def serialize(schedule) -> dict | float:
    """{"class_name": ..., "config": ...} for a schedule; a plain float stays a float."""
    if isinstance(schedule, LearningRateSchedule):
        return config.serialize(schedule)
    return float(schedule)


def get(identifier):
    """A float learning rate or a schedule, from a number, a schedule or a serialised dict."""
    if isinstance(identifier, LearningRateSchedule):
        return identifier
    if isinstance(identifier, dict):
        return config.deserialize(identifier, _SCHEDULES, "learning-rate schedule")
    if isinstance(identifier, (int, float)) and not isinstance(identifier, bool):
        return float(identifier)
    if hasattr(identifier, "item") and getattr(identifier, "size", 0) == 1:
        return float(identifier.item())
    raise TypeError(
        f"learning_rate must be a number or a LearningRateSchedule, got "
        f"{type(identifier).__name__}: {identifier!r}"
    )
