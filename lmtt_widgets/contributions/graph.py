"""The information-flow graph: typed nodes and edges over (layer, token), thresholding and route tracing.

Nodes: the embedding of each token; per layer and token the residual after attention, the MLP block and the
residual after the MLP (parallel blocks have no "after attention" state: their edges go straight from the block
input to its output). Edges are typed: residual, attention (one per source token, with its per-head breakdown),
MLP. Filtering reads the dense scores kept in :class:`ContributionScores`; nothing is recomputed when the target
token, the threshold or the granularity changes.

Thresholding of one update: a part is kept when its importance is > tau (per head in "head" granularity, per
head-summed edge in "edge" granularity), and kept parts are renormalised to sum to 1. When no part of an update
passes, the update keeps nothing (the route ends there): weights stay finite, never NaN.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from .. import checks
from ..errors import InputError, InputTypeError
from .scores import HEAD_FLOOR, ContributionScores

NODE_KINDS = ("embedding", "after_attention", "mlp", "after_mlp")
EDGE_KINDS = ("residual", "attention", "mlp")
EMBEDDING, AFTER_ATTENTION, MLP, AFTER_MLP = range(4)
RESIDUAL, ATTENTION, MLP_EDGE = range(3)
Granularity = Literal["head", "edge"]
DEFAULT_THRESHOLD = 0.04


def node_id(kind: int, layer: int, token: int, n_tokens: int) -> int:
    """Dense integer id: embeddings first, then per layer the three kinds, each a block of n_tokens."""
    if kind == EMBEDDING:
        return token
    return n_tokens * (1 + 3 * layer + (kind - 1)) + token


def node_of(nid: int, n_tokens: int) -> tuple[int, int, int]:
    """(kind, layer, token) of a node id; layer is -1 for embeddings."""
    block, token = divmod(nid, n_tokens)
    if block == 0:
        return EMBEDDING, -1, token
    layer, kind = divmod(block - 1, 3)
    return kind + 1, layer, token


@dataclass
class Route:
    """A set of typed edges between graph nodes, as plain arrays (E edges, H heads)."""

    n_layers: int
    n_tokens: int
    n_heads: int
    src: np.ndarray  # [E] int64 node ids
    dst: np.ndarray  # [E]
    weight: np.ndarray  # [E] float32
    kind: np.ndarray  # [E] uint8 index into EDGE_KINDS
    layer: np.ndarray  # [E] int32 layer of the update the edge feeds
    heads: np.ndarray  # [E, H] float32 per-head share of attention edges (0 for other kinds)
    target: int | None = None
    threshold: float | None = None
    granularity: str | None = None
    # ids of the nodes written by a cancelling update (importances split evenly, see scores.normalise), all of the
    # graph's, on the route or not
    cancelling: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    # ids of the nodes whose update holds an external edit (code outside the model's modules changed the stream)
    external: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def nodes(self) -> np.ndarray:
        """Sorted ids of every node touched by an edge (plus the target's top node)."""
        ids = np.concatenate([self.src, self.dst])
        if self.target is not None:
            ids = np.append(ids, node_id(AFTER_MLP, self.n_layers - 1, self.target, self.n_tokens))
        return np.unique(ids)

    def describe_node(self, nid: int) -> dict:
        n_ids = (1 + 3 * self.n_layers) * self.n_tokens  # the embeddings, then three kinds of node per layer
        nid = checks.index(nid, "node id", n_ids, "this graph's node ids (e.g. route.nodes) run")
        kind, layer, token = node_of(nid, self.n_tokens)
        return {"id": int(nid), "kind": NODE_KINDS[kind], "layer": layer, "token": token,
                "cancelling": bool(np.isin(int(nid), self.cancelling)),
                "external_edit": bool(np.isin(int(nid), self.external))}

    def _token_texts(self, tokens) -> list[str] | None:
        """``tokens`` checked: None, or one text per token of the prompt (e.g. ``ex.tokens``)."""
        if tokens is None:
            return None
        if isinstance(tokens, (str, bytes)) or not isinstance(tokens, (list, tuple)) or \
                not all(isinstance(t, str) for t in tokens):
            raise InputTypeError(f"tokens must be a list of texts, one per token (e.g. ex.tokens), not "
                                 f"{type(tokens).__name__}.")
        if len(tokens) != self.n_tokens:
            raise InputError(f"tokens holds {len(tokens)} texts for a route over {self.n_tokens} tokens; pass "
                             "ex.tokens of the explanation this route came from.")
        return list(tokens)

    def to_dataframes(self, tokens: list[str] | None = None):
        """(nodes, edges) as pandas DataFrames."""
        import pandas as pd

        tokens = self._token_texts(tokens)
        nodes = pd.DataFrame([self.describe_node(n) for n in self.nodes])
        if tokens is not None and len(nodes):
            nodes["text"] = [tokens[t] for t in nodes["token"]]
        edges = pd.DataFrame({
            "source": self.src, "target": self.dst, "layer": self.layer,
            "kind": [EDGE_KINDS[k] for k in self.kind], "weight": self.weight,
        })
        src = [node_of(int(n), self.n_tokens) for n in self.src]
        dst = [node_of(int(n), self.n_tokens) for n in self.dst]
        edges["source_token"] = [s[2] for s in src]
        edges["target_token"] = [d[2] for d in dst]
        edges["source_kind"] = [NODE_KINDS[s[0]] for s in src]
        edges["target_kind"] = [NODE_KINDS[d[0]] for d in dst]
        for h in range(self.n_heads):
            edges[f"head_{h}"] = self.heads[:, h]
        return nodes, edges

    def to_networkx(self, tokens: list[str] | None = None):
        import networkx as nx

        tokens = self._token_texts(tokens)
        g = nx.MultiDiGraph(n_layers=self.n_layers, n_tokens=self.n_tokens, target=self.target,
                            threshold=self.threshold, granularity=self.granularity)
        for n in self.nodes:
            attrs = self.describe_node(n)
            if tokens is not None:
                attrs["text"] = tokens[attrs["token"]]
            g.add_node(int(n), **attrs)
        for e in range(len(self.src)):
            g.add_edge(int(self.src[e]), int(self.dst[e]), key=EDGE_KINDS[self.kind[e]], kind=EDGE_KINDS[self.kind[e]],
                       weight=float(self.weight[e]), layer=int(self.layer[e]), heads=self.heads[e].tolist())
        return g

    def to_json(self, tokens: list[str] | None = None) -> dict:
        tokens = self._token_texts(tokens)
        return {
            "n_layers": self.n_layers, "n_tokens": self.n_tokens, "n_heads": self.n_heads,
            "target": self.target, "threshold": self.threshold, "granularity": self.granularity,
            "tokens": tokens, "node_kinds": list(NODE_KINDS), "edge_kinds": list(EDGE_KINDS),
            "nodes": [self.describe_node(n) for n in self.nodes],
            "edges": [
                {"source": int(s), "target": int(d), "kind": EDGE_KINDS[k], "layer": int(layer),
                 "weight": float(w), "heads": h.tolist()}
                for s, d, k, layer, w, h in zip(self.src, self.dst, self.kind, self.layer, self.weight, self.heads)
            ],
        }


class _EdgeBuffer:
    def __init__(self, n_heads: int):
        self.rows: list[tuple] = []
        self.heads: list[np.ndarray] = []
        self.n_heads = n_heads

    def add(self, src, dst, weight, kind, layer, heads=None):
        self.rows.append((src, dst, weight, kind, layer))
        self.heads.append(np.zeros(self.n_heads, np.float32) if heads is None else heads)

    def build(self, scores: ContributionScores, **extra) -> Route:
        if self.rows:
            src, dst, w, k, layer = (np.array(c) for c in zip(*self.rows))
            heads = np.stack(self.heads).astype(np.float32)
        else:
            src = dst = np.zeros(0, np.int64)
            w, k, layer = np.zeros(0, np.float32), np.zeros(0, np.uint8), np.zeros(0, np.int32)
            heads = np.zeros((0, self.n_heads), np.float32)
        return Route(scores.n_layers, scores.n_tokens, scores.n_heads, src.astype(np.int64), dst.astype(np.int64),
                     w.astype(np.float32), k.astype(np.uint8), layer.astype(np.int32), heads,
                     cancelling=cancelling_nodes(scores), external=flagged_nodes(scores, "edited"), **extra)


def cancelling_nodes(scores: ContributionScores) -> np.ndarray:
    """Sorted ids of the nodes written by a cancelling update: after attention (after the block for parallel blocks)
    for an attention update, after the MLP for an MLP update."""
    return flagged_nodes(scores, "cancel")


def flagged_nodes(scores: ContributionScores, flag: str) -> np.ndarray:
    """Sorted ids of the nodes written by the updates flagged in LayerScores.<flag>_attn / <flag>_mlp."""
    T = scores.n_tokens
    attn_kind = AFTER_MLP if scores.topology == "parallel" else AFTER_ATTENTION
    ids = []
    for layer, ls in enumerate(scores.layers):
        for flags, kind in ((getattr(ls, f"{flag}_attn"), attn_kind), (getattr(ls, f"{flag}_mlp"), AFTER_MLP)):
            if flags is not None and bool(flags.any()):
                ids += [node_id(kind, layer, t, T) for t in flags.nonzero().flatten().tolist()]
    return np.array(sorted(ids), np.int64)


def _attention_parts(scores: ContributionScores, layer: int, i: int, tau: float, granularity: str):
    """Kept parts of the attention update at (layer, i): residual, bias and source weights, renormalised.

    Returns (residual weight, {source: (weight, per-head [H])}, mlp weight for parallel blocks).
    """
    ls = scores.layers[layer]
    H = scores.n_heads
    resid = float(ls.resid_attn[i])
    bias = float(ls.bias_attn[i])
    external = float(ls.external_attn[i]) if ls.external_attn is not None else 0.0  # no edge, like the bias
    mlp = float(ls.mlp[i]) if scores.topology == "parallel" else 0.0
    keep = lambda v: v if v > tau else 0.0  # noqa: E731
    resid, bias, mlp, external = keep(resid), keep(bias), keep(mlp), keep(external)
    sources: dict[int, tuple[float, np.ndarray]] = {}
    if granularity == "head":
        cols, vals = ls.head_row(i)
        sel = vals > tau
        for c, v in zip(cols[sel].tolist(), vals[sel].tolist()):
            j, h = divmod(c, H)
            w, hv = sources.get(j, (0.0, np.zeros(H, np.float32)))
            hv[h] = v
            sources[j] = (w + v, hv)
    else:
        src, weight = ls.edge_sparse_row(i)
        sel = weight > tau
        cols, vals = ls.head_row(i)
        for j, w in zip(src[sel].tolist(), weight[sel].tolist()):
            per_head = np.zeros(H, np.float32)
            mine = (cols // H) == j
            per_head[(cols[mine] % H).numpy()] = vals[mine].numpy()
            sources[j] = (w, per_head)
    total = resid + bias + mlp + external + sum(w for w, _ in sources.values())
    if total <= 0:
        return 0.0, {}, 0.0
    return resid / total, {j: (w / total, hv / total) for j, (w, hv) in sources.items()}, mlp / total


def _mlp_parts(scores: ContributionScores, layer: int, i: int, tau: float):
    ls = scores.layers[layer]
    resid, mlp = float(ls.resid_mlp[i]), float(ls.mlp[i])
    external = float(ls.external_mlp[i]) if ls.external_mlp is not None else 0.0  # no edge, like the bias
    resid, mlp, external = (resid if resid > tau else 0.0), (mlp if mlp > tau else 0.0), (external if external > tau else 0.0)
    total = resid + mlp + external
    return (resid / total, mlp / total) if total > 0 else (0.0, 0.0)


def check_threshold(threshold, granularity, edge_floor: float = 0.0) -> float:
    """The threshold as a float, or an InputError (a ValueError; InputTypeError for a non-number).

    ``edge_floor``: the smallest head-summed edge the scores store (ContributionScores.edge_floor; long prompts)."""
    checks.choice(granularity, "granularity", ("head", "edge"))
    threshold = checks.fraction(threshold, "threshold")
    if granularity == "head" and threshold < HEAD_FLOOR:
        raise InputError(f"in 'head' granularity the threshold must be >= {HEAD_FLOOR} (per-head scores below it "
                         "are not stored); use granularity='edge' for lower thresholds")
    if granularity == "edge" and threshold < edge_floor:
        raise InputError(f"on this long prompt the threshold must be >= {edge_floor}: head-summed edges below it are "
                         "not stored (lmtt_widgets.contributions.scores.DENSE_EDGE_LIMIT says from which length)")
    return threshold


def route(scores: ContributionScores, target: int | None = None, threshold: float = DEFAULT_THRESHOLD,
          granularity: Granularity = "head") -> Route:
    """The important subgraph traced back from the top-layer node of ``target`` (default: the last token)."""
    T, L = scores.n_tokens, scores.n_layers
    if target is None:
        target = T - 1
    target = checks.index(target, "target token", T, f"the prompt has {T} tokens; None means the last")
    threshold = check_threshold(threshold, granularity, scores.edge_floor)
    buf = _EdgeBuffer(scores.n_heads)
    parallel = scores.topology == "parallel"
    active = {target}  # tokens whose residual after layer `l` is on the route
    for layer in range(L - 1, -1, -1):
        below: set[int] = set()

        def src_id(j):
            return node_id(EMBEDDING, -1, j, T) if layer == 0 else node_id(AFTER_MLP, layer - 1, j, T)

        attn_targets = set()
        for i in sorted(active):
            out = node_id(AFTER_MLP, layer, i, T)
            if parallel:
                attn_targets.add(i)
                continue
            mid = node_id(AFTER_ATTENTION, layer, i, T)
            r, m = _mlp_parts(scores, layer, i, threshold)
            if r > 0:
                buf.add(mid, out, r, RESIDUAL, layer)
            if m > 0:
                mlp_node = node_id(MLP, layer, i, T)
                buf.add(mlp_node, out, m, MLP_EDGE, layer)
                buf.add(mid, mlp_node, m, MLP_EDGE, layer)
            if r > 0 or m > 0:
                attn_targets.add(i)
        for i in sorted(attn_targets):
            dst = node_id(AFTER_MLP if parallel else AFTER_ATTENTION, layer, i, T)
            r, sources, m = _attention_parts(scores, layer, i, threshold, granularity)
            if r > 0:
                buf.add(src_id(i), dst, r, RESIDUAL, layer)
                below.add(i)
            for j, (w, hv) in sorted(sources.items()):
                buf.add(src_id(j), dst, w, ATTENTION, layer, hv)
                below.add(j)
            if parallel and m > 0:
                mlp_node = node_id(MLP, layer, i, T)
                buf.add(mlp_node, dst, m, MLP_EDGE, layer)
                buf.add(src_id(i), mlp_node, m, MLP_EDGE, layer)
                below.add(i)
        active = below
    return buf.build(scores, target=target, threshold=threshold, granularity=granularity)


def full_graph(scores: ContributionScores) -> Route:
    """Every stored edge with its raw (unthresholded) importance, for all targets: every causal attention pair (on
    long prompts, whose scores keep head-summed edges from ``scores.edge_floor`` on, every pair from the floor on).
    Built with array operations, layer by layer."""
    T, L, H = scores.n_tokens, scores.n_layers, scores.n_heads
    parallel = scores.topology == "parallel"
    tok = np.arange(T, dtype=np.int64)
    blocks = []  # (src, dst, weight, kind, layer, per-head [E, H] or None): one block of edges each
    for layer, ls in enumerate(scores.layers):
        src = 3 * layer * T  # the block input: embeddings (layer 0) or the previous layer's output
        mid, mlp_node, out = (node_id(k, layer, 0, T) for k in (AFTER_ATTENTION, MLP, AFTER_MLP))
        dst, m = (out if parallel else mid), ls.mlp.numpy()
        blocks.append((src + tok, dst + tok, ls.resid_attn.numpy(), RESIDUAL, layer, None))
        blocks.append(_attention_edges(ls, src, dst, H, layer))
        if not parallel:
            blocks.append((mid + tok, out + tok, ls.resid_mlp.numpy(), RESIDUAL, layer, None))
        mlp_in = src if parallel else mid
        blocks += [(mlp_in + tok, mlp_node + tok, m, MLP_EDGE, layer, None),
                   (mlp_node + tok, out + tok, m, MLP_EDGE, layer, None)]
    sizes = [len(b[0]) for b in blocks]
    heads = np.zeros((sum(sizes), H), np.float32)
    at = 0
    for b, n in zip(blocks, sizes):
        if b[5] is not None:
            heads[at : at + n] = b[5]
        at += n
    return Route(L, T, H, np.concatenate([b[0] for b in blocks]), np.concatenate([b[1] for b in blocks]),
                 np.concatenate([b[2] for b in blocks]).astype(np.float32),
                 np.concatenate([np.full(n, b[3], np.uint8) for b, n in zip(blocks, sizes)]),
                 np.concatenate([np.full(n, b[4], np.int32) for b, n in zip(blocks, sizes)]), heads,
                 cancelling=cancelling_nodes(scores), external=flagged_nodes(scores, "edited"))


def _attention_edges(ls, src: int, dst: int, H: int, layer: int):
    """(src, dst, weight, ATTENTION, layer, per-head [E, H]) of every stored edge of one layer, from its CSR rows."""
    ptr = ls.edge_ptr.numpy()
    T = len(ptr) - 1
    rows = np.repeat(np.arange(T, dtype=np.int64), np.diff(ptr))
    cols = ls.edge_col.numpy().astype(np.int64)
    heads = np.zeros((len(cols), H), np.float32)
    h_rows = np.repeat(np.arange(T, dtype=np.int64), np.diff(ls.head_ptr.numpy()))
    h_col = ls.head_col.numpy().astype(np.int64)
    key = rows * T + cols  # ascending: rows ascending, sources ascending within a row
    at = np.searchsorted(key, h_rows * T + h_col // H)
    # every stored per-head score has its edge stored (an edge is at least each of its heads, EDGE_FLOOR <= HEAD_FLOOR)
    if len(at) and (at.max() >= len(key) or not np.array_equal(key[at], h_rows * T + h_col // H)):
        raise AssertionError("a stored per-head score has no stored edge: EDGE_FLOOR must not exceed HEAD_FLOOR")
    heads[at, h_col % H] = ls.head_val.numpy()
    return src + cols, dst + rows, ls.edge_val.numpy(), ATTENTION, layer, heads
