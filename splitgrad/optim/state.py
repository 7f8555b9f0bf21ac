"""The optimizer's settings and state as data: `get_config`, `state_dict`, `load_state_dict`.

`state_dict()` = {"class_name", "config", "step", "param_steps", "state": {"name.key": array}}
(copies); `load_state_dict` checks everything before it keeps anything. A mixin of `Optimizer`
(base.py), which holds the arrays these read and write.
"""

from __future__ import annotations

import numpy as np

from .. import schedules


class StateMixin:
    """Configuration and state of an `Optimizer` (see the module docstring)."""

    def get_config(self) -> dict:
        """Constructor arguments as JSON (a schedule is stored as its serialised dict)."""
        config = {
            "name": self.name,
            "learning_rate": schedules.serialize(self._lr),
            "clipnorm": self.clipnorm,
            "clipvalue": self.clipvalue,
            "global_clipnorm": self.global_clipnorm,
        }
        for key in self.defaults:
            if key != "learning_rate":
                config[key] = getattr(self, key)
        if self._explicit:
            config["param_groups"] = self._group_config()
        return config

    def state_dict(self) -> dict:
        """{"class_name", "config", "step", "param_steps", "state": {"name.key": ndarray}}
        (copies)."""
        self._require_built("state_dict")
        steps = self._steps or [self._t] * len(self._params)
        state = {}
        for i, name in enumerate(self._names):
            shape = self._views[i].shape
            for key, arr in zip(self._state_keys, self._pstate[i]):
                state[f"{name}.{key}"] = arr.reshape(shape).copy()
        return {
            "class_name": type(self).__name__,
            "config": self.get_config(),
            "step": self.iterations,
            "param_steps": list(steps),
            "state": state,
        }

    def load_state_dict(self, state_dict: dict):
        """Restore hyperparameters, step counts and state (deferred until `build` if needed).

        Everything is checked before anything is kept: the hyper-parameters by the
        constructor's own validation (`_check`), the step counts, and every state array's
        shape. On a ValueError (or TypeError) the optimizer is left exactly as it was.
        """
        cls = type(self).__name__
        if not isinstance(state_dict, dict):
            raise TypeError(
                f"{cls}.load_state_dict: expected a dict (from state_dict()), got "
                f"{type(state_dict).__name__}"
            )
        if state_dict.get("class_name", cls) != cls:
            raise ValueError(
                f"{cls}.load_state_dict: the state was saved by "
                f"{state_dict['class_name']}; load it into that optimizer class."
            )
        config = state_dict.get("config", {})
        if not isinstance(config, dict):
            raise TypeError(
                f"{cls}.load_state_dict: 'config' must be a dict, got {type(config).__name__}"
            )
        step = _count(state_dict.get("step", 0), f"{cls}.load_state_dict: step")
        kept = self._hyper() | {"_lr": self._lr, "iterations": self.iterations}
        kept |= {
            k: getattr(self, k) for k in ("_group_over", "_group_labels", "_explicit", "_layout")
        }
        try:
            for key in self.defaults:
                if key in config and key != "learning_rate":
                    setattr(self, key, config[key])
            if "learning_rate" in config:
                try:
                    self.learning_rate = config["learning_rate"]
                except TypeError as exc:
                    raise ValueError(str(exc)) from None
            self.clipnorm, self.clipvalue = config.get("clipnorm"), config.get("clipvalue")
            self.global_clipnorm = config.get("global_clipnorm")
            if "global_clipnorm" not in config:  # saved when clipnorm meant the global norm
                self.global_clipnorm, self.clipnorm = self.clipnorm, None
            self._load_groups(config.get("param_groups"))
            self.iterations = step
            self._check()
            self._check_groups()
            if not self.built:
                self._pending = state_dict
                return
            steps, arrays = self._checked_state(state_dict)
        except (ValueError, TypeError) as exc:
            for key, value in kept.items():
                setattr(self, key, value)
            text = str(exc)
            raise type(exc)(
                text if text.startswith(cls) else f"{cls}.load_state_dict: {text}"
            ) from None
        for i in range(len(self._names)):
            for arr, src in zip(self._pstate[i], arrays[i]):
                arr[...] = src.reshape(-1)
        uniform = all(s == steps[0] for s in steps) if steps else True
        self._t, self._steps = (steps[0] if steps else 0, None) if uniform else (0, steps)

    def _hyper(self) -> dict:
        """The hyper-parameters other than the learning rate, as attributes (for rollback)."""
        keys = [k for k in self.defaults if k != "learning_rate"]
        keys += ["clipnorm", "clipvalue", "global_clipnorm"]
        return {k: getattr(self, k) for k in keys}

    def _checked_state(self, state_dict):
        """(per-parameter step counts, per-parameter state arrays), checked against this
        optimizer's parameters; raises before anything is assigned."""
        cls = type(self).__name__
        raw = state_dict.get("param_steps")
        if not isinstance(raw, (list, tuple)):
            raise TypeError(
                f"{cls}.load_state_dict: 'param_steps' must be a list of step "
                f"counts, got {type(raw).__name__}"
            )
        steps = [_count(s, f"{cls}.load_state_dict: param_steps") for s in raw]
        expected = {
            f"{n}.{k}": v.shape
            for n, v in zip(self._names, self._views)
            for k in self.state_names()
        }
        saved = state_dict.get("state")
        if (
            not isinstance(saved, dict)
            or len(steps) != len(self._params)
            or (set(saved) != set(expected))
            or self.state_names() != self._state_keys  # settings that need other arrays
        ):
            found = sorted(saved) if isinstance(saved, dict) else type(saved).__name__
            raise ValueError(
                f"{cls}.load_state_dict: saved state has entries {found} for "
                f"{len(steps)} parameters, this optimizer expects "
                f"{sorted(expected)}; build it with the same parameters "
                "(and the same amsgrad/momentum/centered settings)."
            )
        arrays = []
        for name in self._names:
            row = []
            for key in self._state_keys:
                src = np.asarray(saved[f"{name}.{key}"])
                if src.shape != expected[f"{name}.{key}"]:
                    raise ValueError(
                        f"{cls}.load_state_dict: {name}.{key} has shape "
                        f"{src.shape}, expected {expected[f'{name}.{key}']}"
                    )
                row.append(src)
            arrays.append(row)
        return steps, arrays


def _count(value, what) -> int:
    """A step count: an integer ≥ 0."""
    if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool)) or value < 0:
        raise ValueError(f"{what} must be an integer ≥ 0, got {value!r}")
    return int(value)
