"""The library's one piece of global state: a default random generator, seedable with `seed(n)`.

Initialisers, Dropout and shuffling draw from it unless they are given a generator of their own.
"""

from __future__ import annotations

import numpy as np

_rng = np.random.default_rng()


def seed(n: int) -> None:
    """Reseed the default generator so that a run is reproducible."""
    global _rng
    _rng = np.random.default_rng(n)


def get_rng() -> np.random.Generator:
    """The current default generator."""
    return _rng


def get_state() -> dict:
    """The default generator's state (JSON-serialisable), for checkpoints."""
    return _rng.bit_generator.state


def set_state(state: dict) -> None:
    """Restore the default generator from `get_state()`'s output."""
    _rng.bit_generator.state = state
