"""lmtt-widgets: see inside a Transformer LM's prediction, inline in a notebook."""

from .errors import (
    InputError, LmttError, MemoryEstimateError, ModelLoadError, NonFiniteError, PromptError, SelectionError,
    StaleTraceError, TraceInUseError, UnsupportedModelError,
)
from .models import ArchitectureAdapter, LoadedModel, load_model, register_adapter, supported_model_types
from .tracing import Trace, trace
from .explain import Explanation, explain, explain_many
from .memory_estimate import MemoryEstimate, estimate_memory
from .contributions.graph import Route
from .widgets import Explorer, FlowGraph, HeadHeatmap, NeuronView, VocabView

__all__ = [
    "ArchitectureAdapter", "Explanation", "Explorer", "FlowGraph", "HeadHeatmap", "NeuronView", "Route", "VocabView", "explain", "explain_many", "LmttError", "LoadedModel", "MemoryEstimate", "MemoryEstimateError", "estimate_memory", "ModelLoadError", "PromptError", "SelectionError", "Trace",
    "UnsupportedModelError", "InputError", "NonFiniteError", "StaleTraceError", "TraceInUseError", "load_model", "register_adapter", "supported_model_types", "trace",
]
