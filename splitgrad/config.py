"""Objects that save themselves as JSON: `{"class_name": ..., "config": ...}` and back.

Losses, optimizers and learning-rate schedules all round-trip this way (never pickle).
"""

from __future__ import annotations


class Configurable:
    """Base for objects rebuilt from `get_config()`: `from_config(c) = cls(**c)`."""

    def get_config(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def serialize(obj) -> dict:
    """{"class_name": ..., "config": ...}, JSON-serialisable; `deserialize` reverses it."""
    return {"class_name": type(obj).__name__, "config": obj.get_config()}


def deserialize(data: dict, table: dict, what: str, key=lambda name: name, **overrides):
    """Rebuild from `serialize`'s dict; `table` maps `key(class_name)` to the class."""
    name = data.get("class_name")
    cls = table.get(key(str(name)))
    if cls is None:
        raise ValueError(f"unknown {what} class {name!r} in the config; known: {sorted(table)}")
    return cls.from_config({**data.get("config", {}), **overrides})
