"""Validation of the shared selection, whether it comes from Python or from a click in the browser."""

from __future__ import annotations

from ..checks import is_integer, show as _show
from ..errors import SelectionError, SelectionTypeError
from .protocol import SELECTABLE_NODE_KINDS, SELECTION_FIELDS


def check_selection(sel, *, n_layers: int, n_tokens: int, n_heads: int, n_neurons: int) -> dict | None:
    """The selection normalised, or SelectionError saying what is wrong and what the valid ranges are."""
    if sel is None or sel == {}:
        return None
    if not isinstance(sel, dict):
        raise SelectionError(f"a selection is a dict or None, not {type(sel).__name__}")
    kind = sel.get("kind")
    if not isinstance(kind, str) or kind not in SELECTION_FIELDS:
        raise SelectionError(f"selection kind {_show(kind)} is unknown; use one of {', '.join(SELECTION_FIELDS)}")
    missing = [f for f in SELECTION_FIELDS[kind] if f not in sel]
    if missing:
        raise SelectionError(f"a {kind!r} selection needs {', '.join(SELECTION_FIELDS[kind])}; missing {', '.join(missing)}")
    out = {"kind": kind}
    ranges = {"token": n_tokens, "source": n_tokens, "head": n_heads, "neuron": n_neurons}
    for field in SELECTION_FIELDS[kind]:
        value = sel[field]
        if field == "node_kind":
            if not isinstance(value, str) or value not in SELECTABLE_NODE_KINDS:
                raise SelectionError(f"node_kind {_show(value)} is unknown; use one of {', '.join(SELECTABLE_NODE_KINDS)}")
            out[field] = value
            continue
        if isinstance(value, float) and value.is_integer():  # JSON numbers may arrive as 3.0 (never NaN or inf)
            value = int(value)
        if not is_integer(value):
            raise SelectionTypeError(f"{field} must be an integer, got {_show(value)}")
        value = int(value)
        low = -1 if field == "layer" and sel.get("node_kind") == "embedding" else 0
        high = n_layers if field == "layer" else ranges[field]
        if not low <= value < high:
            raise SelectionError(f"{field} {value} is out of range {low}..{high - 1}")
        out[field] = value
    if kind == "node" and out["node_kind"] == "embedding" and sel.get("last") is not None:
        out["last"] = _last_token(sel["last"], out["token"], n_tokens)
    if kind == "edge" and out["source"] > out["token"]:
        raise SelectionError(f"attention flows from earlier tokens only: source {out['source']} > token {out['token']}")
    return out


def _last_token(value, first: int, n_tokens: int) -> int:
    """An input word's last token (an embedding selection's optional ``last``: the word spans first..last)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not is_integer(value):
        raise SelectionTypeError(f"last must be an integer, got {_show(value)}")
    if not first <= int(value) < n_tokens:
        raise SelectionError(f"last {int(value)} is out of range {first}..{n_tokens - 1} (a word ends at or after "
                             "its first token)")
    return int(value)
