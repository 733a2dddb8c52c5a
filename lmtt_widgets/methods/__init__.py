"""Scoring methods behind one seam (base.py): flow importance, logit attribution, causal patching, input attribution."""

from .base import Component, Metric, MethodInfo, ScoreTable, available_methods, get_method, register_method
from . import causal, importance, logit_attribution  # noqa: F401  (registers the methods)

__all__ = ["Component", "Metric", "MethodInfo", "ScoreTable", "available_methods", "get_method", "register_method"]
