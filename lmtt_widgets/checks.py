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
            and not value.is_complex() and value.dtype != torch.bool and value.device.type != "meta")


def index(value, name: str, size: int, scope: str, *, low: int = 0) -> int:
    """``value`` as an int in [low, size); ``scope`` ends the message, e.g. 'the prompt has 5 tokens'."""
    if not is_integer(value):
        hint = f"; use int({value!r}) if you meant that position" if _integral_float(value) else ""
        raise SelectionTypeError(f"{name} must be an integer index, not {value!r} ({type(value).__name__}){hint}.")
    value = int(value)
    if not low <= value < size:
        raise SelectionError(f"{name} {value} is out of range: {scope} ({low}..{size - 1})")
    return value


def count(value, name: str = "k", *, low: int = 1, what: str = "how many to list") -> int:
    """An int >= ``low`` (default: a positive int, how many items to list)."""
    if not is_integer(value):
        kind = {1: "a positive integer", 0: "a non-negative integer"}.get(low, f"an integer >= {low}")
        raise InputTypeError(f"{name} must be {kind} ({what}), not {show(value)} ({type(value).__name__}).")
    if int(value) < low:
        raise InputError(f"{name} must be at least {low} ({what}); got {int(value)}.")
    return int(value)


def flag(value, name: str) -> bool:
    """True or False (NumPy's bool too); a string such as 'no' is truthy, so it is refused rather than guessed."""
    if not isinstance(value, (bool, np.bool_)):
        raise InputTypeError(f"{name} must be True or False, not {show(value)} ({type(value).__name__}).")
    return bool(value)


def vector(value, width: int, name: str = "vec") -> torch.Tensor:
    """One real, finite vector [width] (a residual-stream direction), on a device that holds data."""
    shape = list(getattr(value, "shape", []))
    if (not isinstance(value, torch.Tensor) or shape != [width] or not value.is_floating_point()
            or value.device.type == "meta"):
        dtype = f" of dtype {value.dtype} on {value.device}" if isinstance(value, torch.Tensor) else ""
        raise InputTypeError(f"{name} must be a tensor of width {width} (shape [{width}], floating point: one "
                             f"residual-stream vector), not {type(value).__name__} {shape}{dtype}; for several "
                             "vectors call once per row.")
    if not bool(torch.isfinite(value).all()):
        raise InputError(f"{name} holds NaN or infinite values; its projection would be meaningless.")
    return value


def options(fn, given: dict, what: str) -> None:
    """Keyword options a method does not take are refused by name, with the ones it does take."""
    import inspect

    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    takes = [n for n, p in list(params.items())[1:] if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    bad = [k for k in given if k not in takes]
    if bad:
        raise InputTypeError(f"{what} takes no option {', '.join(map(show, bad))}; its options are "
                             f"{', '.join(takes) or 'none'}.")


def unicode_text(value: str, name: str, error: type[InputError] = InputError) -> str:
    """Text the tokenizer can read: lone surrogates (half an emoji, bytes decoded with surrogateescape) are refused
    here, by position, rather than failing inside the tokenizer."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise error(f"{name} holds a lone surrogate {value[exc.start]!r} at character {exc.start}, which is not "
                         "valid Unicode; remove it, or clean the text with text.encode('utf-8', 'replace')"
                         ".decode('utf-8').") from None
    return value


def show(value) -> str:
    """repr cut short: a hostile caller may pass megabytes."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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
