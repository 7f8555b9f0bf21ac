"""The Optimizer base class: argument handling, flat buffers, clipping, stepping, state_dict.

Subclasses (sgd.py, adam.py, adaptive.py) supply only the update rule; `_l2` is the L2
weight-decay helper they share.

Speed: `build` copies all parameters of one dtype into ONE contiguous buffer and rebinds every
`p.data` to a view of it, and keeps one flat gradient buffer with a view per parameter.
`grad_buffers()` hands those views out, and `loss.backward(into=opt.grad_buffers())` (what
`Model.train_step` does) accumulates the gradients there. When every parameter's `.grad` is its
buffer view, `step` updates all of them with a few in-place NumPy calls on the flat arrays;
otherwise (a plain `loss.backward()`, some grads None or replaced) it runs the same kernel per
parameter on views, with identical results.
CAVEAT: an array obtained from `p.data` BEFORE `build` is stale afterwards; fetch `p.data` again.
If code later rebinds `p.data` to a new array, `step` copies it back into the flat buffer.
"""

from __future__ import annotations

import inspect
import math
from typing import ClassVar

import numpy as np

from .. import schedules
from ..config import Configurable
from ..tensor import Tensor


def _named_params(params) -> dict:
    if hasattr(params, "named_parameters") and callable(params.named_parameters):
        params = params.named_parameters()
    if isinstance(params, dict):
        items = list(params.items())
    else:
        items = [(str(i), p) for i, p in enumerate(params)]
    seen = set()
    out = {}
    for name, p in items:
        if not isinstance(p, Tensor):
            raise TypeError(
                f"optimizer: parameter {name!r} must be a Tensor, got "
                f"{type(p).__name__}; pass model.parameters() or a list of Tensors."
            )
        if id(p) in seen:
            raise ValueError(f"optimizer: parameter {name!r} appears twice; pass each once.")
        seen.add(id(p))
        if p.requires_grad:  # frozen tensors never get a gradient, so they get no state
            if p.data.dtype.kind != "f":
                raise TypeError(
                    f"optimizer: parameter {name!r} has dtype {p.data.dtype}; "
                    "only floating-point parameters can be trained."
                )
            out[str(name)] = p
    return out


