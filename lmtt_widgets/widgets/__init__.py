from .explorer import Explorer, FlowGraph, HeadHeatmap, NeuronView, VocabView

__all__ = ["Explorer", "FlowGraph", "HeadHeatmap", "NeuronView", "VocabView"]
