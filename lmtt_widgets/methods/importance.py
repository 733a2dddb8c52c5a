"""Information-flow importance (Ferrando & Voita 2024) as a table: each head's share of the attention update at the
target position. A flow share in [0, 1], never negative: it says where information came from, not what it did."""

from __future__ import annotations

import torch

from .base import Component, ScoreTable, register_method

QUANTITY = "flow share (importance in the attention update at the target token)"


@register_method("importance", quantity=QUANTITY, family="flow", cost="already paid by explain()")
def importance(ex, target=None, foil=None, position=None) -> ScoreTable:
    """Each head's importance at ``position`` (default: last token); target and foil do not change flow."""
    pos = ex._token(position)
    vals = torch.stack([ls.head_total[pos] for ls in ex.scores.layers])  # [L, H]
    comps = [Component("head", l, h) for l in range(vals.shape[0]) for h in range(vals.shape[1])]
    return ScoreTable("importance", QUANTITY, None, comps, vals.flatten().double(), False, {"position": pos})
