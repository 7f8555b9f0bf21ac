"""Parameter groups, PyTorch style: `SGD([{"params": a, "lr": 0.1}, {"params": b}], lr=0.01)`.

A group is a list of parameters plus the hyper-parameters it sets for itself (its overrides);
whatever a group does not set follows the optimizer's own value, so a callback that changes
`optimizer.learning_rate` changes every group without an "lr" of its own.

`optimizer.param_groups` is a list of `ParamGroup` views, mappings that read and write the
optimizer's settings: `g["lr"] *= 0.5` takes effect at the next step. Keys are "params", "lr"
and the rule's hyper-parameters under splitgrad's names; PyTorch's spellings are accepted too
("learning_rate" ↔ "lr", "eps" → "epsilon", "alpha" → "rho", "betas" → (beta_1, beta_2)).
An optimizer made from a plain list of parameters has one group, and writing to it writes the
optimizer's own settings (`for g in opt.param_groups: g["lr"] = x` is the PyTorch habit).
"""

from __future__ import annotations

from collections.abc import MutableMapping

from .. import schedules
from ..tensor import Tensor

# PyTorch's spelling → splitgrad's attribute ("lr" is the key the views show).
_ALIASES = {"lr": "learning_rate", "eps": "epsilon", "alpha": "rho"}


class Hyper:
    """One group's hyper-parameters resolved to values (the update rules read attributes)."""

    def __init__(self, values: dict):
        self.__dict__.update(values)


def canonical(opt, key: str, where: str):
    """The attribute name a group key stands for, or ("beta_1", "beta_2") for "betas"."""
    if not isinstance(key, str):
        raise TypeError(f"{where}: keys must be strings, got {key!r}")
    if key == "betas" and "beta_1" in opt.defaults:
        return ("beta_1", "beta_2")
    name = _ALIASES.get(key, key)
    if name not in opt.defaults:
        accepted = ["params", "lr"] + [k for k in opt.defaults if k != "learning_rate"]
        raise KeyError(
            f"{where}: unknown key {key!r}; a {type(opt).__name__} group takes {accepted} "
            "(PyTorch's lr, eps, alpha and betas too)"
        )
    return name


def overrides_of(opt, spec: dict, where: str) -> dict:
    """A group dict's hyper-parameters as {attribute: value} (betas split in two)."""
    out = {}
    for key, value in spec.items():
        if key in ("params", "name", "shapes"):
            continue
        name = canonical(opt, key, where)
        if isinstance(name, tuple):
            try:
                out[name[0]], out[name[1]] = value
            except (TypeError, ValueError):
                raise ValueError(f"{where}: betas must be a pair (beta_1, beta_2), got {value!r}")
        elif name == "learning_rate":
            out[name] = schedules.get(value)
        else:
            out[name] = value
    return out


def tensors_of(params, where: str) -> dict:
    """{name: Tensor} of a group's "params": a Tensor, a list/generator of them, a dict by
    name, or a Layer (its named parameters)."""
    if isinstance(params, Tensor):
        params = [params]
    if hasattr(params, "named_parameters") and callable(params.named_parameters):
        params = params.named_parameters()
    if isinstance(params, dict):
        return dict(params.items())
    if isinstance(params, (str, bytes)) or not hasattr(params, "__iter__"):
        raise TypeError(
            f"{where}: 'params' must be Tensors (a list, a generator, a dict or a Layer), got "
            f"{type(params).__name__}"
        )
    return {str(i): p for i, p in enumerate(params)}


def serialize_overrides(over: dict) -> dict:
    """JSON form of a group's overrides (a schedule becomes its serialised dict)."""
    return {k: schedules.serialize(v) if k == "learning_rate" else v for k, v in over.items()}


class ParamGroup(MutableMapping):
    """A live view of group `index` of optimizer `opt`: reading gives the value the next step
    uses, writing sets it (for this group only, unless the optimizer has its single default
    group), deleting a key makes the group follow the optimizer's value again."""

    def __init__(self, opt, index: int):
        self._opt, self._index = opt, index

    def _keys(self):
        return ["params", "lr"] + [k for k in self._opt.defaults if k != "learning_rate"]

    def __getitem__(self, key):
        opt = self._opt
        if key == "params":
            return opt._group_params(self._index)
        if key == "name" and opt._group_labels[self._index] is not None:
            return opt._group_labels[self._index]
        name = canonical(opt, key, f"{type(opt).__name__}.param_groups[{self._index}]")
        h = opt._resolved(self._index)
        if isinstance(name, tuple):
            return tuple(getattr(h, n) for n in name)
        return getattr(h, name)

    def __setitem__(self, key, value):
        where = f"{type(self._opt).__name__}.param_groups[{self._index}]"
        if key == "params":
            raise KeyError(
                f"{where}: the parameters of a group are fixed once the optimizer has them; "
                "create a new optimizer for other parameters."
            )
        if key == "name":
            self._opt._group_labels[self._index] = str(value)
            return
        self._opt._set_group_values(self._index, overrides_of(self._opt, {key: value}, where))

    def __delitem__(self, key):
        where = f"{type(self._opt).__name__}.param_groups[{self._index}]"
        if key == "params":
            raise KeyError(f"{where}: 'params' cannot be removed")
        name = canonical(self._opt, key, where)
        for n in name if isinstance(name, tuple) else (name,):
            self._opt._group_over[self._index].pop(n, None)

    def __iter__(self):
        keys = self._keys()
        if self._opt._group_labels[self._index] is not None:
            keys.append("name")
        return iter(keys)

    def __len__(self):
        return len(list(iter(self)))

    def __repr__(self):
        shown = {k: self[k] for k in self if k != "params"}
        params = [tuple(p.shape) for p in self["params"]]
        return f"ParamGroup(params={params}, {', '.join(f'{k}={v!r}' for k, v in shown.items())})"


