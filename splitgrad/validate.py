"""Argument checks shared by the training API and the command line: one sentence per mistake.

Each check returns the cleaned value or raises ValueError naming the argument, what it must be
and what it got. `Model.fit`/`evaluate`/`predict` call them, and `cli_type(check)` turns one
into an argparse type, so `--batch-size 0` and `fit(batch_size=0)` say the same thing.
"""

from __future__ import annotations

import argparse
import math
import numbers

import numpy as np


def positive_int(value, what: str) -> int:
    """`value` as an int ≥ 1 (bools, floats like 2.5 and None are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def non_negative_int(value, what: str) -> int:
    """`value` as an int ≥ 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{what} must be an integer >= 0, got {value!r}")
    return int(value)


def positive_number(value, what: str) -> float:
    """`value` as a finite float > 0 (inf and NaN are refused: they train to NaN)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{what} must be a finite number > 0, got {value!r}")
    return float(value)


def numeric_array(x, what: str) -> np.ndarray:
    """User data as a numeric ndarray: ragged lists, objects and strings, NaN and inf refused."""
    if isinstance(getattr(x, "data", None), np.ndarray):
        x = x.data  # a Tensor
    if (
        isinstance(x, (list, tuple))
        and x
        and isinstance(x[0], np.ndarray)
        and len({a.shape for a in x}) > 1
    ):
        raise TypeError(
            f"{what}: expected one array, got a list of {len(x)} arrays of "
            "different shapes; stack them into one array of samples"
        )
    try:
        arr = np.asarray(x)
    except ValueError:  # NumPy ≥ 1.24 refuses ragged nested lists outright
        arr = np.asarray(x, dtype=object)
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        shapes = _row_shapes(x)
        detail = f" (rows of shapes {shapes})" if shapes else f" (dtype {arr.dtype})"
        raise TypeError(
            f"{what}: could not turn the data into a numeric array{detail}; give "
            "every sample the same shape and numeric values"
        )
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))
        raise ValueError(
            f"{what} contains {len(bad)} NaN or infinite values (first at index "
            f"{tuple(int(i) for i in bad[0])}); clean or impute the data before training"
        )
    return arr


def _row_shapes(x) -> list:
    """Up to three distinct row shapes of a ragged nested list (for the error message)."""
    if not isinstance(x, (list, tuple)):
        return []
    shapes = []
    for row in x:
        shape = np.shape(row) if not isinstance(row, (list, tuple)) else (len(row),)
        if shape not in shapes:
            shapes.append(shape)
        if len(shapes) == 3:
            break
    return shapes if len(shapes) > 1 else []


def cli_type(check, what: str):
    """An argparse `type=` from a check: '--epochs -1' becomes a one-line usage error."""

    def parse(text):
        try:
            value = float(text) if check is positive_number else int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        try:
            return check(value, what)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = check.__name__  # argparse names the type in its messages
    return parse
