"""Checks of the small arguments of the Python API: indices, counts, thresholds, option names.

Each check returns the value normalised (a plain int or float) or raises an error that is both an
:class:`~lmtt_widgets.errors.LmttError` and a ValueError (bad value) or TypeError (bad type).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from .errors import InputError, InputTypeError, SelectionError, SelectionTypeError


def is_integer(value) -> bool:
    """A Python, NumPy or 0-d integer tensor value; bools and integral floats are not integers here."""
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, (int, np.integer)):
        return True
    return (isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point()
            and not value.is_complex() and value.dtype != torch.bool)


def index(value, name: str, size: int, scope: str, *, low: int = 0) -> int:
    """``value`` as an int in [low, size); ``scope`` ends the message, e.g. 'the prompt has 5 tokens'."""
    if not is_integer(value):
        hint = f"; use int({value!r}) if you meant that position" if _integral_float(value) else ""
        raise SelectionTypeError(f"{name} must be an integer index, not {value!r} ({type(value).__name__}){hint}.")
    value = int(value)
    if not low <= value < size:
        raise SelectionError(f"{name} {value} is out of range: {scope} ({low}..{size - 1})")
    return value


def count(value, name: str = "k") -> int:
    """A positive int (how many items to list)."""
    if not is_integer(value):
        raise InputTypeError(f"{name} must be a positive integer (how many to list), not {value!r} ({type(value).__name__}).")
    if int(value) < 1:
        raise InputError(f"{name} must be at least 1 (how many to list); got {int(value)}.")
    return int(value)


def fraction(value, name: str) -> float:
    """A real number strictly between 0 and 1."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        if isinstance(value, torch.Tensor) and value.dim() == 0 and value.is_floating_point():
            value = float(value)
        else:
            raise InputTypeError(f"{name} must be a number between 0 and 1 such as 0.04, not {value!r} "
                                 f"({type(value).__name__}).")
    value = float(value)
    if math.isnan(value) or not 0 < value < 1:
        raise InputError(f"{name} must lie in (0, 1); got {value}. Useful values are 0.01 to 0.10.")
    return value


def choice(value, name: str, options: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in options:
        raise InputError(f"{name} must be one of {', '.join(map(repr, options))}, not {value!r}.")
    return value


def _integral_float(value) -> bool:
    try:
        return isinstance(value, float) and value.is_integer()
    except (TypeError, ValueError):
        return False