class GroupsMixin:
    """The optimizer's side of parameter groups. State it keeps (set by `Optimizer.__init__`):

    `_group_over`: per group, {attribute: value} it sets for itself; `_group_labels`: per group,
    its "name" or None; `_explicit`: False for the single default group (the fast path);
    `_layout`: per group, the names of its parameters (known before `build` when the groups
    come from a config) or None, and `_layout_shapes` their shapes if the config has them;
    `_group_of` (after build): each parameter's group.
    """

    @property
    def param_groups(self) -> list:
        """[ParamGroup]: live, editable views ("params", "lr", the rule's hyper-parameters)."""
        return [ParamGroup(self, i) for i in range(len(self._group_over))]

    def _group_params(self, index: int) -> list:
        if not self.built:
            return []
        return [p for p, g in zip(self._params, self._group_of) if g == index]

    def _resolved(self, index: int) -> Hyper:
        """Group `index`'s hyper-parameters for the next step (its own, else the optimizer's)."""
        values = {k: getattr(self, k) for k in self.defaults if k != "learning_rate"}
        values["learning_rate"] = self.learning_rate
        for key, value in self._group_over[index].items():
            values[key] = value(self.iterations) if callable(value) else value
        values["where"] = f"{type(self).__name__} param_groups[{index}]"
        return Hyper(values)

    def state_names(self) -> tuple:
        """The per-parameter state arrays, the same for every group: with groups, those that
        any group needs (a group without momentum keeps an unused momentum buffer)."""
        if not self._explicit:
            return self._state_names(self)
        hs = [self._resolved(i) for i in range(len(self._group_over))]
        union = {}
        for key in self.defaults:
            values = [getattr(h, key) for h in hs]
            union[key] = next((v for v in values if v), values[0])
        return self._state_names(Hyper(union))

    def _check_groups(self):
        for i in range(len(self._group_over)) if self._explicit else ():
            self._check(self._resolved(i))

    def _set_group_values(self, index: int, values: dict):
        """Write a group's settings (the optimizer's own for the default group), checked as
        the constructor checks them; nothing changes if the check fails."""
        kept = (dict(self._group_over[index]), self._hyper(), self._lr)
        try:
            if self._explicit:
                self._group_over[index].update(values)
            else:
                for key, value in values.items():
                    setattr(self, key, value)
            self._check()
            self._check_groups()
            if self.built and self.state_names() != self._state_keys:
                raise ValueError(
                    f"{type(self).__name__}: this change needs other optimizer state "
                    f"({list(self._state_keys)} → {list(self.state_names())}); set it when "
                    "creating the optimizer"
                )
        except (ValueError, TypeError):
            self._group_over[index] = kept[0]
            for key, value in kept[1].items():
                setattr(self, key, value)
            self._lr = kept[2]
            raise

    def _groups_from_specs(self, specs) -> dict:
        """Take the group dicts given to the constructor; returns {name: Tensor} to build."""
        cls = type(self).__name__
        overrides, labels, layout, tensors, home = [], [], [], [], {}
        for gi, spec in enumerate(specs):
            where = f"{cls}: parameter group {gi}"
            if not isinstance(spec, dict) or "params" not in spec:
                raise ValueError(
                    f"{where} must be a dict with 'params' (and optional settings such as "
                    f"'lr'), got {type(spec).__name__}"
                    + ("" if not isinstance(spec, dict) else f" with keys {sorted(spec)}")
                )
            overrides.append(overrides_of(self, spec, where))
            labels.append(None if spec.get("name") is None else str(spec["name"]))
            names = []
            for p in tensors_of(spec["params"], where).values():
                if id(p) in home:
                    raise ValueError(
                        f"{cls}: a parameter of shape {tuple(getattr(p, 'shape', ()))} is in "
                        f"parameter groups {home[id(p)]} and {gi}; put each in one group."
                    )
                home[id(p)] = gi
                names.append(str(len(tensors)))
                tensors.append(p)
            layout.append(names)
        self._set_layout(layout, overrides, labels)
        return {str(i): p for i, p in enumerate(tensors)}

    def _layout_from_config(self, groups):
        """Take `get_config()["param_groups"]`: the groups by parameter name, applied at build."""
        cls = type(self).__name__
        if not isinstance(groups, list) or not all(
            isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups
        ):
            raise ValueError(f"{cls}: 'param_groups' must be a list of dicts with 'params' names")
        overrides = [
            overrides_of(self, g, f"{cls}: parameter group {i}") for i, g in enumerate(groups)
        ]
        labels = [None if g.get("name") is None else str(g["name"]) for g in groups]
        layout = [[str(n) for n in g["params"]] for g in groups]
        names = [n for group in layout for n in group]
        if len(set(names)) != len(names):
            raise ValueError(f"{cls}: 'param_groups' names a parameter twice")
        shapes = None
        if all(isinstance(g.get("shapes"), list) for g in groups):
            try:
                shapes = {
                    n: tuple(int(d) for d in shape)
                    for g, group in zip(groups, layout)
                    for n, shape in zip(group, g["shapes"], strict=True)
                }
            except (TypeError, ValueError):
                raise ValueError(f"{cls}: 'param_groups' shapes do not fit its params") from None
        self._set_layout(layout, overrides, labels, shapes)

    def _set_layout(self, layout, overrides, labels, shapes=None):
        self._layout, self._group_over, self._group_labels = layout, overrides, labels
        self._layout_shapes = shapes  # {name: shape} when a config recorded them
        self._explicit = True
        self._check_groups()

    def _assign_groups(self, named: dict) -> list:
        """Each parameter's group at build: all in group 0, or by name from the layout."""
        if self._layout is None:
            return [0] * len(named)
        home = {n: gi for gi, names in enumerate(self._layout) for n in names}
        if set(home) != set(named):
            raise ValueError(
                f"{type(self).__name__}.build: the parameter groups name parameters "
                f"{sorted(home, key=_natural)[:8]} but it got {list(named)[:8]} "
                f"({len(home)} vs {len(named)}); an optimizer with parameter groups rebuilds "
                "only for the same parameters (the whole model, as Model.compile passes them; "
                "a way that shards or cuts the model cannot use one)"
            )
        shapes = self._layout_shapes or {}
        for n, p in named.items():
            if n in shapes and tuple(p.shape) != shapes[n]:
                raise ValueError(
                    f"{type(self).__name__}.build: parameter {n!r} has shape {tuple(p.shape)}, "
                    f"but {shapes[n]} where the parameter groups were made; an optimizer with "
                    "parameter groups rebuilds only for the same parameters (a way that "
                    "shards or cuts the model cannot use one)"
                )
        return [home[n] for n in named]

    def _load_groups(self, groups):
        """The groups' settings from a saved config (`load_state_dict`): into the same layout,
        or, before `build`, as the layout to build with."""
        cls = type(self).__name__
        if groups is None:
            if self._explicit:
                raise ValueError(
                    f"the state was saved by an optimizer without parameter groups; this "
                    f"{cls} has {len(self._group_over)}"
                )
            return
        if not self._explicit and not self.built:
            self._layout_from_config(groups)
            return
        mine = [sorted(g["params"]) for g in self._group_config()] if self._explicit else None
        try:
            theirs = [sorted(str(n) for n in g["params"]) for g in groups]
        except (TypeError, KeyError):
            raise ValueError("'param_groups' must be a list of dicts with 'params' names") from None
        if mine != theirs:
            raise ValueError(
                f"the state was saved with parameter groups {theirs}, this {cls} has "
                f"{mine or 'one group'}; make the optimizer with the same groups "
                "(from_config(state['config']) does)"
            )
        self._group_over = [
            overrides_of(self, g, f"{cls}: parameter group {i}") for i, g in enumerate(groups)
        ]
        self._group_labels = [None if g.get("name") is None else str(g["name"]) for g in groups]

    def _group_config(self) -> list:
        """`get_config()["param_groups"]`: each group's parameter names and own settings."""
        if self.built:
            layout = [[n for n, g in zip(self._names, self._group_of) if g == i] for i in
                      range(len(self._group_over))]  # fmt: skip
            shapes = {n: tuple(p.shape) for n, p in zip(self._names, self._params)}
        else:
            layout, shapes = self._layout, self._layout_shapes
        out = []
        for names, over, label in zip(layout, self._group_over, self._group_labels):
            entry = {"params": list(names), **serialize_overrides(over)}
            if shapes:
                entry["shapes"] = [list(shapes[n]) for n in names]
            if label is not None:
                entry["name"] = label
            out.append(entry)
        return out


def _natural(name: str):
    return (0, int(name)) if name.isdigit() else (1, name)
