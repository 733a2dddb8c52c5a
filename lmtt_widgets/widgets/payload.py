"""Turn an Explanation into the widget traits and detail replies of docs/widget-protocol.md."""

from __future__ import annotations

import re

import numpy as np
import torch

from ..contributions.graph import EDGE_KINDS, MLP, NODE_KINDS, Route, node_of
from ..errors import InputError
from ..explain import Explanation
from ..projections.vocab import project, ranks_of
from . import protocol
from .protocol import DETAIL_KEYS, detail_key

# Arrays are handed over as numpy / torch / lists: protocol.check encodes each with the dtype the protocol gives its
# field (and refuses a field the protocol lacks), so dtypes and field names are written down only there.

TOP_K = 10
# Route MLP blocks whose neurons are sent with each graph; the rest are fetched on selection.
NEURON_NODES = 64


def meta(ex: Explanation, target: int) -> dict:
    preds = ex.predictions(target, k=5)
    return {
        "model": ex.trace.lm.name,
        "n_layers": ex.n_layers,
        "n_heads": ex.n_heads,
        "n_tokens": ex.n_tokens,
        "topology": ex.trace.topology,
        "node_kinds": list(NODE_KINDS),
        "edge_kinds": list(EDGE_KINDS),
        # the position `prediction` is read at: the browser changes `target` before this arrives, so a pane tells a
        # prediction of the previous target from the new one's by this, never by `target`
        "position": int(target),
        "prediction": {"token": preds[0].text, "prob": preds[0].score, "top": [[p.text, p.score] for p in preds]},
    }


def graph_arrays(g: Route) -> dict:
    nodes = g.nodes
    index = {int(n): i for i, n in enumerate(nodes)}
    decoded = [node_of(int(n), g.n_tokens) for n in nodes]
    return protocol.check(protocol.GRAPH, {
        "node_kind": np.array([k for k, _, _ in decoded], np.int64),
        "node_layer": np.array([layer for _, layer, _ in decoded], np.int64),
        "node_token": np.array([t for _, _, t in decoded], np.int64),
        "edge_src": np.array([index[int(s)] for s in g.src], np.int64),
        "edge_dst": np.array([index[int(d)] for d in g.dst], np.int64),
        "edge_weight": g.weight,
        "edge_kind": g.kind,
        "edge_heads": g.heads.reshape(len(g.src), g.n_heads),
        # 1 where the update into the node cancelled (its importances are an even split over its parts)
        "node_cancelling": np.isin(nodes, g.cancelling),
        # 1 where the update into the node holds an external edit (a hook changed the stream; see tracing/edits.py)
        "node_external": np.isin(nodes, g.external),
    }, "graph")


def head_importance(ex: Explanation) -> dict:
    head_importance = protocol.TRAIT["head_importance"].schema
    return protocol.check(head_importance, torch.stack([ls.head_total.t() for ls in ex.scores.layers]))


def block_importance(ex: Explanation) -> dict:
    layers = ex.scores.layers
    zeros = torch.zeros(ex.n_tokens)
    return protocol.check(protocol.BLOCK_IMPORTANCE, {
        "attention": torch.stack([ls.head_total.sum(1) for ls in layers]),
        "mlp": torch.stack([ls.mlp for ls in layers]),
        "residual_attention": torch.stack([ls.resid_attn for ls in layers]),
        "residual_mlp": torch.stack([zeros if ls.resid_mlp is None else ls.resid_mlp for ls in layers]),
    }, "block_importance")


def neuron_rows(ex: Explanation, nodes: set[tuple[int, int]], k: int = TOP_K) -> dict:
    """Top-k neurons of the MLP blocks in ``nodes`` ((layer, token) pairs); ``available`` marks them."""
    L, T = ex.n_layers, ex.n_tokens
    ids = np.zeros((L, T, k), np.uint32)
    imp = np.zeros((L, T, k), np.float32)
    act = np.zeros((L, T, k), np.float32)
    available = np.zeros((L, T), np.uint8)
    for layer, token in nodes:
        for r, n in enumerate(ex.neurons(layer, token, k)):
            ids[layer, token, r], imp[layer, token, r], act[layer, token, r] = n.neuron, n.importance, n.activation
        available[layer, token] = 1
    return protocol.check(protocol.NEURONS, {"ids": ids, "importance": imp, "activation": act, "available": available},
                          "neurons")


