from .adapters import ArchitectureAdapter, adapter_for, register_adapter, supported_model_types
from .loading import LoadedModel, load_model

__all__ = ["ArchitectureAdapter", "LoadedModel", "adapter_for", "load_model", "register_adapter", "supported_model_types"]
