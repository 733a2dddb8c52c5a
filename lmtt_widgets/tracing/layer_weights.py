"""The weights the decomposition reads (output projections, norms), from plain and accelerate-dispatched models.

A float32 (or float64) model's weights are read once, as views (no copy). Other weights are read when used:
- an offloaded projection has no data outside its forward pass: it is read under the hook that materialises it,
  on the layer's execution device;
- a bf16/fp16 projection is upcast to float32 for the maths; copies of every layer's W_O and W_out up front would
  cost twice the model's size in those matrices (90 GB for a 70B model).
Such float32 copies live in a cache bounded by WEIGHT_CACHE_BYTES (least recently used layers are dropped and read
again when asked for). A layer's maths runs on its own device with its own weights.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from ..models.offload import OffloadMap
from ..models.weights import linear_weight, upcast
from .norms import identify_norm
from .tracer import LayerWeights

# Float32 copies of offloaded or low-precision W_O / W_out kept between uses (SmolLM2's 30 layers take ~145 MB; a
# 70B layer's W_out alone ~940 MB, so at least the last one read is always kept).
WEIGHT_CACHE_BYTES = 512 * 2**20


class _WeightCache:
    """A byte-bounded LRU of float32 weight copies, shared by one trace's offloaded layers."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[int, str], torch.Tensor] = OrderedDict()

    def get(self, key, load):
        hit = self._items.get(key)
        if hit is not None:
            self._items.move_to_end(key)
            return hit
        value = load()
        self._items[key] = value
        while len(self._items) > 1 and sum(_nbytes(t) for t in self._items.values()) > self.max_bytes:
            self._items.popitem(last=False)
        return value


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


class LazyLayerWeights(LayerWeights):
    """LayerWeights whose projections are read (materialised, upcast) only when used: nothing is loaded up front."""

    def __init__(self, offload: OffloadMap, o_proj, mlp_out_proj, cache: _WeightCache,
                 attn_post_norm=None, mlp_post_norm=None):
        self._offload, self._o_proj, self._mlp_out_proj, self._cache = offload, o_proj, mlp_out_proj, cache
        self._biases: dict[int, torch.Tensor | None] = {}  # [d] each: small, kept once read
        self.attn_post_norm, self.mlp_post_norm = attn_post_norm, mlp_post_norm

    def _weight(self, module) -> torch.Tensor:
        def load():
            with self._offload.materialized(module):
                # the loaded tensor stays valid after the hook puts the module back on meta (it swaps in new ones)
                return linear_weight(module)[0]

        return self._cache.get((id(module), "w"), load)

    def _bias(self, module) -> torch.Tensor | None:
        if id(module) not in self._biases:
            with self._offload.materialized(module):
                b = getattr(module, "bias", None)
                self._biases[id(module)] = upcast(b.detach()) if isinstance(b, torch.Tensor) else None
        return self._biases[id(module)]

    @property
    def w_o(self) -> torch.Tensor:
        return self._weight(self._o_proj)

    @property
    def w_out(self) -> torch.Tensor:
        return self._weight(self._mlp_out_proj)

    @property
    def b_o(self) -> torch.Tensor | None:
        return self._bias(self._o_proj)

    @property
    def b_out(self) -> torch.Tensor | None:
        return self._bias(self._mlp_out_proj)

    def __repr__(self) -> str:
        return f"LazyLayerWeights({type(self._o_proj).__name__}, {type(self._mlp_out_proj).__name__})"


def read_weights(net, adapter, blocks):
    """(final norm spec, [(attn post-norm, mlp post-norm)] per block, [LayerWeights] per block) of a model."""
    offload = OffloadMap(net)  # refuses weights that exist nowhere (meta without an offload hook)

    def norm(path):  # the path names the norm in a NonFiniteError
        module = net.get_submodule(path)
        with offload.materialized(module):
            return identify_norm(module, path)

    final_norm = norm(adapter.final_norm)
    post = [(norm(f"{adapter.blocks}.{i}.{adapter.attn_post_norm}") if adapter.attn_post_norm else None,
             norm(f"{adapter.blocks}.{i}.{adapter.mlp_post_norm}") if adapter.mlp_post_norm else None)
            for i in range(len(blocks))]
    cache = _WeightCache(WEIGHT_CACHE_BYTES)
    weights = []
    for b, (a, m) in zip(blocks, post):
        o_proj, mlp_out = b.get_submodule(adapter.attn_out_proj), b.get_submodule(adapter.mlp_out_proj)
        exact = o_proj.weight.dtype in (torch.float32, torch.float64) and mlp_out.weight.dtype == o_proj.weight.dtype
        if offload.is_offloaded(o_proj) or offload.is_offloaded(mlp_out) or not exact:
            weights.append(LazyLayerWeights(offload, o_proj, mlp_out, cache, a, m))
        else:
            w_o, b_o = linear_weight(o_proj)
            w_out, b_out = linear_weight(mlp_out)
            weights.append(LayerWeights(w_o, b_o, w_out, b_out, a, m))
    return final_norm, post, weights