def mlp_nodes(g: Route) -> set[tuple[int, int]]:
    out = set()
    for n in g.nodes:
        kind, layer, token = node_of(int(n), g.n_tokens)
        if kind == MLP:
            out.add((layer, token))
    return out


def precomputed_mlp_nodes(ex: Explanation, g: Route, target: int, cap: int = NEURON_NODES) -> set[tuple[int, int]]:
    """MLP blocks whose top neurons travel with the graph: the target's column and the route's most important
    blocks, at most ``cap`` of those (a low threshold can put 1,000+ blocks on the route); the browser asks the
    kernel for any other block's neurons when it is selected."""
    on_route = sorted(mlp_nodes(g), key=lambda lt: -float(ex.scores.layers[lt[0]].mlp[lt[1]]))
    return {(layer, target) for layer in range(ex.n_layers)} | set(on_route[:cap])


def lens_column(ex: Explanation, token: int, k: int = TOP_K) -> dict:
    """Top-k tokens of every residual row at ``token``, with ranks at the previous row."""
    return lens_columns(ex, [token], k)[token]


def lens_columns(ex: Explanation, tokens, k: int = TOP_K, chunk: int = 8) -> dict[int, dict]:
    """:func:`lens_column` of many tokens (the report holds every target's), ``chunk`` tokens per unembedding
    product; the "own" projection does not depend on the position."""
    tokens, rows, tok, out = [int(t) for t in tokens], 2 * ex.n_layers + 1, ex.trace.lm.tokenizer, {}
    for start in range(0, len(tokens), chunk):
        part = tokens[start:start + chunk]
        vecs = torch.stack([ex.residual(r, t) for t in part for r in range(rows)])
        logits = project(ex.trace, vecs, part[0], "own").reshape(len(part), rows, -1)
        top = logits.softmax(-1).topk(k, dim=-1)
        # each listed token's rank at the previous row: how many logits there beat it
        ranks = ranks_of(logits[:, :-1].reshape(len(part) * (rows - 1), -1),
                         top.indices[:, 1:].reshape(len(part) * (rows - 1), k)).reshape(len(part), rows - 1, k)
        for n, t in enumerate(part):
            ids = top.indices[n].numpy().astype(np.uint32)
            rank_prev = np.full((rows, k), -1, np.int32)
            rank_prev[1:] = ranks[n].numpy()
            strings = {str(i): tok.decode([int(i)], clean_up_tokenization_spaces=False) for i in np.unique(ids)}
            out[t] = protocol.check(protocol.LENS, {"rows": rows, "token": t, "ids": ids, "probs": top.values[n],
                                                    "rank_prev": rank_prev, "strings": strings}, "lens")
    return out


def lens_details(column: dict) -> dict:
    """The ``lens:<row>:<token>`` detail results of a whole column from :func:`lens_column` (one batched pass)."""
    from .codec import decode_array

    ids, probs, prev = (decode_array(column[k]) for k in ("ids", "probs", "rank_prev"))
    out = {}
    for row in range(column["rows"]):
        top = []
        for r in range(ids.shape[1]):
            change = 0 if prev[row, r] < 0 else int(prev[row, r]) - r
            top.append([column["strings"][str(int(ids[row, r]))], float(probs[row, r]), change])
        out[detail_key("lens", row, column["token"])] = {"top": top}
    return out


