"""What a trace needs to know about a model before its pass, read once per trace and frozen.

Everything here depends on the model alone, not on the prompt: its modules, shapes, norms, the route by which each
layer's attention is captured, where inputs go and what dtype it computes in. It is read again for every trace
rather than cached on the model, because a user may change the model between two traces (swap a module, cast it,
offload it) and every trace must describe the model as it is now.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models.loading import LoadedModel, _capture_routes
from ..models.offload import input_device
from .capture import Route, attention_capture
from .layer_weights import read_weights
from .norms import NormSpec
from .tracer import LayerWeights, _n_heads, _n_kv_heads


@dataclass(frozen=True)
class ModelFacts:
    """The structure of one model as a trace sees it."""

    lm: LoadedModel
    blocks: tuple[torch.nn.Module, ...]
    attention_modules: tuple[torch.nn.Module, ...]  # one per block, where the capture records the probabilities
    routes: tuple[Route, ...]  # how each attention module is captured (capture.py)
    topology: str  # "sequential" or "parallel" (adapter.resolve_topology)
    n_heads: int
    n_kv_heads: int
    head_dim: int
    final_norm: NormSpec
    post_norms: tuple[tuple[NormSpec | None, NormSpec | None], ...]  # (attention, MLP) post-norm of each block
    weights: tuple[LayerWeights, ...]
    device: torch.device  # where the input ids go (an offloaded model's parameters may be on meta)
    dtype: torch.dtype  # what the model computes in: the rounding the identity checks allow for

    @property
    def net(self) -> torch.nn.Module:
        return self.lm.model

    @property
    def adapter(self):
        return self.lm.adapter

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    def capture(self, record):
        """The context that routes every layer's attention call to ``record`` (capture.attention_capture)."""
        return attention_capture(self.net, list(self.attention_modules), list(self.routes), record)


def read_facts(lm: LoadedModel) -> ModelFacts:
    net, adapter, config = lm.model, lm.adapter, lm.model.config
    n_heads = _n_heads(config)  # first: a config without a head count is refused before anything is read
    blocks = tuple(net.get_submodule(adapter.blocks))
    topology = adapter.resolve_topology(config)
    # weights are read where accelerate materialises them (offloaded models), on each layer's device
    final_norm, post, weights = read_weights(net, adapter, blocks)
    return ModelFacts(
        lm=lm,
        blocks=blocks,
        attention_modules=tuple(b.get_submodule(adapter.attention) for b in blocks),
        routes=tuple(lm.capture_routes or _capture_routes(net, adapter)),
        topology=topology,
        n_heads=n_heads,
        n_kv_heads=_n_kv_heads(config, n_heads),
        head_dim=weights[0].w_o.shape[1] // n_heads,
        final_norm=final_norm,
        post_norms=tuple(post),
        weights=tuple(weights),
        device=input_device(net),
        dtype=next(net.parameters()).dtype,
    )
