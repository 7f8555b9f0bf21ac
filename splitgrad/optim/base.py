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

Inside splitgrad's own thread team (a recurrent or convolutional model's `train_step` runs
its optimizer step there, with the BLAS on one thread) the flat update's chunks are shared out
over the team: every rule is elementwise, so each chunk's result is the same on any thread
(Adam over the music model's 5.4 M parameters: 12 ms on one thread).

Parameter groups (groups.py) each get their own flat buffers (one per group and dtype), so the
update still runs on whole flat arrays, with the group's hyper-parameters.
"""

from __future__ import annotations

import inspect
import math
from functools import partial
from typing import ClassVar

import numpy as np

from .. import schedules
from .._kernels.thread_team import in_own_threads, run_pieces
from ..config import Configurable
from ..tensor import Tensor
from .groups import GroupsMixin
from .state import StateMixin


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


class Optimizer(GroupsMixin, StateMixin, Configurable):
    """Base class: holds hyperparameters, flat buffers and per-parameter state; `step()` updates.

    `params`: Tensors, a dict name → Tensor, a Layer, or PyTorch's parameter groups, a list of
    dicts `{"params": ..., "lr": ..., <any hyper-parameter>: ...}` (see groups.py and
    `param_groups`). Common arguments: `learning_rate` (alias `lr`; a float or a schedule) and
    at most one clipping rule, applied to `.grad` in place before the update:
    `clipnorm` (Keras: each variable's gradient g ← g·c/(‖g‖ + 1e-6) when that is smaller,
    torch.nn.utils.clip_grad_norm_ applied to each parameter alone), `global_clipnorm` (the
    same over all gradients together: clip_grad_norm_ on all parameters) or `clipvalue`
    (elementwise). Subclasses set `defaults` (hyperparameter → default),
    `_state_names(h)` and `_update(p, g, state, scratch, t, lr, h)`, an in-place kernel on
    equal-shaped 1-D arrays that reads its hyper-parameters from `h` (the optimizer itself,
    or one group's `Hyper`).
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
            inspect.Parameter(k, kw, default=None)
            for k in ("lr", "clipnorm", "clipvalue", "global_clipnorm", "name")
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
        global_clipnorm=None,
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
        clips = {"clipnorm": clipnorm, "clipvalue": clipvalue, "global_clipnorm": global_clipnorm}
        for arg, v in clips.items():
            if v is not None and not (_real(v) and v > 0):
                raise ValueError(f"{cls}: {arg} must be positive, got {v!r}")
            setattr(self, arg, None if v is None else float(v))
        self.name = name or cls.lower()
        for key, default in self.defaults.items():
            if key != "learning_rate":
                setattr(self, key, hyper.pop(key, default))
        if hyper:
            raise TypeError(
                f"{cls}: unknown arguments {sorted(hyper)}; accepted: "
                f"{sorted(self.defaults)} plus lr, clipnorm, clipvalue, global_clipnorm, name"
            )
        self.iterations = 0
        # One default group until the constructor or a config gives groups (groups.py).
        self._group_over, self._group_labels = [{}], [None]
        self._layout, self._layout_shapes, self._explicit = None, None, False
        self._check()
        self.built = False
        self._pending = None
        if params is not None:
            if not isinstance(params, (Tensor, dict)) and not hasattr(params, "named_parameters"):
                params = list(params)  # a generator, as PyTorch's model.parameters() is
            if params and all(isinstance(p, dict) for p in params):
                params = self._groups_from_specs(params)
            self.build(params)

    @classmethod
    def from_config(cls, config: dict):
        """The optimizer `get_config()` describes, with its parameter groups (by name,
        assigned at `build`). A config without "global_clipnorm" was saved before `clipnorm`
        took Keras's meaning: its clipnorm was the global norm, and stays so."""
        config = dict(config)
        layout = config.pop("param_groups", None)
        if "global_clipnorm" not in config and config.get("clipnorm") is not None:
            config["global_clipnorm"] = config.pop("clipnorm")
        opt = cls(**config)
        if layout is not None:
            opt._layout_from_config(layout)
        return opt

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

    def _check(self, h=None):
        """Validate the hyper-parameters of the optimizer (or of one group's `Hyper` h): the
        constructor runs it, and so does `load_state_dict` on restored ones (a checkpoint
        saying lr = -1 is refused, not used). Subclasses add their own ranges (Adam's betas)
        and call this first; `self._where(h)` names the optimizer or the group."""
        cls = self._where(h)
        src = self if h is None else h
        for key, default in self.defaults.items():
            if key == "learning_rate":
                try:
                    value = src.learning_rate  # a schedule: its value at the current step
                except (ArithmeticError, TypeError, ValueError) as exc:
                    raise ValueError(
                        f"{cls}: the learning-rate schedule fails at step {self.iterations} ({exc})"
                    ) from None
            else:
                value = getattr(src, key)
            if isinstance(default, bool):
                if not (isinstance(value, (bool, int, np.bool_, np.integer)) and value in (0, 1)):
                    raise ValueError(f"{cls}: {key} must be True or False, got {value!r}")
            elif not _real(value) or not math.isfinite(value):
                raise ValueError(f"{cls}: {key} must be a finite number, got {value!r}")
            elif key in self._NON_NEGATIVE and value < 0:
                raise ValueError(f"{cls}: {key} must be ≥ 0, got {value!r}")
        if h is not None:
            return
        clips = ("clipnorm", "global_clipnorm", "clipvalue")
        if sum(getattr(self, key) is not None for key in clips) > 1:
            raise ValueError(
                f"{cls}: set one clipping rule, not several: global_clipnorm (the norm of all "
                "gradients together), clipnorm or clipvalue (each variable, each value)"
            )
        for key in clips:
            value = getattr(self, key)
            if value is not None and not (_real(value) and math.isfinite(value) and value > 0):
                raise ValueError(
                    f"{cls}: {key} must be a positive finite number or None, got {value!r}"
                )

    def _where(self, h=None) -> str:
        """ "SGD", or "SGD param_groups[1]" for a group's hyper-parameters (for messages)."""
        return type(self).__name__ if h is None else h.where

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
    def _state_names(self, h) -> tuple:
        """The state arrays each parameter needs under hyper-parameters `h` (canonical order:
        a kernel indexes them by position)."""
        return ()

    def initial_state(self, key, h) -> float:
        return 0.0

    def build(self, params):
        """Adopt `params` (Tensors, a dict name→Tensor, or a Layer) and allocate flat buffers."""
        named = _named_params(params)
        # A build with no parameters (model not built yet) may be followed by the real one.
        if self.built and self._params:
            new = list(named.values())
            if len(new) == len(self._params) and all(a is b for a, b in zip(new, self._params)):
                return self
            # The same parameters in another order (Model.compile after the user's parameter
            # groups): keep the layout, take the new names, which checkpoints store.
            rename = {id(p): n for n, p in named.items()}
            if len(new) == len(self._params) and all(id(p) in rename for p in self._params):
                self._names = [rename[id(p)] for p in self._params]
                return self
            raise ValueError(
                f"{type(self).__name__}: already built for other parameters; "
                "create a new optimizer for a new set of parameters."
            )
        self._group_of = self._assign_groups(named)
        self._layout = None  # from now on the groups are _group_of
        self._names = list(named)
        self._params = list(named.values())
        self._state_keys = self.state_names()
        hs = [
            self if not self._explicit else self._resolved(g) for g in range(len(self._group_over))
        ]
        self._groups, self._views, self._flat_views = [], [], [None] * len(self._params)
        self._pstate, self._pscratch = [None] * len(self._params), [None] * len(self._params)
        self._gbufs = [None] * len(self._params)
        # One flat segment per (group, dtype): each update covers whole arrays of one setting.
        for gi, dtype in dict.fromkeys(
            (g, p.data.dtype) for g, p in zip(self._group_of, self._params)
        ):
            idx = [
                i
                for i, p in enumerate(self._params)
                if p.data.dtype == dtype and self._group_of[i] == gi
            ]
            total = sum(self._params[i].data.size for i in idx)
            group = {
                "idx": idx,
                "group": gi,
                "param": np.empty(total, dtype),
                "grad": np.zeros(total, dtype),
                "state": tuple(
                    np.full(total, self.initial_state(k, hs[gi]), dtype) for k in self._state_keys
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
    def apply_gradients(self, grads_and_vars):
        """One step from (gradient, variable) pairs (Keras): builds the optimizer for those
        variables on first use; variables not listed, and pairs whose gradient is None, are
        not moved. The arrays are used as the variables' `.grad`."""
        pairs = [(g, v) for g, v in grads_and_vars]
        if not self.built or not self._params:
            self.build([v for _, v in pairs])
        known = {id(p) for p in self._params}
        for p in self._params:
            p.grad = None
        for g, v in pairs:
            if id(v) not in known:
                raise ValueError(
                    f"{type(self).__name__}.apply_gradients: a variable of shape {v.shape} is "
                    "not among those this optimizer was built for; create a new optimizer "
                    "for a new set of variables"
                )
            if g is not None:
                g = np.asarray(g.data if hasattr(g, "data") else g, dtype=v.data.dtype)
                if g.shape != v.shape:
                    raise ValueError(
                        f"{type(self).__name__}.apply_gradients: gradient of shape {g.shape} "
                        f"for a variable of shape {v.shape}"
                    )
                v.grad = g
        self.step()

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
        """Clip the gradients `grads` (one array per parameter) in place."""
        if self.clipvalue is not None:
            for g in grads:
                np.clip(g, -self.clipvalue, self.clipvalue, out=g)
        elif self.clipnorm is not None:  # Keras: each variable on its own
            for g in grads:
                _scale_to_norm(g, self.clipnorm, float(np.dot(g.reshape(-1), g.reshape(-1))))
        elif self.global_clipnorm is not None:
            total = sum(float(np.dot(g.reshape(-1), g.reshape(-1))) for g in grads)
            for g in grads:
                _scale_to_norm(g, self.global_clipnorm, total)

    def step(self):
        """Apply one update to every parameter that has a gradient (others are skipped)."""
        self._require_built("step")
        lr = self.learning_rate
        hs = [self._resolved(i) for i in range(len(self._group_over))] if self._explicit else None
        if self._resync() and self._steps is None:
            if self.clipnorm is not None or self.clipvalue is not None or self.global_clipnorm:
                self._clip(self._gbufs)
            self._t += 1
            for group in self._groups:
                if hs is None:
                    self._update_flat(group, lr, self)
                else:
                    h = hs[group["group"]]
                    self._update_flat(group, h.learning_rate, h)
        else:
            self._step_each(lr, hs)
        self.iterations += 1

    _CHUNK = 1 << 18  # elements per pass of the flat update (measured best for Adam)

    def _update_flat(self, group, lr, h):
        """The update over one flat group, a chunk at a time: every rule is elementwise, and a
        chunk's half-dozen arrays stay in cache between the rule's passes (Adam on 5.5 M
        parameters: 17 ms in one piece, 10 ms in chunks)."""
        size = group["param"].size
        if size <= self._CHUNK:  # one chunk: the group's own arrays, no slicing (small models)
            self._update(
                group["param"], group["grad"], group["state"], group["scratch"], self._t, lr, h
            )
            return
        chunks = [
            partial(
                self._update,
                group["param"][sl],
                group["grad"][sl],
                tuple(s[sl] for s in group["state"]),
                tuple(s[sl] for s in group["scratch"]),
                self._t,
                lr,
                h,
            )
            for sl in (slice(lo, min(lo + self._CHUNK, size)) for lo in range(0, size, self._CHUNK))
        ]
        if in_own_threads():
            run_pieces(chunks)  # on the team (see the module docstring)
        else:
            # Last chunk first: the first layer's weights, which the next forward pass reads
            # first, are then the freshest in cache (W4: about 2 % a step, A/B of 8 processes).
            for chunk in reversed(chunks):
                chunk()

    def _step_each(self, lr, hs):
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
        if self.clipnorm is not None or self.clipvalue is not None or self.global_clipnorm:
            self._clip(grads)
        steps = self._steps or [self._t] * len(self._params)
        for i, g in zip(live, grads):
            steps[i] += 1
            g = g.reshape(-1)
            h = self if hs is None else hs[self._group_of[i]]
            rate = lr if hs is None else h.learning_rate
            self._update(
                self._flat_views[i], g, self._pstate[i], self._pscratch[i], steps[i], rate, h
            )
        if all(s == steps[0] for s in steps):
            self._t, self._steps = steps[0], None
        else:
            self._steps = steps

    def _update(self, p, g, state, scratch, t, lr, h):  # pragma: no cover - abstract
        raise NotImplementedError


def _scale_to_norm(g, limit, squared_norm):
    """g *= limit / (‖g‖ + 1e-6) when that is < 1 (torch.nn.utils.clip_grad_norm_'s rule)."""
    coef = limit / (math.sqrt(squared_norm) + 1e-6)
    if coef < 1.0:
        g *= coef


def _real(value) -> bool:
    """A real number (Python or NumPy), not a bool."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def _l2(p, g, wd, buf):
    """g + wd·θ into a scratch buffer (PyTorch's L2 weight decay leaves p.grad untouched)."""
    np.multiply(p, wd, out=buf)
    buf += g
    return buf
