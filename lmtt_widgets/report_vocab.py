"""The vocabulary projections the offline report holds, computed in few large unembedding products and stored as
tables (js/static.ts reads them back into the widget's detail results).

A detail reply of the widget for a head, an MLP block or a neuron lists the top-k promoted and suppressed tokens
of the vector it writes, read through the unembedding with the final norm's scale frozen at the token
(``payload.details``: ``project(..., "final")``). Here many such vectors go through one product per ``CHUNK``
rows, at their own positions.

A neuron writes ``activation x (its output row, through a post-norm's weights)`` at every token: one direction per
neuron, times a number. With the final norm's scale frozen that number carries through the unembedding, so a
neuron's projection at any token is its direction's projection times ``scale`` (its activation, post-norm and
final-norm factors at that token, relative to the direction's): the table stores each neuron's direction once
(top-k and bottom-k) and a scale per (layer, token, rank) of the ``neurons`` trait. A negative scale swaps the two
lists. Each direction's logits are those of its largest use, so every scale is at most 1 in magnitude. Where a
neuron's vector is not such a multiple (a zero activation, whose top-k is any k tokens; an
architecture that breaks the assumption) its projection is computed on its own and stored whole.
"""

from __future__ import annotations

import numpy as np
import torch

from .explain import Explanation
from .projections.vocab import project
from .widgets.payload import TOP_K, head_outputs

CHUNK = 1024  # vectors per unembedding product: [CHUNK, V] float32 logits (200 MB for a 49k vocabulary)
# a neuron's vector at a token counts as a multiple of its direction when the rest is below this (float32 rounding)
PARALLEL_TOL = 1e-4


def top_bottom(ex: Explanation, vecs: torch.Tensor, positions, k: int = TOP_K) -> tuple[np.ndarray, np.ndarray]:
    """Token ids [N, 2k] (top k descending, then bottom k ascending) and their logits [N, 2k] of each vector read
    at its position, as ``payload.details`` ranks them."""
    positions = torch.as_tensor(positions, dtype=torch.long)
    ids, vals = [], []
    for start in range(0, len(vecs), CHUNK):
        logits = project(ex.trace, vecs[start:start + CHUNK], positions[start:start + CHUNK], "final")
        up, down = logits.topk(k, dim=-1), logits.topk(k, dim=-1, largest=False)
        ids.append(torch.cat([up.indices, down.indices], -1))
        vals.append(torch.cat([up.values, down.values], -1))
    if not ids:
        return np.zeros((0, 2 * k), np.int64), np.zeros((0, 2 * k), np.float32)
    return torch.cat(ids).numpy(), torch.cat(vals).float().numpy()


def vocab_table(keys: list[tuple[int, ...]], ids: np.ndarray, vals: np.ndarray, width: int) -> dict:
    """Rows of projections by integer key (``head``: layer, head, token; ``mlp``: layer, token). ``width``: the
    key's length, which an empty table (a route without MLP nodes) cannot tell."""
    return {"keys": np.asarray(keys, np.int64).reshape(len(keys), width), "ids": ids, "vals": vals}


def head_projections(ex: Explanation, heads: list[tuple[int, int, int]], k: int = TOP_K) -> dict:
    """Projections of (layer, head, token) outputs."""
    if not heads:
        return vocab_table([], np.zeros((0, 2 * k), np.int64), np.zeros((0, 2 * k), np.float32), 3)
    vecs = head_outputs(ex, heads)
    return vocab_table(heads, *top_bottom(ex, vecs, [t for _, _, t in heads], k), 3)


def mlp_projections(ex: Explanation, blocks: list[tuple[int, int]], k: int = TOP_K) -> dict:
    """Projections of (layer, token) MLP outputs."""
    if not blocks:
        return vocab_table([], np.zeros((0, 2 * k), np.int64), np.zeros((0, 2 * k), np.float32), 2)
    vecs = torch.stack([ex.mlp_output(layer, t) for layer, t in blocks])
    return vocab_table(blocks, *top_bottom(ex, vecs, [t for _, t in blocks], k), 2)


def neuron_projections(ex: Explanation, blocks, k: int = TOP_K) -> tuple[dict, list[tuple[int, int, int]]]:
    """The neuron table of ``blocks``' top-k neurons (module docstring): ``index`` [L, T, k] (a row of ``ids`` /
    ``vals``, -1: none), ``scale`` [L, T, k]; and the (layer, neuron, token) triples to compute on their own."""
    L, T = ex.n_layers, ex.n_tokens
    index = np.full((L, T, k), -1, np.int64)
    scale = np.zeros((L, T, k), np.float32)
    by_neuron: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for layer, t in sorted(blocks):
        for r, n in enumerate(ex.neurons(layer, t, k)):
            by_neuron.setdefault((layer, n.neuron), []).append((t, r))
    refs, ref_pos, alone = [], [], []
    rstd = ex.trace.final_rstd.double()
    for (layer, n), uses in by_neuron.items():
        vecs = torch.stack([ex.neuron_output(layer, n, t) for t, _ in uses]).double()
        norms = vecs.norm(dim=-1)
        ref = int(norms.argmax())
        if float(norms[ref]) == 0.0:
            alone += [(layer, n, t) for t, _ in uses]
            continue
        v0 = vecs[ref]
        c = vecs @ v0 / (v0 @ v0)
        off = (vecs - c[:, None] * v0).norm(dim=-1)
        row = len(refs)
        refs.append(v0.float())
        t0 = uses[ref][0]
        ref_pos.append(t0)
        for (t, r), ct, e, nv in zip(uses, c.tolist(), off.tolist(), norms.tolist()):
            if nv == 0.0 or e > PARALLEL_TOL * nv:
                alone.append((layer, n, t))
            else:
                index[layer, t, r] = row
                scale[layer, t, r] = ct * float(rstd[t] / rstd[t0])
    ids, vals = top_bottom(ex, torch.stack(refs), ref_pos, k) if refs else (
        np.zeros((0, 2 * k), np.int64), np.zeros((0, 2 * k), np.float32))
    # each direction's logits taken at its largest use, so every scale is at most 1 in magnitude: the report stores
    # logits in absolute steps (report.py LOGIT_BITS), which a scale would otherwise enlarge
    held = index >= 0
    top = np.zeros(len(vals), np.float32)
    np.maximum.at(top, index[held], np.abs(scale[held]))
    top = np.where(top > 0, top, 1)
    vals = (vals * top[:, None]).astype(np.float32)
    scale[held] /= top[index[held]]
    return {"index": index, "scale": scale, "ids": ids, "vals": vals}, alone


def neuron_result(table: dict, layer: int, neuron_rank: int, token: int, k: int = TOP_K) -> tuple[list, list] | None:
    """(promoted, suppressed) [[id, logit]] of the neuron at ``neuron_rank`` of block (layer, token) from a neuron
    table (what js/static.ts does; tests)."""
    row = int(table["index"][layer, token, neuron_rank])
    if row < 0:
        return None
    s = float(table["scale"][layer, token, neuron_rank])
    ids, vals = table["ids"][row], table["vals"][row] * s
    top, bottom = list(zip(ids[:k].tolist(), vals[:k].tolist())), list(zip(ids[k:].tolist(), vals[k:].tolist()))
    return (top, bottom) if s > 0 else (bottom, top)