def _named_top(ex: Explanation, logits: torch.Tensor, k: int) -> tuple[list, list]:
    """Promoted and suppressed [[text, logit]] lists of each row of ``logits`` [n, V]."""
    up, down = logits.topk(k, dim=-1), logits.topk(k, dim=-1, largest=False)
    tok = ex.trace.lm.tokenizer

    def named(vals, ids):
        return [[tok.decode([i], clean_up_tokenization_spaces=False), v] for v, i in zip(vals.tolist(), ids.tolist())]

    return ([named(up.values[n], up.indices[n]) for n in range(logits.shape[0])],
            [named(down.values[n], down.indices[n]) for n in range(logits.shape[0])])


def head_outputs(ex: Explanation, heads: list[tuple[int, int, int]]) -> torch.Tensor:
    """``ex.head_output(layer, head, token)`` of many (layer, head, token) [N, d], one product per layer (thousands
    of single small products cost milliseconds each in thread overhead)."""
    # checked first, as ex.head_output checks them: a bad index from the browser gets its clear message
    heads = [(ex._layer(layer), ex._head(h), ex._token(token)) for layer, h, token in heads]
    d, H, dh = ex.trace.layers[0].resid_pre.shape[-1], ex.n_heads, ex.trace.head_dim
    out = torch.zeros(len(heads), d)
    by_layer: dict[int, list[int]] = {}
    for i, (layer, _, _) in enumerate(heads):
        by_layer.setdefault(layer, []).append(i)
    for layer, rows in by_layer.items():
        rec, w = ex.trace.layers[layer], ex.trace.weights[layer]
        hs = torch.tensor([heads[i][1] for i in rows])
        ts = torch.tensor([heads[i][2] for i in rows])
        w_o = w.w_o.reshape(d, H, dh)[:, hs]  # [d, n, dh]
        vec = torch.einsum("nk,dnk->nd", rec.head_signal[ts, hs], w_o)
        if w.attn_post_norm is not None:  # Explanation._post_scale at each token
            vec = vec * (rec.attn_post_rstd[ts].unsqueeze(-1) * w.attn_post_norm.weight)
        out[rows] = vec.to(out.dtype)
    return out


def head_details(ex: Explanation, heads: list[tuple[int, int]], token: int, k: int = TOP_K) -> list[dict]:
    """Details of many heads at one token, their vocabulary projections batched into one product."""
    vecs = head_outputs(ex, [(layer, h, token) for layer, h in heads])
    promoted, suppressed = _named_top(ex, project(ex.trace, vecs, token, "final"), k)
    out = []
    for n, (layer, h) in enumerate(heads):
        out.append(protocol.check(protocol.DETAIL_RESULTS["head"], {
            "promoted": promoted[n], "suppressed": suppressed[n],
            "importance": float(ex.scores.layers[layer].head_total[token, h]),
            "pattern": ex.head_attention(layer, h),  # one head: long prompts compute only that one
            "contribution": ex.head_contributions(layer, h),
        }, detail_key("head", layer, h, token)))
    return out


def mlp_details(ex: Explanation, blocks: list[tuple[int, int]], k: int = TOP_K) -> dict[str, dict]:
    """``mlp:<layer>:<token>`` details of many MLP blocks, projections batched per token."""
    out = {}
    by_token: dict[int, list[int]] = {}
    for layer, token in blocks:
        by_token.setdefault(token, []).append(layer)
    for token, layers in by_token.items():
        vecs = torch.stack([ex.mlp_output(layer, token) for layer in layers])
        promoted, suppressed = _named_top(ex, project(ex.trace, vecs, token, "final"), k)
        for n, layer in enumerate(layers):
            neurons = [[x.neuron, x.importance, x.activation] for x in ex.neurons(layer, token, k)]
            out[f"mlp:{layer}:{token}"] = {"promoted": promoted[n], "suppressed": suppressed[n], "neurons": neurons}
    return out


def _pairs(tokens):
    return [[t.text, t.score] for t in tokens]


# A key's numbers, strictly: int() and float() also take " 3", "1_0", "+3", "٣" (other scripts' digits) and
# "nan", so one result would answer under many keys (the browser matches replies by key).
_KEY_INT = re.compile(r"-?[0-9]{1,30}")  # (a sign and length kept: "-1" and huge numbers get the range error)
_KEY_NUMBER = re.compile(r"[0-9]{0,9}\.?[0-9]{1,20}(?:[eE]-?[0-9]{1,3})?")


