"""Errors raised for bad input.

Every message says what is wrong and how to fix it; callers (the widgets, the CLI) show the message as is.
"""


class LmttError(Exception):
    """Base class of every error lmtt-widgets raises on purpose."""


class ModelLoadError(LmttError):
    """The model could not be found or loaded."""


class UnsupportedModelError(LmttError):
    """The model's architecture is outside what the method can decompose exactly."""


class PromptError(LmttError):
    """The prompt cannot be traced (empty, too long, padded batch)."""


class SelectionError(LmttError, ValueError):
    """A layer, token, head or neuron index is out of range."""


class MemoryEstimateError(LmttError, MemoryError):
    """The run would not fit in the memory available (the message holds the estimate and what to change)."""