class Optimizer(Configurable):
    """Base class: holds hyperparameters, flat buffers and per-parameter state; `step()` updates.

    Common arguments: `learning_rate` (alias `lr`; a float or a schedule), `clipnorm` (one global
    norm over all gradients, like torch.nn.utils.clip_grad_norm_ / Keras's global_clipnorm) or
    `clipvalue` (elementwise), applied to `.grad` in place before the update.
    Subclasses set `defaults` (hyperparameter → default), `state_names()` and
    `_update(p, g, state, scratch, t, lr)`, an in-place kernel on equal-shaped 1-D arrays.
    """

    defaults: ClassVar[dict] = {}
    n_scratch = 1

    def __init_subclass__(cls, **kwargs):
        # Show every hyperparameter with its default in help() and IDEs, though __init__ is shared.
        super().__init_subclass__(**kwargs)
        kw = inspect.Parameter.KEYWORD_ONLY
        args = [
            inspect.Parameter("params", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None),
            inspect.Parameter(
                "learning_rate",
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=cls.defaults.get("learning_rate"),
            ),
        ]
        args += [
            inspect.Parameter(k, kw, default=v)
            for k, v in cls.defaults.items()
            if k != "learning_rate"
        ]
        args += [
            inspect.Parameter(k, kw, default=None) for k in ("lr", "clipnorm", "clipvalue", "name")
        ]
        cls.__signature__ = inspect.Signature(args)

    def __init__(
        self,
        params=None,
        learning_rate=None,
        *,
        lr=None,
        clipnorm=None,
        clipvalue=None,
        name=None,
        **hyper,
    ):
        cls = type(self).__name__
        if isinstance(params, (int, float, schedules.LearningRateSchedule)) and not isinstance(
            params, bool
        ):
            params, learning_rate = None, params  # Keras habit: Adam(1e-3)
        if lr is not None and learning_rate is not None:
            raise ValueError(f"{cls}: give learning_rate or its alias lr, not both")
        rate = learning_rate if learning_rate is not None else lr
        self.learning_rate = self.defaults["learning_rate"] if rate is None else rate
        if clipnorm is not None and clipvalue is not None:
            raise ValueError(f"{cls}: set clipnorm or clipvalue, not both")
        for arg, v in (("clipnorm", clipnorm), ("clipvalue", clipvalue)):
            if v is not None and not (_real(v) and v > 0):
                raise ValueError(f"{cls}: {arg} must be positive, got {v!r}")
        self.clipnorm = None if clipnorm is None else float(clipnorm)
        self.clipvalue = None if clipvalue is None else float(clipvalue)
        self.name = name or cls.lower()
        for key, default in self.defaults.items():
            if key != "learning_rate":
                setattr(self, key, hyper.pop(key, default))
        if hyper:
            raise TypeError(
                f"{cls}: unknown arguments {sorted(hyper)}; accepted: "
                f"{sorted(self.defaults)} plus lr, clipnorm, clipvalue, name"
            )
        self.iterations = 0
        self._check()
        self.built = False
        self._pending = None
        if params is not None:
            self.build(params)

    # Hyper-parameters that are ≥ 0 in every rule that has them.
    _NON_NEGATIVE = (
        "learning_rate",
        "epsilon",
        "weight_decay",
        "momentum",
        "dampening",
        "lr_decay",
        "initial_accumulator_value",
    )

    def _check(self):
        """Validate the hyper-parameters: the constructor runs it, and so does
        `load_state_dict` on restored ones (a checkpoint saying lr = -1 is refused, not used).
        Subclasses add their own ranges (Adam's betas) and call this first."""
        cls = type(self).__name__
        for key, default in self.defaults.items():
            if key == "learning_rate":
                try:
                    value = self.learning_rate  # a schedule: its value at the current step
                except (ArithmeticError, TypeError, ValueError) as exc:
                    raise ValueError(
                        f"{cls}: the learning-rate schedule fails at step {self.iterations} ({exc})"
                    ) from None
            else:
                value = getattr(self, key)
            if isinstance(default, bool):
                if not (isinstance(value, (bool, int, np.bool_, np.integer)) and value in (0, 1)):
                    raise ValueError(f"{cls}: {key} must be True or False, got {value!r}")
            elif not _real(value) or not math.isfinite(value):
                raise ValueError(f"{cls}: {key} must be a finite number, got {value!r}")
            elif key in self._NON_NEGATIVE and value < 0:
                raise ValueError(f"{cls}: {key} must be ≥ 0, got {value!r}")
        if self.clipnorm is not None and self.clipvalue is not None:
            raise ValueError(f"{cls}: set clipnorm or clipvalue, not both")
        for key in ("clipnorm", "clipvalue"):
            value = getattr(self, key)
            if value is not None and not (_real(value) and math.isfinite(value) and value > 0):
                raise ValueError(
                    f"{cls}: {key} must be a positive finite number or None, got {value!r}"
                )

    # ----- learning rate ------------------------------------------------------------------
    @property
    def learning_rate(self):
        """The learning rate for the next step (a schedule is evaluated at `iterations`)."""
        rate = self._lr
        return rate(self.iterations) if callable(rate) else rate

    @learning_rate.setter
    def learning_rate(self, value):
        self._lr = schedules.get(value)

    lr = learning_rate

    # ----- building -----------------------------------------------------------------------
    def state_names(self) -> tuple:
        return ()

    def initial_state(self, key) -> float:
        return 0.0

    def build(self, params):
        """Adopt `params` (Tensors, a dict name→Tensor, or a Layer) and allocate flat buffers."""
        named = _named_params(params)
        # A build with no parameters (model not built yet) may be followed by the real one.
        if self.built and self._params:
            new = list(named.values())
            if len(new) == len(self._params) and all(a is b for a, b in zip(new, self._params)):
                return self
            raise ValueError(
                f"{type(self).__name__}: already built for other parameters; "
                "create a new optimizer for a new set of parameters."
            )
        self._names = list(named)
        self._params = list(named.values())
        self._groups, self._views, self._flat_views = [], [], [None] * len(self._params)
        self._pstate, self._pscratch = [None] * len(self._params), [None] * len(self._params)
        self._gbufs = [None] * len(self._params)
        for dtype in dict.fromkeys(p.data.dtype for p in self._params):
            idx = [i for i, p in enumerate(self._params) if p.data.dtype == dtype]
            total = sum(self._params[i].data.size for i in idx)
            group = {
                "idx": idx,
                "param": np.empty(total, dtype),
                "grad": np.zeros(total, dtype),
                "state": tuple(
                    np.full(total, self.initial_state(k), dtype) for k in self.state_names()
                ),
                "scratch": tuple(np.empty(total, dtype) for _ in range(self.n_scratch)),
            }
            offset = 0
            for i in idx:
                p = self._params[i]
                sl = slice(offset, offset + p.data.size)
                offset += p.data.size
                group["param"][sl] = p.data.reshape(-1)
                self._flat_views[i] = group["param"][sl]
                p.data = group["param"][sl].reshape(p.data.shape)
                gview = group["grad"][sl].reshape(p.data.shape)
                if p.grad is not None:
                    gview[...] = p.grad
                    p.grad = gview
                self._gbufs[i] = gview
                self._pstate[i] = tuple(s[sl] for s in group["state"])
                self._pscratch[i] = tuple(s[sl] for s in group["scratch"])
            self._groups.append(group)
        self._views = [p.data for p in self._params]
        self._grad_into = dict(zip(self._params, self._gbufs))
        self._t = 0  # shared step count while every parameter has taken the same steps
        self._steps = None  # per-parameter step counts once they differ
        self.built = True
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self.load_state_dict(pending)
        return self

    def _require_built(self, what):
        if not self.built:
            raise RuntimeError(
                f"{type(self).__name__}.{what}: the optimizer has no parameters "
                "yet; pass them to the constructor or call build(params) first."
            )

    def grad_buffers(self) -> dict:
        """{parameter: its view of the flat gradient buffer}: pass it to
        `loss.backward(into=...)` so that `step` takes the fast path (see the module docstring).
        """
        self._require_built("grad_buffers")
        return self._grad_into

    # ----- stepping -----------------------------------------------------------------------
    def zero_grad(self, set_to_none=True):
        """Forget gradients: `.grad = None` (PyTorch), or zeros in the buffers if asked."""
        self._require_built("zero_grad")
        if set_to_none:
            for p in self._params:
                p.grad = None
        else:
            for group in self._groups:
                group["grad"].fill(0)
            for p, gb in zip(self._params, self._gbufs):
                p.grad = gb

    def _resync(self):
        """True when every grad is its flat view; re-adopts any `p.data` rebound since build."""
        flat = True
        for i, p in enumerate(self._params):
            if p.data is not self._views[i]:
                if p.data.shape != self._views[i].shape:
                    raise ValueError(
                        f"{type(self).__name__}: parameter {self._names[i]!r} "
                        f"changed shape from {self._views[i].shape} to "
                        f"{p.data.shape}; build a new optimizer."
                    )
                self._views[i][...] = p.data
                p.data = self._views[i]
            if p.grad is not self._gbufs[i]:
                flat = False
        return flat

    def _clip(self, grads):
        if self.clipvalue is not None:
            for g in grads:
                np.clip(g, -self.clipvalue, self.clipvalue, out=g)
        elif self.clipnorm is not None:
            total = math.sqrt(sum(float(np.dot(g.reshape(-1), g.reshape(-1))) for g in grads))
            coef = self.clipnorm / (total + 1e-6)  # torch.nn.utils.clip_grad_norm_
            if coef < 1.0:
                for g in grads:
                    g *= coef

    def step(self):
        """Apply one update to every parameter that has a gradient (others are skipped)."""
        self._require_built("step")
        lr = self.learning_rate
        if self._resync() and self._steps is None:
            if self.clipnorm is not None or self.clipvalue is not None:
                self._clip([group["grad"] for group in self._groups])
            self._t += 1
            for group in self._groups:
                self._update_flat(group, lr)
        else:
            self._step_each(lr)
        self.iterations += 1

    _CHUNK = 1 << 18  # elements per pass of the flat update (measured best for Adam)

    def _update_flat(self, group, lr):
        """The update over one flat group, a chunk at a time: every rule is elementwise, and a
        chunk's half-dozen arrays stay in cache between the rule's passes (Adam on 5.5 M
        parameters: 17 ms in one piece, 10 ms in chunks)."""
        size = group["param"].size
        for lo in range(0, size, self._CHUNK):
            sl = slice(lo, min(lo + self._CHUNK, size))
            self._update(
                group["param"][sl],
                group["grad"][sl],
                tuple(s[sl] for s in group["state"]),
                tuple(s[sl] for s in group["scratch"]),
                self._t,
                lr,
            )

    def _step_each(self, lr):
        live = [i for i, p in enumerate(self._params) if p.grad is not None]
        grads = []
        for i in live:
            g = self._params[i].grad
            if not (
                isinstance(g, np.ndarray)
                and g.dtype == self._views[i].dtype
                and g.shape == self._views[i].shape
            ):
                g = self._params[i].grad = np.array(
                    np.broadcast_to(g, self._views[i].shape), dtype=self._views[i].dtype
                )
            grads.append(g)
        if self.clipnorm is not None or self.clipvalue is not None:
            self._clip(grads)
        steps = self._steps or [self._t] * len(self._params)
        for i, g in zip(live, grads):
            steps[i] += 1
            g = g.reshape(-1)
            self._update(self._flat_views[i], g, self._pstate[i], self._pscratch[i], steps[i], lr)
        if all(s == steps[0] for s in steps):
            self._t, self._steps = steps[0], None
        else:
            self._steps = steps

    def _update(self, p, g, state, scratch, t, lr):  # pragma: no cover - abstract
        raise NotImplementedError

    # ----- configuration and state --------------------------------------------------------
    def get_config(self) -> dict:
        """Constructor arguments as JSON (a schedule is stored as its serialised dict)."""
        config = {
            "name": self.name,
            "learning_rate": schedules.serialize(self._lr),
            "clipnorm": self.clipnorm,
            "clipvalue": self.clipvalue,
        }
        for key in self.defaults:
            if key != "learning_rate":
                config[key] = getattr(self, key)
        return config

    def state_dict(self) -> dict:
        """{"class_name", "config", "step", "param_steps", "state": {"name.key": ndarray}}
        (copies)."""
        self._require_built("state_dict")
        steps = self._steps or [self._t] * len(self._params)
        state = {}
        for i, name in enumerate(self._names):
            shape = self._views[i].shape
            for key, arr in zip(self.state_names(), self._pstate[i]):
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
            self.iterations = step
            self._check()
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
        keys = [k for k in self.defaults if k != "learning_rate"] + ["clipnorm", "clipvalue"]
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
            for key in self.state_names():
                src = np.asarray(saved[f"{name}.{key}"])
                if src.shape != expected[f"{name}.{key}"]:
                    raise ValueError(
                        f"{cls}.load_state_dict: {name}.{key} has shape "
                        f"{src.shape}, expected {expected[f'{name}.{key}']}"
                    )
                row.append(src)
            arrays.append(row)
        return steps, arrays


def _real(value) -> bool:
    """A real number (Python or NumPy), not a bool."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def _count(value, what) -> int:
    """A step count: an integer ≥ 0."""
    if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool)) or value < 0:
        raise ValueError(f"{what} must be an integer ≥ 0, got {value!r}")
    return int(value)


def _l2(p, g, wd, buf):
    """g + wd·θ into a scratch buffer (PyTorch's L2 weight decay leaves p.grad untouched)."""
    np.multiply(p, wd, out=buf)
    buf += g
    return buf
