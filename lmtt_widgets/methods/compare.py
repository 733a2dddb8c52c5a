"""Do the signals agree? Rank agreement of flow importance, logit attribution and attribution patching with exact
activation patching, over the heads (whole prompt)."""

from __future__ import annotations

from .agreement import spearman, top_k_overlap


def head_scores(table, n_layers: int, n_heads: int):
    return table.head_matrix(n_layers, n_heads).flatten()


def agreement(ex, *, corrupted=None, ablation=None, target=None, foil=None, position=None, k: int = 10,
              exact: bool = True, tables: dict | None = None):
    """One row per signal: Spearman and top-k overlap of |score| against the reference (exact patching, or
    attribution patching with ``exact=False``). ``tables`` reuses tables already computed, by method name."""
    import pandas as pd

    from .. import checks

    k = checks.count(k, "k", what="how many top heads the overlap compares")
    exact = checks.flag(exact, "exact")
    tables = dict(tables or {})
    opts = dict(target=target, foil=foil, position=position)
    causal = dict(corrupted=corrupted, ablation=ablation)
    if "importance" not in tables:
        tables["importance"] = ex.score("importance", position=position)
    if "logit_attribution" not in tables:
        tables["logit_attribution"] = ex.score("logit_attribution", **opts)
    if "attribution_patching" not in tables:
        tables["attribution_patching"] = ex.score("attribution_patching", **opts, **causal)
    reference = "attribution_patching"
    if exact:
        reference = "activation_patching"
        if reference not in tables:
            heads = [f"L{l}.H{h}" for l in range(ex.n_layers) for h in range(ex.n_heads)]
            tables[reference] = ex.score(reference, components=heads, **opts, **causal)
    ref = head_scores(tables[reference], ex.n_layers, ex.n_heads)
    rows = []
    for name, table in tables.items():
        if name == reference:
            continue
        s = head_scores(table, ex.n_layers, ex.n_heads)
        rows.append({"signal": name, "quantity": table.quantity, "reference": reference,
                     "spearman": spearman(s, ref), f"top{k}_overlap_abs": top_k_overlap(s.abs(), ref.abs(), k)})
    return pd.DataFrame(rows)
