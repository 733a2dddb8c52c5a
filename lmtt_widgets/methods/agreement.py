"""Rank agreement between two score vectors over the same components (no SciPy needed)."""

from __future__ import annotations

import torch


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Average ranks (ties share the mean of their positions), 0-based, float64."""
    x = torch.as_tensor(x, dtype=torch.float64).flatten()
    order = x.argsort(stable=True)
    sorted_x = x[order]
    ranks = torch.empty_like(x)
    ranks[order] = torch.arange(x.numel(), dtype=torch.float64)
    # ties: every run of equal values gets the mean rank of the run
    uniq, inverse, counts = torch.unique_consecutive(sorted_x, return_inverse=True, return_counts=True)
    if len(uniq) < x.numel():
        mean_rank = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inverse, ranks[order]) / counts
        ranks[order] = mean_rank[inverse]
    return ranks


def spearman(a, b) -> float:
    """Spearman rank correlation of two equally long vectors (NaN entries in either are dropped)."""
    a = torch.as_tensor(a, dtype=torch.float64).flatten()
    b = torch.as_tensor(b, dtype=torch.float64).flatten()
    if a.shape != b.shape:
        raise ValueError(f"cannot correlate {a.numel()} scores with {b.numel()}")
    keep = a.isfinite() & b.isfinite()
    a, b = a[keep], b[keep]
    if a.numel() < 2:
        return float("nan")
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = (ra.norm() * rb.norm()).item()
    return float((ra @ rb).item() / denom) if denom > 0 else float("nan")


def top_k_overlap(a, b, k: int = 10) -> int:
    """How many of the k largest entries of ``a`` are among the k largest of ``b``."""
    a = torch.as_tensor(a, dtype=torch.float64).flatten().nan_to_num(float("-inf"))
    b = torch.as_tensor(b, dtype=torch.float64).flatten().nan_to_num(float("-inf"))
    k = min(int(k), a.numel())
    return len(set(a.topk(k).indices.tolist()) & set(b.topk(k).indices.tolist()))


def compared_as(a_signed: bool, b_signed: bool) -> str:
    """What two methods' scores are ranked by: "signed" when both are signed (a negative score ranks low), else
    "|score|" (an unsigned method, e.g. a flow share or a gradient norm, says how much, not which way)."""
    return "signed" if a_signed and b_signed else "|score|"


def pair_agreement(a, b, *, a_signed: bool, b_signed: bool, k: int) -> dict:
    """Spearman (signed when both are signed, else of |score|) and the overlap of the k largest |score| of two
    score vectors over the same components; NaN entries (unread) are dropped from the Spearman."""
    a = torch.as_tensor(a, dtype=torch.float64).flatten()
    b = torch.as_tensor(b, dtype=torch.float64).flatten()
    how = compared_as(a_signed, b_signed)
    rho = spearman(a, b) if how == "signed" else spearman(a.abs(), b.abs())
    k = min(int(k), a.numel())
    return {"spearman": rho, "compared": how, "top_k_overlap_abs": top_k_overlap(a.abs(), b.abs(), k), "k": k,
            "n": a.numel()}


def table_agreement(tables, *, k: int = 5):
    """Pairwise agreement of ScoreTables on the components they share: a DataFrame with one row per pair
    (method_a, method_b, spearman, compared, top_k_overlap_abs, k, n). Spearman is over the signed scores when both
    methods are signed, else over |score| (``compared`` says which); the overlap is of the k largest |score|."""
    import pandas as pd

    rows = []
    tables = list(tables)
    for i, ta in enumerate(tables):
        for tb in tables[i + 1:]:
            shared = [c for c in ta.components if c in tb]
            a = torch.tensor([ta[c] for c in shared], dtype=torch.float64)
            b = torch.tensor([tb[c] for c in shared], dtype=torch.float64)
            rows.append({"method_a": ta.method, "method_b": tb.method,
                         **pair_agreement(a, b, a_signed=bool(ta.signed), b_signed=bool(tb.signed), k=k)})
    return pd.DataFrame(rows)
