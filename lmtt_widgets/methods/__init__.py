"""Scoring methods behind one seam (base.py): flow importance, logit attribution, causal patching, input attribution."""

from .base import (Component, Metric, MethodInfo, ScoreTable, available_methods, get_method, register_method,
                   token_methods)
from . import causal, importance, logit_attribution  # noqa: F401  (registers the methods)
from . import input_attribution, flow_attribution  # noqa: F401  (input attribution methods)

__all__ = ["Component", "Metric", "MethodInfo", "ScoreTable", "available_methods", "get_method", "register_method",
           "token_methods"]