def key_number(text: str, what: str) -> float:
    """A decimal number written in a key (a route check's τ), or an InputError naming ``what`` was expected."""
    if not _KEY_NUMBER.fullmatch(text):
        raise InputError(f"malformed {what} {text[:60]!r}: write the number in plain decimals, such as 0.04")
    return float(text)


def details(ex: Explanation, key: str) -> dict:
    """Compute one detail result (see the protocol's keys). Raises ValueError / SelectionError on bad keys."""
    shown = repr(key) if len(key) <= 60 else repr(key[:57]) + "..."
    kind, *parts = key.split(":")
    if not all(_KEY_INT.fullmatch(p) for p in parts):
        raise InputError(f"malformed details key {shown}: its fields are plain decimal integers, such as head:3:1:7")
    nums = [int(p) for p in parts]
    if len(nums) != len(DETAIL_KEYS.get(kind, ())):
        raise InputError(f"unknown details key {shown}; use one of "
                         + ", ".join(f"{k}:<{'>:<'.join(f)}>" for k, f in DETAIL_KEYS.items()))
    if kind == "lens":
        row, token = nums
        entries = ex.lens(row, token, TOP_K)
        return {"top": [[e.text, e.prob, e.rank_change or 0] for e in entries]}
    if kind == "head":
        layer, head, token = nums
        return head_details(ex, [(layer, head)], token)[0]
    if kind == "mlp":
        (result,) = mlp_details(ex, [(nums[0], nums[1])]).values()  # its key is canonical, `key` may not be
        return result
    if kind == "neuron":
        layer, neuron, token = nums
        proj = ex.neuron_tokens(layer, neuron, token)
        return {"promoted": _pairs(proj.promoted), "suppressed": _pairs(proj.suppressed)}
    raise InputError(f"unknown details key {shown}")


# ---- scoring methods (importance, logit attribution, causal effects) for the heatmap and the Check action

FOIL_CANDIDATES = 10


def number(v) -> float | None:
    """A JSON number, or None for NaN / ±inf (the kernel's strict JSON packer refuses them)."""
    return float(v) if v is not None and np.isfinite(v) else None


def scalars(extra: dict) -> dict:
    """The JSON-ready scalars of a table's ``extra`` (non-finite numbers as None)."""
    out = {}
    for k, v in extra.items():
        if isinstance(v, (str, bool)):
            out[k] = v
        elif isinstance(v, (int, float, np.integer, np.floating)):
            out[k] = number(v)
    return out


def metric_info(ex: Explanation, metric, settings, *, ready: bool) -> dict:
    """The ``metric`` trait: what the signed methods explain, the foil candidates and the causal setting."""
    preds = ex.predictions(settings.position, k=FOIL_CANDIDATES)
    out = {
        "position": settings.position,
        "candidates": [[p.token_id, p.text, p.score] for p in preds],
        "corrupted": settings.corrupted,
        "ablation": settings.ablation,
        "causal_ready": ready,
    }
    if metric is not None:
        out.update(metric.to_dict())
        out["units"] = "logits" if metric.foil is not None else "nats"
    return out


def method_scores(tables: dict, n_layers: int, n_heads: int) -> dict:
    """The ``method_scores`` trait: per method, its head matrix [L, H] and MLP vector [L] with what they mean."""
    out = {}
    for name, table in tables.items():
        mlp = torch.full((n_layers,), float("nan"))
        for c, v in zip(table.components, table.scores.tolist()):
            if c.kind == "mlp" and c.position is None:
                mlp[c.layer] = v
        out[name] = protocol.check(protocol.METHOD_SCORES, {
            "method": table.method, "quantity": table.quantity, "signed": bool(table.signed),
            "metric": table.metric.to_dict() if table.metric else None,
            "heads": table.head_matrix(n_layers, n_heads), "mlp": mlp,
            "extra": scalars(table.extra),
        }, f"method_scores[{name!r}]")
    return out


