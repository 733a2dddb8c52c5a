from .tracer import LayerRecord, LayerWeights, Trace, trace

__all__ = ["LayerRecord", "LayerWeights", "Trace", "trace"]
