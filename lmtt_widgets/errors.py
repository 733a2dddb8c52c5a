"""Errors raised for bad input.

Every message says what is wrong and how to fix it; callers (the widgets, the CLI) show the message as is.
Errors about a bad argument also subclass ValueError (a wrong value) or TypeError (a wrong type), so code that
catches the built-in exceptions keeps working; ``except LmttError`` catches everything raised on purpose.
"""


class LmttError(Exception):
    """Base class of every error lmtt-widgets raises on purpose."""


class ModelLoadError(LmttError):
    """The model could not be found or loaded."""


class ModelTypeError(ModelLoadError, TypeError):
    """load_model was given something that is not a model, a name or a path."""


class ModelNotFoundError(ModelLoadError):
    """No directory at the given path, or no such model on the hub."""


class WeightsMissingError(ModelLoadError):
    """A model directory holds a config but no weight files."""


class TokenizerMissingError(ModelLoadError):
    """The weights were found but no tokenizer beside them."""


class HubUnreachableError(ModelLoadError):
    """A hub name is not in the local cache and the hub cannot be reached (offline, or no network)."""


class UnsupportedModelError(LmttError):
    """The model's architecture is outside what the method can decompose exactly."""


class InputError(LmttError, ValueError):
    """An argument has a value that cannot be used (out of range, unknown option)."""


class InputTypeError(InputError, TypeError):
    """An argument has the wrong type."""


class PromptError(InputError):
    """The prompt cannot be traced (empty, too long, padded batch)."""


class PromptTypeError(PromptError, TypeError):
    """The prompt is of a type that cannot be read unambiguously (bytes, floats, nested lists...)."""


class SelectionError(InputError):
    """A layer, token, head or neuron index is out of range."""


class ComponentKeyError(SelectionError, KeyError):
    """A score table has no row for this component (a KeyError too, as a mapping's lookup gives)."""

    def __str__(self) -> str:  # KeyError's own str() would quote the message
        return str(self.args[0]) if self.args else ""


class SelectionTypeError(SelectionError, TypeError):
    """A layer, token, head or neuron index is not an integer."""


class NonFiniteError(LmttError, FloatingPointError):
    """The forward pass produced NaN or infinity; the message names the first place it appeared."""


class TraceInUseError(LmttError, RuntimeError):
    """The model is already being traced by this thread (a hook or callback traced it again)."""


class StaleTraceError(LmttError, RuntimeError):
    """The model changed since the trace: what the explanation would read of it now is not what its pass computed."""


class MemoryEstimateError(LmttError, MemoryError):
    """The run would not fit in the memory available (the message holds the estimate and what to change)."""