def _score_or_none(table, component) -> float | None:
    return None if table is None or component not in table else number(table[component])


def check_result(component, exact, tables: dict, settings) -> dict:
    """A ``check:<component>`` reply: the exact effect beside the approximations of the same component."""
    value = exact[component]
    metric = exact.metric
    per = exact.extra.get("patched")  # per-run metric values, in the table's component order
    patched = per[exact.components.index(component)] if per is not None and len(per) == len(exact) else None
    return {
        "component": component.id,
        "exact": number(value),
        "clean": number(exact.extra.get("clean")),
        "patched": number(patched),
        "approx": {name: _score_or_none(tables.get(name), component) for name in ("logit_attribution", "attribution_patching")},
        "quantity": exact.quantity,
        "metric": metric.to_dict() if metric else None,
        "units": "logits" if metric is not None and metric.foil is not None else "nats",
        "setting": settings.describe(),
    }


def route_check_result(result, tau: float, settings) -> dict:
    """A ``check:route:<tau>`` reply from a faithfulness result at one τ: the fraction of the metric the route keeps
    when every head and MLP output off it is ablated, with the metric clean, kept and fully ablated."""
    def first(v):
        return v[0] if isinstance(v, (list, tuple)) else v

    def num(name):
        v = first(getattr(result, name, None) if not isinstance(result, dict) else result.get(name))
        return number(v)

    return {"component": f"route at τ = {tau:g}", "route": True, "threshold": tau, "setting": settings.describe(),
            "fraction_kept": num("fraction"), "kept": num("kept"), "clean": num("clean"), "ablated": num("ablated"),
            "size": num("sizes")}


# ---- input attribution (the attribution pane)

def attribution(ex: Explanation, table, matrix, methods: list[str], *, options: dict, agreement: dict | None = None,
                words: dict | None = None) -> dict:
    """The ``attribution`` trait: per source token the chosen method's score for the target's prediction (NaN
    after the position), and the source x generated matrix when it was computed (``matrix_state``: "ready",
    "on_demand" (not computed yet: ask with a ``{"type": "attribution_matrix"}`` message) or "none")."""
    T = ex.n_tokens
    scores = np.full(T, np.nan, np.float32)
    for c, v in zip(table.components, table.scores.tolist()):
        scores[c.position] = v
    generated = ex.generated_positions
    out = {
        "method": table.method, "quantity": table.quantity, "signed": bool(table.signed),
        "position": int(table.extra.get("position", table.metric.position if table.metric else T - 1)),
        "metric": table.metric.to_dict() if table.metric else None,
        "units": "" if table.metric is None else ("logits" if table.metric.foil is not None else "nats"),
        "scores": scores, "extra": scalars(table.extra), "methods": list(methods),
        "options": {k: v for k, v in options.items() if isinstance(v, (str, int, float, bool))},
        "generated": list(generated), "n_prompt_tokens": ex.n_prompt_tokens,
        "matrix_state": "none" if not generated else ("on_demand" if matrix is None else "ready"),
        "matrix": None, "matrix_rows": [], "matrix_metric": "",
    }
    if matrix is not None:
        out["matrix"] = np.asarray(matrix.values)  # [generated, source], NaN: unreadable
        out["matrix_rows"] = [int(p) for p in matrix.index.get_level_values("position")]
        # flow methods read no metric: their row g is the flow into position g - 1 (generation.attribution_matrix)
        out["matrix_metric"] = ("flow into the position that predicted each token" if table.metric is None
                                else str(matrix.attrs.get("metric", "")))
    if agreement is not None:  # the Explorer's agreement table and word view (scoring.py builds them)
        out["agreement"] = protocol.check(protocol.ATTRIBUTION_AGREEMENT, agreement, "attribution.agreement")
    if words is not None:
        out["words"] = protocol.check(protocol.ATTRIBUTION_WORDS, words, "attribution.words")
    return protocol.check(protocol.ATTRIBUTION, out, "attribution")
