"""The weights the decomposition reads (output projections, norms), from plain and accelerate-dispatched models.

A plain model's weights are read once, as today (float32 views: no copy for a float32 model). An offloaded
projection's weights have no data outside its forward pass, and copying every layer's W_O and W_out up front
would load the whole offloaded model into memory: they are read on first use, on the layer's execution device,
under the hook that materialises them, and kept in a cache bounded by OFFLOAD_CACHE_BYTES (least recently used
layers are dropped and read again when asked for). A layer's maths runs on its own device with its own weights.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from ..models.offload import OffloadMap
from ..models.weights import linear_weight
from .norms import identify_norm
from .tracer import LayerWeights

# Float32 copies of offloaded W_O / W_out kept between uses (SmolLM2's 30 layers take ~145 MB; a 70B layer's
# W_out alone ~940 MB, so at least the last one read is always kept).
OFFLOAD_CACHE_BYTES = 512 * 2**20


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


class OffloadedLayerWeights(LayerWeights):
    """LayerWeights whose W_O and W_out are read from the offloaded modules when used (biases are read at once)."""

    def __init__(self, offload: OffloadMap, o_proj, mlp_out_proj, cache: _WeightCache,
                 attn_post_norm=None, mlp_post_norm=None):
        self._offload, self._o_proj, self._mlp_out_proj, self._cache = offload, o_proj, mlp_out_proj, cache
        self.b_o = self._read(o_proj, bias=True)
        self.b_out = self._read(mlp_out_proj, bias=True)
        self.attn_post_norm, self.mlp_post_norm = attn_post_norm, mlp_post_norm

    def _read(self, module, bias: bool):
        with self._offload.materialized(module):
            # the loaded tensors stay valid after the hook puts the module back on meta (it swaps in new ones)
            w, b = linear_weight(module)
            return b if bias else w

    @property
    def w_o(self) -> torch.Tensor:
        return self._cache.get((id(self._o_proj), "w"), lambda: self._read(self._o_proj, bias=False))

    @property
    def w_out(self) -> torch.Tensor:
        return self._cache.get((id(self._mlp_out_proj), "w"), lambda: self._read(self._mlp_out_proj, bias=False))

    def __repr__(self) -> str:
        return f"OffloadedLayerWeights({type(self._o_proj).__name__}, {type(self._mlp_out_proj).__name__})"


def read_weights(net, adapter, blocks):
    """(final norm spec, [(attn post-norm, mlp post-norm)] per block, [LayerWeights] per block) of a model."""
    offload = OffloadMap(net)  # refuses weights that exist nowhere (meta without an offload hook)

    def norm(module):
        with offload.materialized(module):
            return identify_norm(module)

    final_norm = norm(net.get_submodule(adapter.final_norm))
    post = [(norm(b.get_submodule(adapter.attn_post_norm)) if adapter.attn_post_norm else None,
             norm(b.get_submodule(adapter.mlp_post_norm)) if adapter.mlp_post_norm else None) for b in blocks]
    cache = _WeightCache(OFFLOAD_CACHE_BYTES)
    weights = []
    for b, (a, m) in zip(blocks, post):
        o_proj, mlp_out = b.get_submodule(adapter.attn_out_proj), b.get_submodule(adapter.mlp_out_proj)
        if offload.is_offloaded(o_proj) or offload.is_offloaded(mlp_out):
            weights.append(OffloadedLayerWeights(offload, o_proj, mlp_out, cache, a, m))
        else:
            w_o, b_o = linear_weight(o_proj)
            w_out, b_out = linear_weight(mlp_out)
            weights.append(LayerWeights(w_o, b_o, w_out, b_out, a, m))
    return final_norm, post, weights
